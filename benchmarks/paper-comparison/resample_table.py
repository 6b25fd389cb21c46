"""The ReSample section of benchmarks/paper-comparison/README.md, printed as markdown.

ReSample ran on the first N of the recorded crops (``resample/TASK.json``, with SILO through
PyTorch again for a same-run time); the other methods' rows are the recorded ``TASK.json``
rows of the same N crops (same prior, steps, seed, σ_y and measurements: the measurement of
crop ``i`` is seeded by ``i``, so the first N crops are measured exactly as before).

    python benchmarks/paper-comparison/resample_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
NAMES = {"silo": "SILO (bundle, ONNX Runtime)", "silo-torch": "SILO (PyTorch)",
         "ldps": "LDPS", "gml-dps": "GML-DPS", "psld": "PSLD", "resample": "ReSample"}
# The paper's Tables 2-3 and 13-14 (FFHQ 512 px, SD-1.5, 999 steps, an L40S; ReSample-SD is
# the authors' code with SD's denoiser and VAE, 500 DDIM steps): PSNR, CPSNR, seconds.
PAPER = {"sr4": {"SILO (SD)": (26.95, 30.23, 148), "ReSample": (24.62, 42.74, 1418),
                 "PSLD": (28.23, 38.76, 390), "GML-DPS": (29.34, 36.69, 389),
                 "LDPS": (29.06, 36.39, 331)},
         "ip": {"SILO (SD)": (22.23, 29.10, 148), "ReSample": (16.91, 36.11, 1418),
                "PSLD": (20.58, 30.04, 390), "GML-DPS": (20.64, 30.09, 389),
                "LDPS": (20.58, 29.81, 331)}}


def mean(rows, method, key):
    return float(np.mean([r[method][key] for r in rows]))


def section(task: str) -> list[str]:
    recorded = json.loads((HERE / f"{task}.json").read_text())
    new = json.loads((HERE / "resample" / f"{task}.json").read_text())
    n = new["count"]
    old_rows, new_rows = recorded["per_image"][:n], new["per_image"]
    assert [r["image"] for r in old_rows] == [r["image"] for r in new_rows]
    drift = max(abs(a["silo-torch"]["psnr"] - b["silo-torch"]["psnr"])
                for a, b in zip(old_rows, new_rows))
    crops = ", ".join(r["image"] for r in new_rows)
    which = (f"the {n} recorded crops" if n == recorded["count"]
             else f"the first {n} of the {recorded['count']} recorded crops")
    lines = [f"### {task}: {which} ({crops}), {new['steps']} steps", "",
             "| method | PSNR dB | SSIM | CPSNR dB | s / image | run |",
             "|---|---|---|---|---|---|"]
    for rows, methods, run in ((old_rows, ("silo", "silo-torch", "ldps", "gml-dps", "psld"),
                                "recorded"),
                               (new_rows, ("silo-torch", "resample"), "ReSample run")):
        lines += [f"| {NAMES[method]} | {mean(rows, method, 'psnr'):.2f} | "
                  f"{mean(rows, method, 'ssim'):.3f} | {mean(rows, method, 'cpsnr'):.2f} | "
                  f"{mean(rows, method, 'seconds'):.2f} | {run} |" for method in methods]
    r = new["mean"]["resample"]
    ratio = mean(new_rows, "resample", "seconds") / mean(new_rows, "silo-torch", "seconds")
    lines += ["", f"ReSample per image: {r['consistency_steps']:.0f} hard-consistency steps "
              f"(the final one included), {r['pixel_iterations']:.0f} pixel-space and "
              f"{r['latent_iterations']:.0f} latent-space AdamW iterations; "
              f"{ratio:.1f}× SILO (PyTorch)'s time in the same run. SILO (PyTorch) in the "
              f"ReSample run differs from the recorded one by at most {drift:.1e} dB PSNR "
              "per crop (same measurements and noise).", "",
              "Per crop, PSNR dB (ReSample / LDPS / SILO PyTorch): "
              + "; ".join(f"{b['image']} {b['resample']['psnr']:.2f} / "
                          f"{a['ldps']['psnr']:.2f} / {a['silo-torch']['psnr']:.2f}"
                          for a, b in zip(old_rows, new_rows)), "",
              "The paper (FFHQ 512 px, SD-1.5, 999 steps; ReSample 500 DDIM steps, an L40S):",
              "", "| method | PSNR dB | CPSNR dB | s / image |", "|---|---|---|---|"]
    lines += [f"| {name} | {p:.2f} | {c:.2f} | {s} |" for name, (p, c, s) in PAPER[task].items()]
    return lines + [""]


if __name__ == "__main__":
    for task in ("sr4", "ip"):
        if (HERE / "resample" / f"{task}.json").exists():
            print("\n".join(section(task)))
