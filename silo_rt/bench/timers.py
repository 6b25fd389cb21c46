"""One timer per kind of backend: each sets its backend up on the shared :class:`Workload`,
times what it can alone (per-graph latencies, GPU loops) and hands its step and restoration
to :class:`Timings` for the interleaved rounds the runner times afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..backends import BUNDLE_BACKENDS, runner_backend
from ..runtime import step_io
from .config import BenchConfig
from .timing import summarize, time_calls


@dataclass(frozen=True)
class Workload:
    """What every backend is timed on: one prior and operator, one set of inputs.

    ``step_inputs``: ``(z_t (1, C, h, w), timestep (1,), coefficients (5,), noise, w,
    eta (1,), context (1, L, D), sigma_y (1,))`` as torch tensors, the guided step's
    arguments; ``y``: the measurement, ``(1, 3, H/f, W/f)`` float32 in [-1, 1].
    """

    config: BenchConfig
    prior: object
    operator: object
    op_config: object
    image_size: int
    step: object  # silo_rt.step.GuidedStep(prior, operator)
    step_inputs: tuple
    y: np.ndarray
    rng: np.random.Generator

    @property
    def context(self):
        return self.step_inputs[6]

    @property
    def latent(self) -> tuple[int, ...]:
        return tuple(self.step_inputs[0].shape)


def restoration_entry(backend: str, steps: int, seconds: float) -> dict:
    """One ``restorations`` row of the result (schema in :mod:`.report`)."""
    return {"backend": backend, "steps": steps, "total_s": seconds,
            "per_step_ms": seconds / steps * 1e3}


@dataclass
class Timings:
    """What the timers produce.

    ``step_calls`` and ``restore_calls`` hold each CPU backend's zero-argument step and
    restoration, timed later in interleaved rounds; ``compiled`` the torch.compile
    backends' compile seconds and parity; ``export_s`` the bench bundle's export seconds
    (None when cached or given).
    """

    log: Callable[[str], None] = print
    measurements: list = field(default_factory=list)
    restorations: list = field(default_factory=list)
    step_calls: dict = field(default_factory=dict)
    restore_calls: dict = field(default_factory=dict)
    compiled: dict = field(default_factory=dict)
    export_s: float | None = None

    def record(self, backend: str, measure: str, stats: dict) -> None:
        self.measurements.append({"backend": backend, "measure": measure, **stats})
        self.log(f"  {backend:<6} {measure:<12} median {stats['median_ms']:9.2f} ms")

    def restored(self, backend: str, steps: int, seconds: float) -> None:
        self.restorations.append(restoration_entry(backend, steps, seconds))


Timer = Callable[[str, Workload, Timings], None]


def time_torch(backend: str, work: Workload, out: Timings) -> None:
    """PyTorch eager on the CPU: each graph, and the step and restoration (interleaved)."""
    import torch

    from ..export.graphs import UNetOperatorGraph
    from ..latents import LatentDecoder, MeasurementEncoder
    from ..sampler import SamplingOptions, restore

    config, inputs = work.config, work.step_inputs
    io = step_io
    graphs = {io.UNET_H: UNetOperatorGraph(work.step),
              io.VAE_ENCODER: MeasurementEncoder(work.prior, config.task, work.image_size),
              io.VAE_DECODER: LatentDecoder(work.prior)}
    feeds = {io.UNET_H: (inputs[0], inputs[1], inputs[2], work.context, inputs[7]),
             io.VAE_ENCODER: (torch.from_numpy(work.y), torch.zeros(work.latent)),
             io.VAE_DECODER: (inputs[0],)}
    for name, module in graphs.items():
        with torch.no_grad():
            out.record(backend, name, time_calls(lambda m=module, f=feeds[name]: m(*f),
                                                 config.warmup, config.reps))
    out.step_calls[backend] = lambda: work.step(*inputs)
    if config.restoration:
        options = SamplingOptions(config.task, steps=config.steps)
        y = torch.from_numpy(work.y)
        out.restore_calls[backend] = lambda: restore(work.prior, work.operator, y, options)


def time_torch_compile(backend: str, work: Workload, out: Timings) -> None:
    """Inductor's compiled guided step on the eager backend's inputs, timed interleaved."""
    import torch

    from ..sampler import SamplingOptions
    from .compiled import compile_step, compiled_restore

    config = work.config
    config.say("  compiling the guided step (Inductor; minutes on a CPU)")
    done = compile_step(work.step, work.step_inputs)
    config.say(f"  compiled in {done.compile_s:.1f} s (fullgraph={done.fullgraph}); "
               f"z_prev rel. err vs eager {done.rel_err:.1e}")
    out.step_calls[backend] = lambda: done.call(*work.step_inputs)
    if config.restoration:
        options = SamplingOptions(config.task, steps=config.steps)
        y = torch.from_numpy(work.y)
        compiled_restore(work.prior, config.task, y, options, done.call)  # warm-up
        out.restore_calls[backend] = (
            lambda: compiled_restore(work.prior, config.task, y, options, done.call))
    out.compiled[backend] = {"compile_s": done.compile_s, "fullgraph": done.fullgraph,
                             "rel_err_vs_torch": done.rel_err}


def time_torch_compile_cuda(backend: str, work: Workload, out: Timings) -> None:
    """The compiled step on the GPU with CUDA graphs (``mode="reduce-overhead"``), TF32 off.

    Per-step latency is a loop of ``reps`` calls with one synchronisation at the end, as for
    the other GPU backends; parity is against the eager step on the same GPU.
    """
    import torch

    from ..torch_cuda import exact_fp32, require_cuda
    from .compiled import compile_step

    device = require_cuda()
    modules = (work.prior.unet, work.operator)
    try:
        for module in modules:
            module.to(device)
        inputs = tuple(t.to(device) for t in work.step_inputs)
        with exact_fp32():
            done = compile_step(work.step, inputs, mode="reduce-overhead",
                                sync=torch.cuda.synchronize)
            n = work.config.reps

            def loop():
                for _ in range(n):
                    torch.compiler.cudagraph_mark_step_begin()
                    done.call(*inputs)
                torch.cuda.synchronize()

            samples = seconds_per_step(loop, n)  # warm-up records the CUDA graph
        out.record(backend, "step", summarize(samples))
    finally:
        _back_to_cpu(modules)  # also after a failure
    out.compiled[backend] = {"compile_s": done.compile_s, "fullgraph": done.fullgraph,
                             "rel_err_vs_torch": done.rel_err}


def time_torch_cuda(backend: str, work: Workload, out: Timings) -> None:
    """The PyTorch reference on the GPU, eager (``torch-cuda``) or replaying a CUDA graph
    (``torch-cuda-graph``)."""
    from ..torch_cuda import require_cuda

    device = require_cuda()
    prior = work.prior
    modules = (prior.unet, prior.vae, prior.text_encoder, work.operator)
    try:
        for module in modules:
            module.to(device)
        _time_cuda_loop(backend, work, out, device)
    finally:
        _back_to_cpu(modules)  # also after a failure


def _time_cuda_loop(backend: str, work: Workload, out: Timings, device) -> None:
    """Step latency (whole loop / steps, one sync at the end) and a full restoration."""
    import torch

    from ..sampler import SamplingOptions
    from ..step import GuidedStep
    from ..torch_cuda import CudaStepLoop, restore_cuda

    config = work.config
    use_graph = backend == "torch-cuda-graph"
    loop = CudaStepLoop(GuidedStep(work.prior, work.operator), use_graph)
    z, timestep, coefficients, noise, w, _, context, _ = (t.to(device)
                                                          for t in work.step_inputs)
    n = config.reps
    args = (np.repeat(timestep.cpu().numpy(), n),
            np.repeat(coefficients.cpu().numpy()[None], n, 0),
            np.repeat(noise.cpu().numpy()[None], n, 0), 0.5, 0.02)
    loop.run(z, w, context, *args)
    samples = []
    for _ in range(3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        loop.run(z, w, context, *args)
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) / n)
    out.record(backend, "step", summarize(samples))
    if config.restoration:
        options = SamplingOptions(config.task, steps=config.steps)
        torch.cuda.synchronize()
        start = time.perf_counter()
        restore_cuda(work.prior, work.operator, torch.from_numpy(work.y), options, use_graph)
        out.restored(backend, config.steps, time.perf_counter() - start)


def time_bundle(backend: str, work: Workload, out: Timings) -> None:
    """ort, openvino* or trt-*: export (or reuse) the bench bundle and time it."""
    from ..restorer import Restorer

    config = work.config
    runner_name, precision = runner_backend(backend)
    path, export_s = config.bundle_for(work.prior, work.operator, work.op_config,
                                       work.image_size,
                                       precision="fp16" if precision == "fp16" else "fp32")
    out.export_s = export_s or out.export_s
    if runner_name == "trt":
        restorer = Restorer.from_bundle(path, backend="trt", precision=precision,
                                        verify=False, log=config.say)
        try:
            _time_gpu_bundle(backend, restorer, work, out)
        finally:
            restorer.close()  # GPU memory back before the next backend
        return
    restorer = Restorer.from_bundle(path, backend=runner_name, precision=precision,
                                    threads=config.threads, verify=False)
    runner = restorer.runner
    for name in (step_io.UNET_H, step_io.VAE_ENCODER, step_io.VAE_DECODER):
        graph = runner.manifest.graphs.get(name)
        if graph is None:
            continue
        feeds = {key: feed(key, shape, work.rng) for key, shape in graph.inputs.items()}
        if name == step_io.VAE_ENCODER:
            feeds[step_io.MEASUREMENT] = work.y
        out.record(backend, name, time_calls(lambda n=name, f=feeds: runner.graphs.run(n, **f),
                                             config.warmup, config.reps))
    arrays = [t.numpy() for t in work.step_inputs]
    out.step_calls[backend] = runner.graphs.single_step(
        arrays[0], arrays[4], runner.context, arrays[1], arrays[2], arrays[3], 0.5, 0.02)
    if config.restoration and runner.steps == config.steps:
        eta = runner.manifest.eta  # the bundle's own η, so recorded times stay comparable
        restorer(work.y, eta=eta)  # warm-up: sessions and arenas
        out.restore_calls[backend] = lambda: restorer(work.y, eta=eta).image


def _time_gpu_bundle(backend: str, restorer, work: Workload, out: Timings) -> None:
    """Per-step latency (whole loop / steps, one sync at the end) and a full restoration."""
    config = work.config
    runner = restorer.runner
    z, timestep, coefficients, noise, w = (t.numpy() for t in work.step_inputs[:5])
    n = config.reps

    def loop():
        runner.graphs.run_steps(z, w, runner.context, np.repeat(timestep.astype(np.int64), n),
                                np.repeat(coefficients[None], n, 0),
                                np.repeat(noise[None], n, 0), 0.5, 0.02)

    out.record(backend, "step", summarize(seconds_per_step(loop, n)))  # warm-up: capture
    if config.restoration and runner.steps == config.steps:
        start = time.perf_counter()
        restorer(work.y, eta=runner.manifest.eta)
        out.restored(backend, config.steps, time.perf_counter() - start)


def seconds_per_step(loop, steps: int, rounds: int = 3) -> list[float]:
    """``loop()`` (``steps`` steps, one sync at its end) once to warm up, then ``rounds``
    times: the seconds per step of each."""
    loop()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        loop()
        samples.append((time.perf_counter() - start) / steps)
    return samples


def feed(name: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """A plausible value for graph input ``name`` of ``shape`` (bench timings)."""
    if name == step_io.TIMESTEP:
        return np.array([500.0], np.float32)
    if name == step_io.COEFFICIENTS:
        return np.array([1.2, -0.6, 0.1, 0.9, 0.05], np.float32)
    if name in (step_io.ETA, step_io.SIGMA_Y, step_io.CFG_SCALE):
        return np.array([0.5], np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def _back_to_cpu(modules) -> None:
    """Move ``modules`` back to the CPU and return torch's cached GPU blocks to the driver,
    so a later backend in this process (TensorRT's engines) has the memory (24-48 GB cards)."""
    import torch

    for module in modules:
        module.to("cpu")
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# The timer of each bench backend (silo_rt.backends names); the bundle backends share one.
TIMERS: dict[str, Timer] = {
    **{name: time_bundle for name in BUNDLE_BACKENDS},
    "torch": time_torch,
    "torch-compile": time_torch_compile,
    "torch-compile-cuda-graph": time_torch_compile_cuda,
    "torch-cuda": time_torch_cuda,
    "torch-cuda-graph": time_torch_cuda,
}
