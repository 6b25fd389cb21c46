#!/usr/bin/env bash
# One GPU check, meant to finish in under 8 minutes on a fresh NVIDIA machine:
#   1. install silo-rt's pure-Python dependencies from wheels carried in ./wheels (made on a
#      connected machine by benchmarks/fetch_gpu_wheels.sh; torch with CUDA must be there),
#   2. run the GPU tests (pytest -m gpu),
#   3. run the GPU bench on sd15-random (SR x8, 512x512, CFG off, 999 steps),
# writing gpu_tests.txt, bench.json, bench.md and a summary to $OUT (default: out/gpu).
# Usage: OUT=/tmp/gpu bash benchmarks/gpu_check.sh [--quick]   (--quick: 50 steps)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-out/gpu}"
mkdir -p "$OUT"
steps=999
[ "${1:-}" = "--quick" ] && steps=50
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/summary.txt"; }

log "machine: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
if [ -d wheels ]; then
  pip install --quiet --no-index --find-links wheels --no-deps wheels/*.whl \
    >"$OUT/install.log" 2>&1 || log "some carried wheels failed to install (see install.log)"
fi
pip install --quiet --no-deps --no-build-isolation -e . >>"$OUT/install.log" 2>&1 \
  || log "editable install failed (see install.log)"
python - <<'PY' 2>&1 | tee -a "$OUT/summary.txt"
import importlib
for name in ("torch", "diffusers", "transformers", "onnx", "onnxruntime", "tensorrt",
             "tensorrt_rtx", "cuda.bindings"):
    try:
        module = importlib.import_module(name)
        print(f"  {name}: {getattr(module, '__version__', 'ok')}")
    except Exception as exc:  # report, do not stop: the check says what is missing
        print(f"  {name}: unavailable ({type(exc).__name__}: {str(exc)[:120]})")
import torch
print("  cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY

log "GPU tests"
timeout 240 python -m pytest -m gpu -s -q -p no:cacheprovider tests/test_gpu.py \
  >"$OUT/gpu_tests.txt" 2>&1
log "GPU tests exit code $? (tail below)"
tail -5 "$OUT/gpu_tests.txt" | tee -a "$OUT/summary.txt"

backends="torch-cuda,torch-cuda-graph"
python -c "from silo_rt.runtime.restore import tensorrt_available as t; import sys; sys.exit(0 if t() else 1)" \
  && backends="$backends,trt-fp16,trt-fp32"
log "bench on sd15-random, backends $backends, $steps steps"
timeout 420 silo-rt bench --model sd15-random --task sr8 --size 512 --backends "$backends" \
  --steps "$steps" --reps 10 --baselines ldps,psld --baseline-reps 3 --cache "$OUT/engines" \
  --json "$OUT/bench.json" --markdown "$OUT/bench.md" >"$OUT/bench.txt" 2>"$OUT/bench.log"
log "bench exit code $?"
cat "$OUT/bench.txt" | tee -a "$OUT/summary.txt"
rm -rf "$OUT/engines"  # bundles are large; the numbers are what comes back
