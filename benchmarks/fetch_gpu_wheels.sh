#!/usr/bin/env bash
# Download what benchmarks/gpu_smoke.sh installs on the lent GPU image, and nothing else, into
# ./wheels (git-ignored: a device call must carry it, e.g. `carry: ["wheels"]`).
#
# The image (python3 3.12 in its own venv) has torch (CUDA), transformers, huggingface-hub,
# safetensors, accelerate, onnx, onnxruntime (CPU), cuda-python, numpy, pillow, scikit-image;
# it lacks diffusers, kornia and kornia-rs. Its huggingface-hub and transformers versions are
# not known, so the pins below are the newest that import with both an old pair
# (transformers 5.0.0 + huggingface-hub 1.3.0) and a current one (benchmarks/gpu_rehearsal.sh
# checks both on a CPU):
#   - diffusers 0.42 imports huggingface_hub.errors.RevisionResolutionError (hub >= 1.32
#     only); 0.39.0 does not.
#   - every diffusers requires the `requests` distribution at import (transformers 5 and
#     huggingface-hub 1.x use httpx, so the image may lack it): requests and its four
#     dependencies are carried.
#   - pytest 8.3.5 needs neither pygments nor packaging >= 24 (pytest 9.2 needs both);
#     importlib-metadata is not carried (Python 3.12 has importlib.metadata; 10.x would
#     need lazy_importer).
# gpu_smoke.sh installs each only where `python3 -c "import <module>"` fails on the image.
# Run on a connected machine. PYVER: the image's Python (the rehearsal uses this machine's).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
DEST="${WHEELS:-wheels}"
PINS=(
  diffusers==0.39.0 kornia==0.9.0 kornia-rs==0.2.0
  requests==2.34.2 charset-normalizer==3.4.4 idna==3.11 urllib3==2.6.3 certifi==2026.5.20
  click==8.5.1 pytest==8.3.5 pluggy==1.6.0 iniconfig==2.3.0
)
mkdir -p "$DEST"
pip download --quiet --only-binary :all: --no-deps --python-version "$PYVER" \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  --platform manylinux_2_17_x86_64 -d "$DEST" "${PINS[@]}"
ls "$DEST"
du -sh "$DEST"
