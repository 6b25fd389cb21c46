#!/usr/bin/env bash
# Degrade an image, train an SR×4 operator for 100 steps and restore, on the random-weight
# `tiny` prior (a pipeline check: the prior is untrained, so the picture is not meaningful).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/../out/quickstart}"
mkdir -p "$out/data"
python - "$out/data" <<'PY'
import sys
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
yy, xx = np.mgrid[0:96, 0:96] / 96
for i in range(8):
    f = rng.uniform(1, 4, size=(3, 2))
    img = np.stack([np.sin(2 * np.pi * f[c, 0] * xx + i) * np.cos(2 * np.pi * f[c, 1] * yy)
                    for c in range(3)], -1)
    Image.fromarray(((img + 1) * 127.5).astype(np.uint8)).save(f"{sys.argv[1]}/{i}.png")
PY
silo-rt degrade "$out/data/0.png" --task sr4 --size 64 --out "$out/y.png"
silo-rt train --arch cnn --task sr4 --data "$out/data" --model tiny --steps 100 \
  --batch-size 8 --lr 1e-3 --out "$out/sr4.safetensors"
silo-rt restore "$out/y.png" --task sr4 --model tiny --operator "$out/sr4.safetensors" \
  --out "$out/x.png"
echo "restored image: $out/x.png"
