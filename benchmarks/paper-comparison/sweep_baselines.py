"""Step sizes of the decoder-in-the-loop baselines on the demo prior, tuned on *training*
crops only (never the held-out ones the comparison reports).

    python benchmarks/paper-comparison/sweep_baselines.py --data DATA/train-subset \
        --steps 100 --out benchmarks/paper-comparison

For each task, ω (the measurement term's step) over a small grid for LDPS, then γ (the
gluing term) for GML-DPS and PSLD at the best ω; the mean PSNR picks. Writes sweep.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from silo_rt.baselines import BaselineWeights
from silo_rt.demo import demo_bundle
from silo_rt.demo.torch_prior import rebuild_demo
from silo_rt.evaluation import evaluate_bundle

OMEGAS = (0.1, 0.3, 1.0, 3.0)
GAMMAS = (0.01, 0.1)


def mean_psnr(task, method, reference, weights, data, steps):
    with tempfile.TemporaryDirectory() as out:
        report = evaluate_bundle(demo_bundle(task), data, Path(out), threads=2, steps=steps,
                                 methods=(method,), reference=reference,
                                 baseline_weights=weights)
    return report["mean"][method]["psnr"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = {}
    for task in ("sr4", "ip"):
        prior, operator, _ = rebuild_demo(task)
        reference = (prior, operator)
        omega = {w: mean_psnr(task, "ldps", reference, BaselineWeights(w, 0.0), args.data,
                              args.steps) for w in OMEGAS}
        best_omega = max(omega, key=omega.get)
        gamma = {m: {g: mean_psnr(task, m, reference, BaselineWeights(best_omega, g),
                                  args.data, args.steps) for g in GAMMAS}
                 for m in ("gml-dps", "psld")}
        results[task] = {"ldps_psnr_by_omega": omega, "best_omega": best_omega,
                         "psnr_by_gamma": gamma,
                         "best_gamma": {m: max(v, key=v.get) for m, v in gamma.items()}}
        print(task, json.dumps(results[task]), flush=True)
    (args.out / "sweep.json").write_text(json.dumps(
        {"steps": args.steps, "images": sorted(p.name for p in args.data.glob("*.png")),
         "results": results}, indent=1))


if __name__ == "__main__":
    main()
