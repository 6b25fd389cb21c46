"""Write benchmarks/paper-comparison/README.md from the evaluate reports (sr4.json, ip.json)
and the step-size sweep (sweep.json), beside the paper's Tables 2-3. The README's ReSample
section (issue #28) is printed by resample_table.py; "What this shows" is written by hand."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
NAMES = {"silo": "SILO (bundle, ONNX Runtime)", "silo-torch": "SILO (PyTorch)",
         "ldps": "LDPS", "gml-dps": "GML-DPS", "psld": "PSLD", "resample": "ReSample",
         "silo_keep_measured": "SILO + --keep-measured", "baseline": None}
# The paper's Tables 2-3 (FFHQ 512 px, SD-1.5, 999 steps, L40S): PSNR, LPIPS, seconds.
PAPER = {"sr4": {"SILO (SD)": (26.95, 0.200, 148), "PSLD": (28.23, 0.249, 390),
                 "GML-DPS": (29.34, 0.247, 389), "LDPS": (29.06, 0.281, 331)},
         "ip": {"SILO (SD)": (22.23, 0.151, 148), "PSLD": (20.58, 0.357, 390),
                "GML-DPS": (20.64, 0.356, 389), "LDPS": (20.58, 0.368, 331)}}


def table(report: dict) -> list[str]:
    rows = ["| method | PSNR dB | SSIM | sharpness | CPSNR dB | s / image |",
            "|---|---|---|---|---|---|"]
    for key in report["methods"]:
        m = report["mean"][key]
        name = NAMES.get(key) or report["baseline"]
        cpsnr = f"{m['cpsnr']:.2f}" if "cpsnr" in m else ""
        seconds = f"{m['seconds']:.2f}" if "seconds" in m else ""
        rows.append(f"| {name} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['sharpness']:.2f} | "
                    f"{cpsnr} | {seconds} |")
    return rows


def main(command: str) -> None:
    lines = ["# SILO vs LDPS, GML-DPS and PSLD on one prior (the embedded demo's)", "",
             f"Command (per task): `{command}`", ""]
    sweep = json.loads((HERE / "sweep.json").read_text())
    for task in ("sr4", "ip"):
        report = json.loads((HERE / f"{task}.json").read_text())
        weights = report["baseline_weights"]
        lines += [f"## {task}: {report['count']} held-out crops, {report['steps']} steps, "
                  f"seed {report['seed']}, σ_y {report['sigma_y']}, "
                  f"ω {weights['omega']}, γ {weights['gamma']}", ""]
        lines += table(report)
        lines += ["", f"Picture grid: `{task}-grid.png` (columns: measurement, "
                  f"{report['baseline']}, SILO, SILO + --keep-measured, SILO (PyTorch), "
                  "LDPS, GML-DPS, PSLD, ground truth).", "",
                  "The paper (FFHQ 512 px, SD-1.5, 999 steps, an L40S):", "",
                  "| method | PSNR dB | LPIPS | s / image |", "|---|---|---|---|"]
        lines += [f"| {name} | {p:.2f} | {lp:.3f} | {s} |"
                  for name, (p, lp, s) in PAPER[task].items()]
        result = sweep["results"][task]
        lines += ["", f"Step sizes, tuned on {len(sweep['images'])} training crops "
                  f"({', '.join(sweep['images'])}), {sweep['steps']} steps: LDPS PSNR by ω "
                  f"{_fmt(result['ldps_psnr_by_omega'])} → ω = {result['best_omega']}; "
                  f"by γ at that ω: GML-DPS {_fmt(result['psnr_by_gamma']['gml-dps'])}, "
                  f"PSLD {_fmt(result['psnr_by_gamma']['psld'])}.", ""]
    (HERE / "README.md").write_text("\n".join(lines) + "\n")


def _fmt(table: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:.2f}" for k, v in table.items()) + "}"


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "silo-rt evaluate ...")
