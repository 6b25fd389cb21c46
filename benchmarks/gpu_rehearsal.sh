#!/usr/bin/env bash
# Rehearse benchmarks/gpu_smoke.sh on a CPU before a GPU call is spent on it.
#
# Builds a throwaway venv holding only what the lent GPU image is known to have
# (../shared/reference/export-and-gpu-facts.md: torch, onnx, onnxruntime (CPU), transformers,
# huggingface-hub, accelerate, safetensors, scikit-image, cuda-python, numpy, pillow), CPU
# builds standing in for the CUDA ones and no pip in the venv (as a venv made by uv), then
# fetches the wheels fetch_gpu_wheels.sh pins (for this Python) and runs gpu_smoke.sh's
# versions, install, imports and collect stages there, with the wheels installed the way the
# smoke run installs them. The image's huggingface-hub and transformers versions are not
# known, so it rehearses each pair in REHEARSAL_PAIRS (transformers:huggingface-hub; `latest`
# = what pip resolves today), each with a fresh install folder.
#
# Differences from the image, by necessity: Python 3.11 (the local CPU torch 2.13.0 wheel;
# the image has 3.12 and torch 2.11 cu130), no triton or cupy (not imported by silo-rt), and
# `requests` removed if the base packages pulled it in (the image may lack it).
# Needs PyPI. About 2-4 minutes. Usage: bash benchmarks/gpu_rehearsal.sh [WORKDIR]
# Exit status 0 when every pair passes every stage; its log is WORKDIR/rehearsal.log.
set -uo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-$(mktemp -d "${TMPDIR:-/tmp}/silo-gpu-rehearsal.XXXXXX")}"
PY="${REHEARSAL_PYTHON:-python3.11}"
PAIRS="${REHEARSAL_PAIRS:-5.0.0:1.3.0 latest:latest}"
BASE=(torch==2.13.0 numpy pillow "onnx==1.23.*" "onnxruntime==1.30.*" accelerate safetensors
      scikit-image cuda-python tqdm)
mkdir -p "$WORK"
exec > >(tee -a "$WORK/rehearsal.log") 2>&1
log() { echo "[rehearsal $(date +%T)] $*"; }
VENV="$WORK/venv"
VPY="$VENV/bin/python"
pipv() { python3 -m pip --python "$VPY" --disable-pip-version-check "$@"; }

log "venv without pip ($PY) in $VENV"
"$PY" -m venv --without-pip "$VENV" || { log "FAILED: cannot create the venv"; exit 1; }
PYVER="$("$VPY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
log "wheels for Python $PYVER (fetch_gpu_wheels.sh)"
PYVER="$PYVER" WHEELS="$WORK/wheels" bash benchmarks/fetch_gpu_wheels.sh >/dev/null \
  || { log "FAILED: fetch_gpu_wheels.sh"; exit 1; }
ls "$WORK/wheels"

failed=()
for pair in $PAIRS; do
  transformers="${pair%%:*}" hub="${pair#*:}"
  spec_t=transformers spec_h=huggingface-hub
  [ "$transformers" != latest ] && spec_t="transformers==$transformers"
  [ "$hub" != latest ] && spec_h="huggingface-hub==$hub"
  log "pair $pair: installing the image's stand-in packages"
  # --upgrade: `latest` must move an older pair's versions forward, not keep them
  if ! pipv install --quiet --upgrade "${BASE[@]}" "$spec_t" "$spec_h"; then
    log "FAILED: pair $pair: the base packages do not install"
    failed+=("$pair")
    continue
  fi
  for absent in requests pytest diffusers kornia; do  # what the image is not known to have
    if "$VPY" -c "import $absent" 2>/dev/null; then
      log "removing $absent (pulled in by the base packages; the image may lack it)"
      pipv uninstall --quiet -y "$absent"
    fi
  done
  if "$VPY" -m pip --version >/dev/null 2>&1; then
    log "FAILED: the venv has pip; the rehearsal needs the uv-like case"
    exit 1
  fi
  log "pair $pair: $("$VPY" -c 'import importlib.metadata as m; print("transformers",
    m.version("transformers"), "huggingface-hub", m.version("huggingface-hub"))')"
  site="$WORK/site-$transformers-$hub"
  rm -rf "$site"
  log "pair $pair: gpu_smoke.sh stages versions,install,imports,collect"
  if env -u PYTHONPATH PATH="$VENV/bin:$PATH" SMOKE_STAGES=versions,install,imports,collect \
      OUT="$WORK/out-$transformers-$hub" SITE="$site" WHEELS="$WORK/wheels" \
      bash benchmarks/gpu_smoke.sh; then
    log "PASSED: pair $pair"
  else
    log "FAILED: pair $pair"
    failed+=("$pair")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  log "rehearsal failed for: ${failed[*]}"
  exit 1
fi
log "rehearsal passed for: $PAIRS"
