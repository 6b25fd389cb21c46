#!/usr/bin/env bash
# GPU smoke test for the lent GPU image as it is (about 7 minutes on one H200). Stages, in
# order; SMOKE_STAGES (comma-separated) runs a subset (benchmarks/gpu_rehearsal.sh runs the
# first four on a CPU):
#   versions  every relevant version first (torch and its CUDA, the driver, cuda-python,
#             onnx/onnxruntime, huggingface-hub, transformers, diffusers, TensorRT), read from
#             package metadata, so nothing is imported yet,
#   install   only the missing packages (diffusers, kornia, kornia-rs, requests... as
#             fetch_gpu_wheels.sh pins them) from ./wheels into a --target folder on
#             PYTHONPATH, never over the image's own packages (`python3 -m pip install
#             --no-deps --no-index --target`; where the venv has no pip, as one made by uv,
#             the wheel is unpacked with `python3 -m zipfile -e`); silo-rt runs from this
#             checkout (no install),
#   imports   imports everything the GPU tests need and builds the tiny prior; the first
#             failure stops the run with one line `smoke: stopping: ...` (seconds, not minutes),
#   collect   `pytest -m gpu --collect-only`; a failure stops the run the same way,
#   tests     the GPU tests (pytest -m gpu),
#   bench     `small` sr4 (torch-cuda vs torch-cuda-graph), then sd15-random sr8 at 512 px
#             for 20 steps; where TensorRT is installed, polygraphy compares each engine
#             with ONNX Runtime (silo_rt.runtime.tensorrt.compare).
# Each part has its own timeout; everything is teed to $OUT/smoke.log (default out/gpu).
# Usage: OUT=/tmp/gpu bash benchmarks/gpu_smoke.sh   (the device call carries ./wheels)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"
STAGES="${SMOKE_STAGES:-versions,install,imports,collect,tests,bench}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/smoke.log") 2>&1
SITE="${SITE:-${TMPDIR:-/tmp}/silo-gpu-site}"  # outside the checkout and outside $OUT
WHEELS="${WHEELS:-wheels}"
THREADS="$(nproc)"
deadline=$((SECONDS + 420))  # 7 minutes for everything
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[$(date +%T)] $*"; }
want() { [[ ",$STAGES," == *",$1,"* ]]; }
stop() { log "smoke: stopping: $*"; exit 1; }
# run_for SECONDS CMD...: CMD under a timeout that never passes the overall deadline
run_for() {
  local want=$1 left=$((deadline - SECONDS))
  shift
  if [ "$left" -lt 15 ]; then
    log "out of time, skipped: $*"
    return 124
  fi
  timeout "$((want < left ? want : left))" "$@"
}

versions() {
  run_for 30 python3 - <<'PY'
import importlib.metadata as md
import platform
import shutil
import subprocess

print(f"  python {platform.python_version()} ({shutil.which('python3')})")
smi = shutil.which("nvidia-smi")
if smi:
    query = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version",
                            "--format=csv,noheader"], capture_output=True, text=True)
    print("  gpu, memory, driver:", query.stdout.strip() or query.stderr.strip())
else:
    print("  gpu: no nvidia-smi")
