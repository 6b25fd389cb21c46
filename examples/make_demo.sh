#!/usr/bin/env bash
# Rebuild the embedded demo from scratch with the project's own commands (about 2 hours on
# 2 CPU cores). Every stage is resumable: re-run a train command with --resume after an
# interruption. Outputs go to $WORK (default ./demo-work); the bundles replace the ones in
# silo_rt/demo/bundles/, the example measurements the ones in examples/.
#   pip install torch==2.13.0 && pip install -e ".[dev]" && bash examples/make_demo.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${WORK:-$repo/demo-work}"
VAE_STEPS="${VAE_STEPS:-2000}" UNET_STEPS="${UNET_STEPS:-4000}" OP_STEPS="${OP_STEPS:-1000}"
SAMPLING_STEPS="${SAMPLING_STEPS:-500}"
mkdir -p "$WORK" && cd "$WORK"

# 1. Data: photographs from scikit-image's wheel; chelsea and coffee are held out.
[ -d data ] || silo-rt demo-data --out data

# 2. The prior: VAE (4x downsampling, 16x16x4 latents for 64x64 images), then the UNet.
silo-rt train-prior vae --data data/train --out silo-demo-prior --steps "$VAE_STEPS" \
  --batch-size 16 --lr 3e-4
silo-rt train-prior unet --data data/train --out silo-demo-prior --steps "$UNET_STEPS" \
  --batch-size 32 --lr 4e-4 --ema-decay 0.999

# 3. The operators H_theta (Eq. 20), CNN architecture.
for task in sr4 ip; do
  silo-rt train --arch cnn --task "$task" --data data/train --model silo-demo-prior \
    --steps "$OP_STEPS" --batch-size 16 --lr 1e-3 --out "$task.safetensors"
done

# 4. Bundles with half-precision weight storage, shipped in the package: the recipes
#    export/demo-<task>.toml, written into the package instead of engines/.
for task in sr4 ip; do
  silo-rt export --recipe "$repo/export/demo-$task.toml" --steps "$SAMPLING_STEPS" \
    --out "$repo/silo_rt/demo/bundles/$task"
done

# 5. The example measurements (a held-out crop of the cat) and the quality report.
cp data/heldout/chelsea_04.png "$repo/examples/cat.png"
silo-rt degrade "$repo/examples/cat.png" --task sr4 --out "$repo/examples/cat-sr4.png"
silo-rt degrade "$repo/examples/cat.png" --task ip --out "$repo/examples/cat-ip.png"
mkdir -p "$repo/benchmarks/demo-quality"
for task in sr4 ip; do
  silo-rt evaluate --task "$task" --data data/heldout --threads 2 \
    --out "$repo/benchmarks/demo-quality" | tee "$repo/benchmarks/demo-quality/$task.txt"
done
