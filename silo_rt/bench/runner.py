"""Running the benchmark: one process, every requested backend on the same inputs."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..backends import GPU_BACKENDS
from ..degradations import get_degradation
from ..errors import SiloError, error_summary
from ..provenance import package_versions
from ..records import recorded_path
from ..runtime import step_io
from .config import BenchConfig
from .memory import memory_mib, reset_peak
from .report import SCHEMA, derive_ratios, gpu_precision
from .timers import TIMERS, Timings, Workload, restoration_entry
from .timing import (
    gpu_matmul_gflops,
    interleaved,
    machine_info,
    matmul_gflops,
    peak_rss_mib,
    time_calls,
)


def _step_flops(step, inputs) -> float:
    """FLOPs of one guided step (UNet + H_θ forward and the input gradient)."""
    from torch.utils.flop_counter import FlopCounterMode

    io = step_io
    kw = dict(zip(io.STEP_IO.input_names(), inputs))
    z = kw[io.Z_T].clone().requires_grad_()
    with FlopCounterMode(display=False) as counter:
        loss, _ = step.measurement_loss(z, kw[io.TIMESTEP], kw[io.COEFFICIENTS], kw[io.W],
                                        kw[io.CONTEXT], kw[io.SIGMA_Y])
        loss.backward()
    return float(counter.get_total_flops())


def _workload(config: BenchConfig) -> tuple[Workload, str]:
    """The prior, operator and inputs every backend is timed on, and the operator's label."""
    import torch

    from ..prior import load_prior
    from ..schedule import from_scheduler
    from ..step import GuidedStep

    bundle = config.given_manifest()
    torch.set_num_threads(config.threads)
    config.say(f"loading {config.model}")
    prior = load_prior(config.model)
    image_size = config.image_size or prior.default_image_size
    if bundle is not None and bundle.image_size != image_size:
        raise SiloError(f"bundle {config.bundle} restores {bundle.image_size}px images; the "
                        f"benchmark runs at {image_size}px (pass --size {bundle.image_size})")
    spec = get_degradation(config.task)
    spec.check_size(image_size)
    operator, op_config, operator_label = config.subject.operator(prior, image_size)
    rng = np.random.default_rng(0)
    latent = prior.latent_shape(image_size)
    side = image_size // spec.scale
    y = rng.uniform(-1, 1, (1, 3, side, side)).astype(np.float32)
    schedule = from_scheduler(prior.scheduler, 999)

    def normal():
        return torch.from_numpy(rng.standard_normal(latent, dtype=np.float32))

    z, noise, w = normal(), normal(), normal()  # drawn in this order: inputs as before
    step_inputs = (z, torch.tensor([float(schedule.timesteps[500])]),
                   torch.from_numpy(schedule.coefficients[500]), noise, w,
                   torch.tensor([0.5]), prior.encode_prompt(""), torch.tensor([0.02]))
    work = Workload(config, prior, operator, op_config, image_size, GuidedStep(prior, operator),
                    step_inputs, y, rng)
    return work, operator_label


def run_bench(config: BenchConfig) -> dict:
    """Run the benchmark; returns the JSON-ready result (schema in :mod:`.report`)."""
    config.validate()
    work, operator_label = _workload(config)
    out = Timings(log=config.say)
    memory = {}
    failed = {}  # backend -> one-line error; the other backends still run
    phases = {}  # backend -> RSS before it and its own peak (the process's peak is cumulative)
    for backend in config.backends:
        config.say(f"timing {backend}")
        before = memory_mib().get("rss")
        reset_peak()
        try:
            TIMERS[backend](backend, work, out)
        except Exception as exc:  # any failure of one backend is recorded, never fatal
            failed[backend] = error_summary(exc)
            config.say(f"  {backend} failed: {failed[backend]}")
        memory[backend] = peak_rss_mib()
        if before is not None:
            phases[backend] = {"rss_before": before, "peak": memory_mib()["hwm"]}

    for backend, stats in interleaved(out.step_calls, config.warmup, config.reps,
                                      failed=failed).items():
        stats.pop("output")
        out.record(backend, "step", stats)
    _time_restorations(config, out, failed)

    baselines = []
    for method in config.baselines:
        config.say(f"timing baseline {method}")
        baselines.append({"method": method, **_baseline_step(work, method)})

    result = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "versions": package_versions(("silo-rt", "torch", "diffusers", "onnx",
                                     "onnxruntime", "openvino")),
        "config": {**{k: (recorded_path(v) if isinstance(v, Path) else v)
                      for k, v in asdict(config).items() if k != "log"},
                   "image_size": work.image_size, "operator_label": operator_label,
                   "prior_random_weights": work.prior.is_random},
        "export_s": out.export_s,
        "measurements": out.measurements,
        "restorations": out.restorations,
        "baselines": baselines,
        "peak_rss_mib": memory,
        "floor": _floor(work, set(config.backends) - set(failed)),
        "failed": failed,
    }
    if out.compiled:
        result["compiled"] = out.compiled
    if phases:
        result["phase_rss_mib"] = phases
    derive_ratios(result)
    return result


def _time_restorations(config: BenchConfig, out: Timings, failed: dict) -> None:
    """The CPU backends' whole restorations, interleaved; each image compared to torch's."""
    config.say(f"timing {config.steps}-step restorations x{config.restore_reps}")
    calls = {b: call for b, call in out.restore_calls.items() if b not in failed}
    timed = interleaved(calls, 0, config.restore_reps, settle=False, failed=failed)
    images = {b: np.asarray(stats.pop("output"), np.float64) for b, stats in timed.items()}
    for backend, stats in timed.items():
        entry = {**restoration_entry(backend, config.steps, stats["median_ms"] / 1e3),
                 "reps": stats["reps"], "p90_s": stats["p90_ms"] / 1e3,
                 "samples_s": [ms / 1e3 for ms in stats["samples_ms"]]}
        if "torch" in images and backend != "torch":  # same seed: the images must agree
            ref = images["torch"]
            entry["rel_diff_vs_torch"] = float(np.linalg.norm(images[backend] - ref)
                                               / np.linalg.norm(ref))
        out.restorations.append(entry)


def _floor(work: Workload, ran: set[str]) -> dict:
    """The arithmetic floor: one step's FLOPs over the measured matmul rate (CPU, and each
    precision a GPU backend in ``ran`` used)."""
    flops = _step_flops(work.step, work.step_inputs)
    gflops = matmul_gflops(work.config.threads)
    floor = {"step_flops": flops, "matmul_gflops": gflops,
             "floor_step_ms": flops / (gflops * 1e9) * 1e3}
    for precision in sorted({gpu_precision(b) for b in ran & set(GPU_BACKENDS)}):
        gpu = gpu_matmul_gflops(precision)
        floor[f"gpu_matmul_gflops_{precision}"] = gpu
        floor[f"gpu_floor_step_ms_{precision}"] = flops / (gpu * 1e9) * 1e3
    return floor


def _baseline_step(work: Workload, method: str) -> dict:
    """One decoder-in-the-loop step of ``method`` on the SILO step's inputs."""
    import torch

    from ..baselines import BaselineWeights, DecoderGuidedStep

    config = work.config
    step = DecoderGuidedStep(work.prior, config.task, method, BaselineWeights())
    z, timestep, coefficients, noise = work.step_inputs[:4]
    y = torch.from_numpy(work.y)
    return time_calls(lambda: step(z, timestep, coefficients, noise, y, work.context),
                      min(config.warmup, 1), config.baseline_reps)