for name in ("torch", "triton", "cuda-bindings", "cuda-python", "numpy", "onnx",
             "onnxruntime", "onnxruntime-gpu", "huggingface-hub", "transformers", "diffusers",
             "accelerate", "safetensors", "kornia", "kornia-rs", "requests", "httpx",
             "tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt-rtx-cu13", "polygraphy",
             "pytest", "click"):
    try:
        print(f"  {name}: {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"  {name}: not installed")
try:
    import torch

    print(f"  torch CUDA build {torch.version.cuda}, cuda available "
          f"{torch.cuda.is_available()}"
          + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
except Exception as exc:  # the imports stage stops on it; here only report
    print(f"  torch: cannot import ({type(exc).__name__}: {str(exc)[:160]})")
PY
}

install_wheel() {  # $1: a wheel file; into $SITE, never over the image's packages
  if python3 -m pip --version >/dev/null 2>&1; then
    run_for 60 python3 -m pip install --quiet --no-deps --no-index --target "$SITE" "$1"
  else  # a venv made by uv has no pip; a wheel is a zip archive of the site-packages tree
    run_for 60 python3 -m zipfile -e "$1" "$SITE"
  fi
}

if want versions; then
  log "versions (the image's own, before anything is added)"
  versions
fi

if want install; then
  mkdir -p "$SITE"
  # module name -> wheel file prefix, as fetch_gpu_wheels.sh pins them
  for pair in diffusers:diffusers kornia:kornia kornia_rs:kornia_rs requests:requests \
              charset_normalizer:charset_normalizer idna:idna urllib3:urllib3 \
              certifi:certifi click:click pytest:pytest pluggy:pluggy iniconfig:iniconfig; do
    module="${pair%%:*}" wheel="${pair#*:}"
    if python3 -c "import $module" 2>/dev/null; then
      continue
    fi
    found=$(ls "$WHEELS"/"$wheel"-*.whl 2>/dev/null | head -1)
    if [ -z "$found" ]; then
      log "missing $module and no wheel for it in $WHEELS"
      continue
    fi
    log "installing $found into $SITE"
    install_wheel "$found" || log "could not install $found"
  done
  if want versions; then
    log "versions after the install"
    versions
  fi
fi

if want imports; then
  log "imports"
  run_for 90 python3 - <<'PY' || stop "the imports failed (see the line above)"
import importlib
import sys
import time

for name in ("numpy", "torch", "onnx", "onnxruntime", "huggingface_hub", "transformers",
             "requests", "diffusers", "kornia", "click", "pytest", "silo_rt", "silo_rt.prior",
             "silo_rt.sampler", "silo_rt.export", "silo_rt.runtime", "silo_rt.torch_cuda",
             "silo_rt.runtime.tensorrt.backend", "silo_rt.cli"):
    try:
        importlib.import_module(name)
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"smoke: stopping: import {name} failed: {type(exc).__name__}: {text}")
        sys.exit(1)
import onnxruntime

from silo_rt.prior import load_prior

start = time.perf_counter()
try:
    load_prior("tiny")
except Exception as exc:
    print(f"smoke: stopping: the tiny prior cannot be built: {type(exc).__name__}: {exc}")
    sys.exit(1)
print(f"  every import ok; tiny prior built in {time.perf_counter() - start:.1f} s")
print("  onnxruntime providers:", onnxruntime.get_available_providers())
PY
fi

if want collect; then
  log "collecting the GPU tests"
  run_for 120 python3 -m pytest -m gpu --collect-only -q -p no:cacheprovider tests/test_gpu.py \
    || stop "pytest -m gpu --collect-only failed (see above)"
fi

if want tests; then
  log "GPU tests"
  run_for 130 python3 -m pytest -m gpu -s -q -p no:cacheprovider tests/test_gpu.py
  log "GPU tests exit code $?"
fi

if want bench; then
  log "bench: small sr4, torch-cuda vs torch-cuda-graph"
  run_for 80 python3 -m silo_rt bench --model small --task sr4 \
    --backends torch-cuda,torch-cuda-graph --steps 20 --reps 10 --baselines none \
    --threads "$THREADS" \
    --cache "$OUT/engines" --json "$OUT/bench-small.json" --markdown "$OUT/bench-small.md"
  log "bench small exit code $?"

  log "bench: sd15-random sr8 512 px, 20 steps"
  run_for 200 python3 -m silo_rt bench --model sd15-random --task sr8 --size 512 \
    --backends torch-cuda,torch-cuda-graph --steps 20 --reps 5 --restore-reps 1 \
    --threads "$THREADS" \
    --baselines none --cache "$OUT/engines" \
    --json "$OUT/bench-sd15.json" --markdown "$OUT/bench-sd15.md"
  log "bench sd15-random exit code $?"

  log "TensorRT engines against ONNX Runtime (polygraphy), where TensorRT is installed"
  run_for 120 python3 -m silo_rt.runtime.tensorrt.compare --demo sr4 --json "$OUT/trt-compare.json"
  log "trt compare exit code $?"
  rm -rf "$OUT/engines"  # bundles are large; the numbers are what comes back
fi
log "done"
