"""How much a backend changes restoration quality: two `silo-rt evaluate` reports of the same
bundle, images, seed and steps (e.g. `--backend ort` and `--backend openvino --precision
bf16`), compared image by image.

    python benchmarks/psnr_change.py ort/sr4.json openvino-bf16/sr4.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

SAME = ("task", "bundle", "images", "count", "sigma_y", "seed", "steps")


def main(reference_path: str, other_path: str) -> None:
    reference, other = (json.loads(Path(p).read_text()) for p in (reference_path, other_path))
    differing = [k for k in SAME if reference[k] != other[k]]
    if differing:
        raise SystemExit(f"the reports differ in {', '.join(differing)}")
    print(f"{reference['task']}, {reference['count']} images, {reference['steps']} steps: "
          f"{other['backend']} against {reference['backend']}")
    for method in ("silo", "silo_keep_measured"):
        pairs = [(a[method]["psnr"], b[method]["psnr"])
                 for a, b in zip(reference["per_image"], other["per_image"], strict=True)]
        change = [b - a for a, b in pairs]
        print(f"  {method}: PSNR {statistics.mean(a for a, _ in pairs):.3f} -> "
              f"{statistics.mean(b for _, b in pairs):.3f} dB (mean change "
              f"{statistics.mean(change):+.3f}, largest per image {max(change, key=abs):+.3f})"
              f"; s/image {reference['mean']['silo']['seconds']:.2f} -> "
              f"{other['mean']['silo']['seconds']:.2f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
