"""Quality per step budget on the embedded demo: η tuned on training crops, then held-out.

    silo-rt demo-data --out data
    python benchmarks/steps/measure_steps.py tune --data data --out benchmarks/steps
    python benchmarks/steps/measure_steps.py heldout --data data --out benchmarks/steps
    python benchmarks/steps/measure_steps.py plot --out benchmarks/steps

``tune`` sweeps a fixed η grid (:data:`GRID_FACTORS`) on ``--images`` training crops per task,
sampler and step count (``silo_rt.tuning``, what ``silo-rt tune`` runs) and writes
``tuned.json``; ``heldout`` restores the 18 held-out crops with the tuned η (the rule's where
a count was not tuned) and writes ``heldout.json`` (PSNR, SSIM, CPSNR, seconds per image);
``timing`` times restorations per backend on a quiet machine (``timing.json``); ``plot``
draws PSNR against seconds and writes ``table.md``; ``ship`` writes the demo bundles'
``tuning.json`` from ``tuned.json``. The JSON files are rewritten after every unit, and a
rerun skips the units already in them, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from silo_rt.records import load_record, record_header, save_record

GRID_FACTORS = [0.125, 0.25, 0.5, 1.0, 2.0]
"""η tried in ``tune``: these multiples of the task's default η (0.5; 1.0 for ip). The first
units recorded (sr4 ddpm 10-50) used a wider grid, 1/64..4 times it; each unit records its
own grid."""
TASKS = ("sr4", "ip")
SAMPLERS = ("ddpm", "ddim")


def _header(args) -> dict:
    return {**record_header("benchmarks/steps/measure_steps.py", sys.argv[1:]),
            "threads": args.threads, "backend": args.backend}


def _runner(task: str, args):
    from silo_rt.demo import demo_bundle
    from silo_rt.runtime import BundleRunner

    return BundleRunner(demo_bundle(task), backend=args.backend, threads=args.threads)


def tune(args) -> None:
    from silo_rt.tuning import make_problem, training_images, tune_eta

    path = args.out / "tuned.json"
    data = load_record(path) or {**_header(args), "images": args.images, "units": {}}
    for task in args.tasks:
        runner = _runner(task, args)
        paths = training_images(args.data / "train", args.images)
        problem = make_problem(runner, paths, runner.manifest.sigma_y)
        for sampler in args.samplers:
            for steps in args.steps:
                key = f"{task}/{sampler}/{steps}"
                if key in data["units"]:
                    continue
                start = time.perf_counter()
                grid = [runner.degradation.eta * f for f in args.factors]
                entry = tune_eta(runner, problem, steps, sampler, grid)
                data["units"][key] = {"task": task, "sampler": sampler, "steps": steps,
                                      "eta": entry.eta, "psnr": entry.psnr,
                                      "grid": entry.grid, "images": entry.images,
                                      "seconds": time.perf_counter() - start}
                print(key, "best eta", entry.eta, f"{entry.psnr:.2f} dB",
                      [(e, round(p, 2)) for e, p in entry.grid], flush=True)
                save_record(path, data)
        runner.graphs.close()


def _eta(task: str, sampler: str, steps: int, tuned: dict, runner) -> tuple[float, str]:
    unit = tuned.get("units", {}).get(f"{task}/{sampler}/{steps}")
    if unit is not None:
        return unit["eta"], "tuned"
    choice = runner.eta_choice(None, steps, sampler)
    return choice.eta, choice.source


def heldout(args) -> None:
    from silo_rt.degradations import make_measurement
    from silo_rt.evaluation import consistency_psnr, quantise, ssim
    from silo_rt.images import psnr, read_image

    tuned = load_record(args.out / "tuned.json")
    path = args.out / "heldout.json"
    data = load_record(path) or {**_header(args), "units": {}}
    images = sorted((args.data / "heldout").glob("*.png"))[:args.limit]
    for task in args.tasks:
        runner = _runner(task, args)
        truths = [read_image(p) for p in images]
        ys = [quantise(make_measurement(x, task, runner.manifest.sigma_y, i, runner.resizer))
              for i, x in enumerate(truths)]
        for sampler in args.samplers:
            for steps in args.steps:
                key = f"{task}/{sampler}/{steps}"
                if key in data["units"]:
                    continue
                eta, source = _eta(task, sampler, steps, tuned, runner)
                rows = []
                for name, x, y in zip(images, truths, ys):
                    start = time.perf_counter()
                    restored = runner.restore(y, 0, eta, steps=steps, sampler=sampler)
                    seconds = time.perf_counter() - start
                    rows.append({"image": name.name, "psnr": psnr(restored, x),
                                 "ssim": ssim(restored, x), "seconds": seconds,
                                 "cpsnr": consistency_psnr(task, restored, y, runner.resizer)})
                mean = {k: float(np.mean([r[k] for r in rows]))
                        for k in ("psnr", "ssim", "cpsnr", "seconds")}
                data["units"][key] = {"task": task, "sampler": sampler, "steps": steps,
                                      "eta": eta, "eta_source": source, "count": len(rows),
                                      "mean": mean, "per_image": rows}
                print(key, f"eta {eta:g} ({source})",
                      {k: round(v, 3) for k, v in mean.items()}, flush=True)
                save_record(path, data)
        runner.graphs.close()


def timing(args) -> None:
    """Seconds per image by backend and step count on a quiet machine: the median of
    ``--limit`` (default 3) held-out restorations after one warm-up; η does not change the
    time. Writes ``timing.json``."""
    from silo_rt.degradations import make_measurement
    from silo_rt.evaluation import quantise
    from silo_rt.images import read_image

    path = args.out / "timing.json"
    data = load_record(path) or {**_header(args), "units": {}}
    images = sorted((args.data / "heldout").glob("*.png"))[:args.limit or 3]
    for backend in args.backends:
        for task in args.tasks:
            args.backend = backend
            runner = _runner(task, args)
            ys = [quantise(make_measurement(read_image(p), task, runner.manifest.sigma_y, i,
                                            runner.resizer)) for i, p in enumerate(images)]
            runner.restore(ys[0], 0, steps=5)  # warm-up
            for sampler in args.samplers:
                for steps in args.steps:
                    key = f"{backend}/{task}/{sampler}/{steps}"
                    if key in data["units"]:
                        continue
                    seconds = []
                    for y in ys:
                        start = time.perf_counter()
                        runner.restore(y, 0, steps=steps, sampler=sampler)
                        seconds.append(time.perf_counter() - start)
                    data["units"][key] = {"backend": runner.label, "task": task,
                                          "sampler": sampler, "steps": steps,
                                          "seconds": seconds,
                                          "median": float(np.median(seconds))}
                    print(key, f"{np.median(seconds):.3f} s", flush=True)
                    save_record(path, data)
            runner.graphs.close()


def _seconds(timed: dict, backend: str, task: str, sampler: str, steps: int):
    """The timed median for these settings; a DDIM count that was not timed takes the DDPM
    time of the same count (the same graph calls; timed at 50 steps, the two agree to 2 %)."""
    for rule in (sampler, "ddpm"):
        unit = timed.get(f"{backend}/{task}/{rule}/{steps}")
        if unit is not None:
            return unit["median"]
    return None


def plot(args) -> None:
    """PSNR (held-out, ONNX Runtime) against seconds per image: from ``timing.json`` for each
    timed backend (OpenVINO fp32 computes the same restorations: its step agrees with ONNX
    Runtime's to ~1e-7, benchmarks/README.md), else the held-out run's own seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_record(args.out / "heldout.json")["units"]
    timed = load_record(args.out / "timing.json").get("units", {})
    backends = sorted({key.split("/")[0] for key in timed}) or ["held-out run"]
    fig, axes = plt.subplots(1, len(TASKS), figsize=(6.5 * len(TASKS), 4.5))
    for ax, task in zip(axes, TASKS):
        for sampler, marker in zip(SAMPLERS, ("o", "s")):
            units = sorted((u for u in data.values()
                            if u["task"] == task and u["sampler"] == sampler),
                           key=lambda u: u["steps"])
            for backend, line in zip(backends, ("-", "--", ":")):
                points = [(_seconds(timed, backend, task, sampler, u["steps"]) if timed
                           else u["mean"]["seconds"], u) for u in units]
                points = [(x, u) for x, u in points if x is not None]
                if not points:
                    continue
                xs = [x for x, _ in points]
                ys = [u["mean"]["psnr"] for _, u in points]
                ax.plot(xs, ys, marker + line, label=f"{sampler}, {backend}")
                for x, y, (_, u) in zip(xs, ys, points) if backend == backends[0] else ():
                    ax.annotate(str(u["steps"]), (x, y), textcoords="offset points",
                                xytext=(3, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image (2 threads, this CPU)")
        ax.set_ylabel("PSNR dB, held-out crops")
        ax.set_title(f"demo {task}: PSNR against time (labels: steps)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "psnr-vs-seconds.png", dpi=110)
    (args.out / "table.md").write_text(table(data, timed))


def table(data: dict, timed: dict) -> str:
    """The markdown table of the held-out results (the gap to the 999-step DDPM result)."""
    lines = ["| task | sampler | steps | η (source) | PSNR dB | Δ vs 999 DDPM | SSIM | CPSNR dB "
             "| s/image ort | s/image openvino |", "|" + "---|" * 10]
    for task in TASKS:
        reference = data.get(f"{task}/ddpm/999")
        for sampler in SAMPLERS:
            for u in sorted((u for u in data.values()
                             if u["task"] == task and u["sampler"] == sampler),
                            key=lambda u: u["steps"]):
                m = u["mean"]
                gap = "" if reference is None else f"{m['psnr'] - reference['mean']['psnr']:+.2f}"
                secs = [_seconds(timed, b, task, sampler, u["steps"]) for b in ("ort", "openvino")]
                secs = ["" if v is None else f"{v:.3f}" for v in secs]
                lines.append(f"| {task} | {sampler} | {u['steps']} | {u['eta']:g} "
                             f"({u['eta_source']}) | {m['psnr']:.2f} | {gap} | {m['ssim']:.3f} "
                             f"| {m['cpsnr']:.2f} | {secs[0]} | {secs[1]} |")
    return "\n".join(lines) + "\n"


def ship(args) -> None:
    """Write each demo bundle's ``tuning.json`` from ``tuned.json`` (what ``silo-rt tune``
    would record), so the embedded demo uses the η tuned on its training crops."""
    from silo_rt.bundle_format import bundle_identity
    from silo_rt.demo import demo_bundle
    from silo_rt.step_budget import TuningEntry, TuningRecord

    units = load_record(args.out / "tuned.json")["units"].values()
    for task in args.tasks:
        bundle = demo_bundle(task)
        record = TuningRecord(bundle_identity(bundle), task)
        for u in units:
            if u["task"] == task:
                record = record.with_entry(TuningEntry(u["steps"], u["sampler"], u["eta"],
                                                       u["psnr"], u["images"], u["grid"]))
        record.save(bundle / "tuning.json")
        print(f"{task}: {len(record.entries)} entries", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["tune", "heldout", "timing", "plot", "ship"])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/steps"))
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS))
    parser.add_argument("--steps", nargs="+", type=int,
                        default=[10, 25, 50, 100, 250, 500, 999])
    parser.add_argument("--images", type=int, default=4, help="training crops for tune")
    parser.add_argument("--factors", nargs="+", type=float, default=GRID_FACTORS,
                        help="tune: η grid as multiples of the task's default η")
    parser.add_argument("--limit", type=int, default=None, help="held-out crops (all: 18)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--backends", nargs="+", default=["ort", "openvino"],
                        help="timing: the backends to time")
    args = parser.parse_args()
    {"tune": tune, "heldout": heldout, "timing": timing, "plot": plot,
     "ship": ship}[args.phase](args)


if __name__ == "__main__":
    main()
