"""How cost grows with the work: step time and peak memory per backend over image sizes and
batch sizes, and the peak memory of a whole restoration.

Every point runs in a fresh process (:mod:`.scaling_worker`), so its peak RSS is its own
(the ONNX Runtime worker does not import torch).

Result schema ``silo-rt-bench-scaling/1``::

    schema, created, machine, versions   as in ``silo-rt-bench/1``
    config     {model, task, arch, backends, sizes, batches, reps, warmup, threads, steps}
    points     [{backend, size, batch, pixels (size² · batch), what ("step" | "restore"),
                 median_ms, per_image_ms, p90_ms, reps, peak_rss_mib, stages_mib,
                 compile_s?}]
               step: one fused guided step on a (batch, C, size/f, size/f) latent, the
               process's peak RSS after loading and ``warmup + reps`` steps;
               restore: one whole ``steps``-step restoration (median_ms = its time);
               stages_mib: [[label, rss, peak of that stage]], where the memory goes
    failed     {"backend size x batch": one-line error}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..backends import BUNDLE_BACKENDS, check_backends
from ..degradations import get_degradation
from ..errors import SiloError, error_summary
from ..provenance import package_versions
from ..records import recorded_path
from .subject import Subject
from .timing import machine_info

SCHEMA = "silo-rt-bench-scaling/1"


@dataclass
class ScalingConfig:
    """What to sweep (``silo-rt bench --sizes … --batches …``)."""

    model: str = "small"
    task: str = "sr4"
    arch: str = "cnn"
    backends: tuple[str, ...] = ("torch", "ort")
    sizes: tuple[int, ...] = (128, 256)
    batches: tuple[int, ...] = (1, 2)
    reps: int = 5
    warmup: int = 1
    threads: int = 2
    steps: int = 10  # of the restorations (``restore``) and of the exported bundles' schedule
    restore: bool = False  # also each backend's restoration peak (batch 1, each size)
    cache: Path = Path("engines")
    log: object = field(default=None, repr=False)

    def validate(self) -> None:
        get_degradation(self.task)
        check_backends(self.backends, "scaling")
        if not self.sizes or not self.batches:
            raise SiloError("--sizes and --batches need at least one value each")
        if min(self.batches) < 1 or min(self.reps, self.threads, self.steps) < 1:
            raise SiloError("batches, reps, threads and steps must be at least 1")


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """``"128,256"`` → ``(128, 256)``; a :class:`SiloError` naming ``option`` otherwise."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise SiloError(f"{option} takes positive integers separated by commas, got {text!r}")
    return values


def run_scaling(config: ScalingConfig) -> dict:
    """Sweep sizes × batches × backends (rounds in that order, backends adjacent); returns the
    JSON-ready result (schema above). Bundles for the bundle backends (``ort``,
    ``openvino``…) are exported first (cached)."""
    config.validate()
    for size in config.sizes:
        get_degradation(config.task).check_size(size)
    bundle_backends = set(config.backends) & set(BUNDLE_BACKENDS)
    bundles = _export_bundles(config) if bundle_backends else {}
    points, failed = [], bundles.pop("failed", {})
    jobs = [(b, s, n, "step") for s in config.sizes for n in config.batches
            for b in config.backends]
    if config.restore:
        jobs += [(b, s, 1, "restore") for s in config.sizes for b in config.backends]
    for backend, size, batch, what in jobs:
        key = f"{backend} {size}x{batch}" + (" restore" if what == "restore" else "")
        if backend in bundle_backends and (size, batch) not in bundles:
            continue  # its export failed, recorded under failed
        spec = {**{k: v for k, v in asdict(config).items()
                   if k in ("model", "task", "arch", "reps", "warmup", "threads", "steps")},
                "backend": backend, "size": size, "batch": batch, "what": what,
                "bundle": str(bundles[(size, batch)]) if backend in bundle_backends else ""}
        _say(config, f"scaling: {key}")
        try:
            point = _run_worker(spec)
        except RuntimeError as exc:
            failed[key] = str(exc)
            _say(config, f"  failed: {failed[key]}")
            continue
        points.append({"backend": backend, "size": size, "batch": batch,
                       "pixels": size * size * batch, "what": what, **point})
        _say(config, f"  {point['median_ms']:.1f} ms, peak RSS {point['peak_rss_mib']:.0f} MiB")
    return {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine_info(),
            "versions": package_versions(("silo-rt", "torch", "onnxruntime", "openvino")),
            "config": {k: (recorded_path(v) if isinstance(v, Path) else v)
                       for k, v in asdict(config).items() if k != "log"},
            "points": points, "failed": failed}


