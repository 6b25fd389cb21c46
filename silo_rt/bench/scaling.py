"""How cost grows with the work: step time and peak memory per backend over image sizes and
batch sizes, and the peak memory of a whole restoration.

Every point runs in a fresh process, so its peak RSS is its own (the ONNX Runtime worker
imports neither torch nor the bench). The worker is this file run as a script; the module
level imports only the standard library and numpy for that reason.

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
import statistics
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SCHEMA = "silo-rt-bench-scaling/1"


def memory_mib() -> dict:
    """``{"rss": now, "hwm": peak since start or the last :func:`reset_peak`}``, MiB (Linux
    ``/proc/self/status``; empty elsewhere)."""
    found = {}
    with suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key[2:].lower()] = int(value.split()[0]) / 1024  # kB
    return found


def reset_peak() -> bool:
    """Restart the peak RSS from the current RSS, so the next stage's peak is its own
    (Linux >= 4.0: ``5`` to ``/proc/self/clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class _Stages:
    """Per-stage (RSS, peak) in MiB; the process peak is the largest stage peak."""

    def __init__(self):
        self.rows, self.peak = [], 0.0

    def mark(self, label: str) -> None:
        now = memory_mib()
        if now:
            self.rows.append([label, round(now["rss"], 1), round(now["hwm"], 1)])
            self.peak = max(self.peak, now["hwm"])
        reset_peak()


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
        from ..backends import check_backends
        from ..degradations import get_degradation
        from ..errors import SiloError

        get_degradation(self.task)
        check_backends(self.backends, "scaling")
        if not self.sizes or not self.batches:
            raise SiloError("--sizes and --batches need at least one value each")
        if min(self.batches) < 1 or min(self.reps, self.threads, self.steps) < 1:
            raise SiloError("batches, reps, threads and steps must be at least 1")


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """``"128,256"`` → ``(128, 256)``; a :class:`SiloError` naming ``option`` otherwise."""
    from ..errors import SiloError

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
    from ..backends import BUNDLE_BACKENDS
    from ..degradations import get_degradation
    from ..provenance import package_versions
    from .timing import machine_info

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
            "config": {k: (str(v) if isinstance(v, Path) else v)
                       for k, v in asdict(config).items() if k != "log"},
            "points": points, "failed": failed}


def _say(config, text):
    if config.log is not None:
        config.log(text)


def _export_bundles(config: ScalingConfig) -> dict:
    """``{(size, batch): bundle path}`` (exported or cached), and ``"failed"``: errors."""
    import torch

    from ..prior import load_prior
    from .runner import BenchConfig, _bundle, _one_line, _operator

    torch.set_num_threads(config.threads)
    prior = load_prior(config.model)
    bundles, failed = {}, {}
    for size in config.sizes:
        bench = BenchConfig(model=config.model, task=config.task, arch=config.arch,
                            steps=config.steps, cache=config.cache, log=config.log)
        operator, op_config, _ = _operator(prior, bench, size)
        for batch in config.batches:
            try:
                bundles[size, batch] = _bundle(prior, operator, op_config, bench, size,
                                               batch)[0]
            except Exception as exc:  # one failed export skips its points only
                failed[f"ort {size}x{batch}"] = "export: " + _one_line(exc)
    bundles["failed"] = failed
    return bundles


def _run_worker(spec: dict) -> dict:
    """Run one point in a fresh interpreter (this file as a script); its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(tail[-1] if tail else f"worker exited {done.returncode}")
    return json.loads(lines[-1])


# ---- the worker (runs in its own process) ---------------------------------------------------

def _worker(spec: dict) -> dict:
    stages = _Stages()
    stages.mark("interpreter")
    if spec["bundle"]:
        call, extra = _bundle_point(spec, stages)
    else:
        call, extra = _torch_point(spec, stages)
    for _ in range(spec["warmup"] if spec["what"] == "step" else 1):
        call()
    stages.mark("warm-up")
    samples = []
    for _ in range(spec["reps"] if spec["what"] == "step" else 1):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    stages.mark(spec["what"])
    ordered = sorted(samples)
    median = statistics.median(ordered) * 1e3
    return {"median_ms": median, "per_image_ms": median / spec["batch"],
            "p90_ms": ordered[int(round(0.9 * (len(ordered) - 1)))] * 1e3,
            "reps": len(ordered), "samples_ms": [v * 1e3 for v in samples],
            "peak_rss_mib": stages.peak, "stages_mib": stages.rows, **extra}


def _bundle_point(spec, stages):
    """``ort``, ``openvino`` or ``openvino-bf16`` on the point's bundle."""
    from silo_rt.backends import runner_backend
    from silo_rt.runtime import BundleRunner

    backend, precision = runner_backend(spec["backend"])
    runner = BundleRunner(spec["bundle"], backend=backend, threads=spec["threads"],
                          precision=precision, verify=False)
    m = runner.manifest
    stages.mark("import + manifest")
    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, m.measurement_shape).astype(np.float32)
    if spec["what"] == "restore":
        return (lambda: runner.restore(y)), {}
    latent = m.latent_shape
    z, noise, w = (rng.standard_normal(latent).astype(np.float32) for _ in range(3))
    coefficients = np.array([1.2, -0.6, 0.1, 0.9, 0.05], np.float32)
    call = runner.graphs.single_step(z, w, runner.context, 500.0, coefficients, noise, 0.5,
                                     0.02)  # loads the step graph
    stages.mark("step session")
    return call, {}


def _torch_point(spec, stages):
    import torch

    from silo_rt.bench.runner import BenchConfig, _operator
    from silo_rt.prior import load_prior
    from silo_rt.sampler import SamplingOptions, batch_context, restore
    from silo_rt.step import GuidedStep

    torch.set_num_threads(spec["threads"])
    prior = load_prior(spec["model"])
    size, batch = spec["size"], spec["batch"]
    operator, _, _ = _operator(prior, BenchConfig(model=spec["model"], task=spec["task"],
                                                  arch=spec["arch"]), size)
    stages.mark("import + load")
    rng = np.random.default_rng(0)
    if spec["what"] == "restore":
        from silo_rt.degradations import get_degradation

        side = size // get_degradation(spec["task"]).scale
        y = torch.from_numpy(rng.uniform(-1, 1, (1, 3, side, side)).astype(np.float32))
        options = SamplingOptions(spec["task"], steps=spec["steps"])
        return (lambda: restore(prior, operator, y, options)), {}
    latent = prior.latent_shape(size, batch)

    def tensor():
        return torch.from_numpy(rng.standard_normal(latent, dtype=np.float32))

    inputs = (tensor(), torch.tensor([500.0]),
              torch.tensor([1.2, -0.6, 0.1, 0.9, 0.05]), tensor(), tensor(), torch.tensor([0.5]),
              batch_context(prior.encode_prompt(""), batch), torch.tensor([0.02]))
    step = GuidedStep(prior, operator)
    if spec["backend"] == "torch-compile":
        from silo_rt.bench.compiled import compile_step

        done = compile_step(step, inputs)
        stages.mark("compile")
        return (lambda: done.call(*inputs)), {"compile_s": done.compile_s}
    return (lambda: step(*inputs)), {}


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


if __name__ == "__main__":  # the worker: one point, its JSON on the last stdout line
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
