"""Posterior samples of the embedded demo on its held-out crops: the K-sample mean, the std map.

For sr4 and ip, every held-out crop: the measurement as `silo-rt evaluate` makes it (seeded by
the image's index, 8-bit quantised), 8 samples (`silo_rt.posterior.draw_samples`, seed 0:
sample 0 is `evaluate`'s restoration), then for K = 1, 2, 4, 8 the mean of the first K
samples, with and without `--keep-measured` (applied to each sample), against the baseline
(bicubic / biharmonic fill); and, per image, the Pearson correlation over pixels between the
8-sample std map and the absolute error of the 8-sample mean (both averaged over channels).

    silo-rt demo-data --out /tmp/demodata
    python benchmarks/demo-quality/measure_posterior.py --data /tmp/demodata/heldout \
        --steps 100 --threads 2 --out benchmarks/demo-quality

Writes OUT/posterior.json (every number), OUT/posterior.md (the table) and
OUT/posterior-grid.png (measurement, mean of 8, std map, |error| of the mean, truth).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from silo_rt.degradations import get_degradation, make_measurement
from silo_rt.demo import demo_bundle
from silo_rt.evaluation import image_metrics, quantise
from silo_rt.images import atomic_write, read_image, to_uint8
from silo_rt.posterior import draw_samples, heatmap, summarise
from silo_rt.runtime import BundleRunner

KS = (1, 2, 4, 8)
GRID_IMAGES = 3  # per task


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure_task(task: str, paths: list[Path], steps: int, threads: int, log) -> dict:
    runner = BundleRunner(demo_bundle(task), threads=threads)
    sigma_y, size, resizer = runner.manifest.sigma_y, runner.manifest.image_size, runner.resizer
    rows, grid = [], []
    for index, path in enumerate(paths):
        start = time.perf_counter()
        x = read_image(path)
        y = quantise(make_measurement(x, task, sigma_y, index, resizer))
        samples = draw_samples(runner, y, max(KS), seed=0, steps=steps)
        kept = np.stack([get_degradation(task, resizer).keep_measured(y, s) for s in samples])
        baseline = get_degradation(task).baseline(y, size)
        row = {"image": path.name, "baseline": image_metrics(baseline, x)}
        for name, drawn in (("silo", samples), ("silo_keep_measured", kept)):
            row[name] = {str(k): image_metrics(summarise(drawn[:k])[0], x) for k in KS}
            mean, std = summarise(drawn)
            error = np.abs(mean - x).mean(axis=1)
            row[f"{name}_std_error_correlation"] = pearson(std, error)
            row[f"{name}_mean_std"] = float(std.mean())
        if index < GRID_IMAGES:
            mean, std = summarise(samples)
            error = np.abs(mean - x).mean(axis=1)[0]
            top = float(max(std.max(), error.max()))  # one scale for both maps
            grid.append([y, mean, heatmap(std[0], top), heatmap(error, top), x])
        rows.append(row)
        log(f"{task} {index + 1}/{len(paths)} {path.name}: K=8 mean "
            f"{row['silo'][str(max(KS))]['psnr']:.2f} dB, corr(std, |err|) "
            f"{row['silo_std_error_correlation']:.2f} ({time.perf_counter() - start:.1f} s)")

    def mean_of(method, k, key):
        return float(np.mean([r[method][str(k)][key] for r in rows]))

    summary = {"baseline": get_degradation(task).baseline_name,
               "baseline_mean": {key: float(np.mean([r["baseline"][key] for r in rows]))
                                 for key in ("psnr", "ssim")}}
    for method in ("silo", "silo_keep_measured"):
        summary[method] = {str(k): {key: mean_of(method, k, key) for key in ("psnr", "ssim")}
                           for k in KS}
        values = [r[f"{method}_std_error_correlation"] for r in rows]
        summary[f"{method}_std_error_correlation"] = {
            "mean": float(np.nanmean(values)), "min": float(np.nanmin(values)),
            "max": float(np.nanmax(values)),
            "positive": int(np.sum(np.asarray(values) > 0))}
    return {"task": task, "count": len(rows), "sigma_y": sigma_y, "steps": steps,
            "summary": summary, "per_image": rows, "grid": grid}


def write_grid(path: Path, grids: list[list], scale: int = 3) -> None:
    from PIL import Image

    side = 64 * scale
    rows = [row for grid in grids for row in grid]
    canvas = Image.new("RGB", (5 * (side + 2), len(rows) * (side + 2)), "white")
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            pixels = picture if picture.dtype == np.uint8 else to_uint8(picture)
            tile = Image.fromarray(pixels).resize((side, side), Image.NEAREST)
            canvas.paste(tile, (c * (side + 2), r * (side + 2)))
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))


def markdown(results: list[dict], command: str, seconds: float) -> str:
    lines = [f"Command: `{command}`", "",
             f"CPU: {cpu_model()}; {seconds / 60:.1f} minutes in all.",
             f"{results[0]['count']} held-out crops per task, {results[0]['steps']} steps, "
             f"seed 0 (sample i seeded by `sample_seed(0, i)`), "
             f"σ_y = {results[0]['sigma_y']}.", "",
             "`posterior-grid.png`: the first three crops, sr4 then ip; columns: "
             "measurement, mean of 8 samples, std map, |error| of the mean (the two maps on one "
             "colour scale per row, black = 0), truth.", "",
             "PSNR (dB) / SSIM of the mean of K posterior samples:", "",
             "| task | method | " + " | ".join(f"K = {k}" for k in KS) + " |",
             "|---|---|" + "---|" * len(KS)]
    for result in results:
        s = result["summary"]
        for method, name in (("silo", "SILO"), ("silo_keep_measured", "SILO, --keep-measured")):
            cells = [f"{s[method][str(k)]['psnr']:.2f} / {s[method][str(k)]['ssim']:.3f}"
                     for k in KS]
            lines.append(f"| {result['task']} | {name} | " + " | ".join(cells) + " |")
        b = s["baseline_mean"]
        lines.append(f"| {result['task']} | {s['baseline']} | "
                     + " | ".join([f"{b['psnr']:.2f} / {b['ssim']:.3f}"] * len(KS)) + " |")
    lines += ["", "Pearson correlation over pixels, per image, between the 8-sample std map "
              "and the absolute error of the 8-sample mean (mean over images [min, max]; "
              "images with a positive correlation):", "",
              "| task | method | mean | min | max | positive |", "|---|---|---|---|---|---|"]
    for result in results:
        for method, name in (("silo", "SILO"), ("silo_keep_measured", "SILO, --keep-measured")):
            c = result["summary"][f"{method}_std_error_correlation"]
            lines.append(f"| {result['task']} | {name} | {c['mean']:.2f} | {c['min']:.2f} | "
                         f"{c['max']:.2f} | {c['positive']}/{result['count']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="held-out crops folder")
    parser.add_argument("--out", type=Path, required=True, help="existing output folder")
    parser.add_argument("--steps", type=int, default=None, help="default: the bundle's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N crops only")
    parser.add_argument("--tasks", default="sr4,ip")
    args = parser.parse_args()
    paths = sorted(p for p in args.data.iterdir() if p.suffix == ".png")[:args.limit]
    start = time.perf_counter()
    results = [measure_task(task, paths, args.steps, args.threads, print)
               for task in args.tasks.split(",")]
    seconds = time.perf_counter() - start
    command = ("python benchmarks/demo-quality/measure_posterior.py --data "
               f"DATA/heldout --steps {args.steps} --threads {args.threads} --out {args.out}"
               + (f" --limit {args.limit}" if args.limit else ""))
    grids = [r.pop("grid") for r in results]
    report = {"command": command, "cpu": cpu_model(), "seconds": seconds, "ks": list(KS),
              "results": results}
    text = json.dumps(report, indent=1)
    atomic_write(args.out / "posterior.json", lambda tmp: Path(tmp).write_text(text))
    table = markdown(results, command, seconds)
    atomic_write(args.out / "posterior.md", lambda tmp: Path(tmp).write_text(table))
    write_grid(args.out / "posterior-grid.png", grids)
    print(table)


if __name__ == "__main__":
    main()
