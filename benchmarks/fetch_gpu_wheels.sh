#!/usr/bin/env bash
# Download what benchmarks/gpu_smoke.sh installs on the lent GPU image, and nothing else, into
# ./wheels (git-ignored). The image (python3 3.12 in its own venv) already has torch (CUDA),
# transformers, huggingface-hub, safetensors, accelerate, onnx, onnxruntime, cuda-python,
# numpy, pillow, scikit-image; it lacks diffusers, kornia and kornia-rs. The small pure-Python
# wheels after them are fetched in case the image lacks them too: gpu_smoke.sh installs each
# only when `python3 -c "import <module>"` fails there. Run on a connected machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
mkdir -p wheels
pip download --quiet --only-binary :all: --no-deps --python-version "$PYVER" \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -d wheels diffusers kornia kornia-rs importlib-metadata zipp click pytest pluggy iniconfig
ls wheels
du -sh wheels