def _say(config, text):
    if config.log is not None:
        config.log(text)


def _export_bundles(config: ScalingConfig) -> dict:
    """``{(size, batch): bundle path}`` (exported or cached), and ``"failed"``: errors."""
    import torch

    from ..prior import load_prior

    torch.set_num_threads(config.threads)
    prior = load_prior(config.model)
    subject = Subject(config.model, config.task, config.arch, steps=config.steps,
                      cache=Path(config.cache))
    bundles, failed = {}, {}
    for size in config.sizes:
        operator, op_config, _ = subject.operator(prior, size)
        for batch in config.batches:
            try:
                bundles[size, batch] = subject.bundle(prior, operator, op_config, size, batch,
                                                      log=config.log)[0]
            except Exception as exc:  # one failed export skips its points only
                failed[f"ort {size}x{batch}"] = "export: " + error_summary(exc)
    bundles["failed"] = failed
    return bundles


def _run_worker(spec: dict) -> dict:
    """Run one point in a fresh interpreter (:mod:`.scaling_worker`); its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run([sys.executable, "-m", "silo_rt.bench.scaling_worker",
                           json.dumps(spec)], capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(tail[-1] if tail else f"worker exited {done.returncode}")
    return json.loads(lines[-1])


# ---- rendering ------------------------------------------------------------------------------

def render_scaling_markdown(result: dict) -> str:
    """A Markdown table of the points, then the machine line."""
    c, m = result["config"], result["machine"]
    lines = [f"### silo-rt bench scaling: {c['model']}, {c['arch']}/{c['task']}, "
             f"{c['threads']} threads", "",
             "| backend | size | batch | measure | median ms | ms / image | peak RSS MiB |",
             "|---|---|---|---|---|---|---|"]
    for p in result["points"]:
        lines.append(f"| {p['backend']} | {p['size']} | {p['batch']} | {p['what']} | "
                     f"{p['median_ms']:.1f} | {p['per_image_ms']:.1f} | "
                     f"{p['peak_rss_mib']:.0f} |")
    for key, error in result["failed"].items():
        lines.append(f"| {key} | | | failed | | | {error.replace('|', '/')} |")
    flags = " ".join(m.get("cpu_flags", []))
    lines += ["", f"- machine: {m.get('cpu_model', m['processor'])} ({flags}), "
              f"{m['cpus']} CPUs; " + ", ".join(f"{k} {v}" for k, v in
                                                 result["versions"].items())]
    return "\n".join(lines) + "\n"


def write_scaling_plot(result: dict, path: Path) -> None:
    """PNG, two log–log panels over pixels per step (size² × batch): step time per image,
    and peak RSS; one line per backend and batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..images import atomic_write

    steps = [p for p in result["points"] if p["what"] == "step"]
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    colors = {b: f"C{i}" for i, b in enumerate(sorted({p["backend"] for p in steps}))}
    styles = ("-", "--", ":", "-.")
    for (backend, batch), group in sorted(_groups(steps).items()):
        group.sort(key=lambda p: p["pixels"])
        style = dict(color=colors[backend], marker="o",
                     linestyle=styles[sorted({p["batch"] for p in steps}).index(batch) % 4],
                     label=f"{backend}, batch {batch}")
        ax_t.plot([p["size"] ** 2 for p in group], [p["per_image_ms"] for p in group], **style)
        ax_m.plot([p["pixels"] for p in group], [p["peak_rss_mib"] for p in group], **style)
    c = result["config"]
    for ax, label, xlabel in ((ax_t, "ms per image per step (median)", "pixels per image"),
                              (ax_m, "peak RSS (MiB)", "pixels per step (size² × batch)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle(f"silo-rt bench scaling: {c['model']}, {c['task']}, {c['threads']} threads",
                 fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def _groups(points):
    groups = {}
    for p in points:
        groups.setdefault((p["backend"], p["batch"]), []).append(p)
    return groups

