#!/usr/bin/env bash
# A photograph at a size no bundle was exported for: the held-out coffee cup at the demo's
# scale 1/2 (300x200, never seen in training), degraded sr4 to 75x50 and restored by the
# embedded 64x64 demo bundle in 64 px tiles (100 steps; then again with --keep-measured,
# which takes what the measurement determines from it). Writes the files beside this script, and
# make.log with the commands' output.
#   silo-rt demo-data --out data && bash examples/any-size/make.sh data
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data="${1:-data}"
python - "$here/coffee.png" <<'PY'
import sys
from PIL import Image
from silo_rt.demo.data import heldout_photograph
Image.fromarray(heldout_photograph("coffee")).save(sys.argv[1])
PY
{
  silo-rt degrade "$here/coffee.png" --task sr4 --out "$here/coffee-sr4.png"
  silo-rt restore "$here/coffee-sr4.png" --backend ort --threads 2 --steps 100 \
    --out "$here/coffee-restored.png" --reference "$here/coffee.png" \
    --compare "$here/coffee-compare.png" 2>&1 | grep -v '%|'
  silo-rt restore "$here/coffee-sr4.png" --backend ort --threads 2 --steps 100 \
    --keep-measured --out "$here/coffee-restored-kept.png" --reference "$here/coffee.png" \
    --compare "$here/coffee-compare-kept.png" 2>&1 | grep -v '%|'
} > "$here/make.log" 2>&1
cat "$here/make.log"
