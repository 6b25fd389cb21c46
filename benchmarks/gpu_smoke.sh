#!/usr/bin/env bash
# GPU smoke test for the lent GPU image as it is (about 7 minutes on one H200):
#   1. adds only the missing packages (diffusers, kornia, kornia-rs and the few small ones
#      fetch_gpu_wheels.sh carries) from ./wheels into a --target folder on PYTHONPATH,
#      never over the image's own packages; silo-rt runs from this checkout (no install),
#   2. prints versions, ONNX Runtime's execution providers and torch's TF32 flags,
#   3. runs the GPU tests (pytest -m gpu),
#   4. benches `small` sr4 (torch-cuda vs torch-cuda-graph), then sd15-random sr8 at 512 px
#      for 20 steps.
# Each part has its own timeout; everything is teed to $OUT/smoke.log (default out/gpu).
# Usage: OUT=/tmp/gpu bash benchmarks/gpu_smoke.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/smoke.log") 2>&1
SITE="${TMPDIR:-/tmp}/silo-gpu-site"  # outside the checkout and outside $OUT
THREADS="$(nproc)"
deadline=$((SECONDS + 420))  # 7 minutes for everything
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[$(date +%T)] $*"; }
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

log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
mkdir -p "$SITE"
# module name -> wheel file prefix
for pair in diffusers:diffusers kornia:kornia kornia_rs:kornia_rs \
            importlib_metadata:importlib_metadata zipp:zipp click:click pytest:pytest \
            pluggy:pluggy iniconfig:iniconfig; do
  module="${pair%%:*}" wheel="${pair#*:}"
  if python3 -c "import $module" 2>/dev/null; then
    continue
  fi
  found=$(ls wheels/"$wheel"-*.whl 2>/dev/null | head -1)
  if [ -z "$found" ]; then
    log "missing $module and no wheel for it in ./wheels"
    continue
  fi
  log "installing $found into $SITE"
  run_for 60 python3 -m pip install --quiet --no-deps --no-index --target "$SITE" "$found" \
    || log "could not install $found"
done

run_for 45 python3 - <<'PY'
import importlib

for name in ("torch", "diffusers", "transformers", "kornia", "onnx", "onnxruntime",
             "tensorrt", "tensorrt_rtx", "cuda.bindings", "silo_rt"):
    try:
        module = importlib.import_module(name)
        print(f"  {name}: {getattr(module, '__version__', 'ok')}")
    except Exception as exc:  # report, do not stop: the log says what is missing
        print(f"  {name}: unavailable ({type(exc).__name__}: {str(exc)[:120]})")
import onnxruntime
import torch

print("  onnxruntime providers:", onnxruntime.get_available_providers())
print("  cuda:", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("  TF32 by default: matmul", torch.backends.cuda.matmul.allow_tf32,
      "cudnn", torch.backends.cudnn.allow_tf32, "(the parity runs turn both off)")
PY

log "GPU tests"
run_for 130 python3 -m pytest -m gpu -s -q -p no:cacheprovider tests/test_gpu.py
log "GPU tests exit code $?"

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
rm -rf "$OUT/engines"  # bundles are large; the numbers are what comes back
log "done"
