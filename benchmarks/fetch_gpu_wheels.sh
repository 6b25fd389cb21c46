#!/usr/bin/env bash
# Download the pure-Python wheels gpu_check.sh installs on a GPU machine without internet
# (into ./wheels, git-ignored). PYVER is the GPU machine's Python (e.g. 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER="${PYVER:-3.12}"
mkdir -p wheels
pip download --quiet --only-binary :all: --no-deps --python-version "$PYVER" -d wheels \
  diffusers transformers tokenizers huggingface-hub hf-xet kornia kornia-rs accelerate \
  safetensors click tqdm onnxscript onnx-ir ml-dtypes cuda-python cuda-bindings \
  cuda-pathfinder
du -sh wheels
