"""Running the benchmark: one process, every requested backend on the same inputs."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..backends import GPU_BACKENDS, check_backends, runner_backend
from ..degradations import get_degradation
from ..errors import SiloError
from ..provenance import package_versions
from .report import SCHEMA
from .scaling import memory_mib, reset_peak
from .timing import (
    gpu_matmul_gflops,
    machine_info,
    matmul_gflops,
    peak_rss_mib,
    summarize,
    time_calls,
)

BASELINE_METHODS = ("ldps", "gml-dps", "psld")


@dataclass
class BenchConfig:
    """What to benchmark (see ``silo-rt bench --help``)."""

    model: str = "small"
    task: str = "sr4"
    arch: str = "cnn"
    operator: Path | None = None
    bundle: Path | None = None
    image_size: int | None = None
    backends: tuple[str, ...] = ("torch", "ort")
    steps: int = 20
    reps: int = 10
    warmup: int = 2
    threads: int = 2
    baselines: tuple[str, ...] = ("ldps", "psld")
    baseline_reps: int = 3
    restoration: bool = True
    restore_reps: int = 3
    cache: Path = Path("engines")
    log: object = field(default=None, repr=False)  # callable(str) for progress lines

    def validate(self) -> None:
        get_degradation(self.task)
        check_backends(self.backends, "bench")
        unknown = set(self.baselines) - set(BASELINE_METHODS)
        if unknown:
            raise SiloError(f"unknown baseline(s) {sorted(unknown)}; choose from "
                            f"{', '.join(BASELINE_METHODS)}")
        for name in ("steps", "reps", "threads", "baseline_reps", "restore_reps"):
            if getattr(self, name) < 1:
                raise SiloError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup < 0:
            raise SiloError("--warmup must be >= 0")


def _say(config, text):
    if config.log is not None:
        config.log(text)


def _operator(prior, config: BenchConfig, image_size: int):
    from ..operators import OperatorConfig, build_operator, load_operator

    if config.operator is not None:
        op, op_config = load_operator(config.operator, prior, config.task, config.arch,
                                      image_size)
        return op, op_config, str(config.operator)
    import torch

    op_config = OperatorConfig.for_prior(prior, config.arch, config.task, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        op = build_operator(op_config).eval().requires_grad_(False)
    return op, op_config, f"random-init {config.arch} operator (benchmark only)"


def _given_bundle(config: BenchConfig):
    """The ``--bundle``'s checked manifest (None without one); refuses another task's."""
    from ..bundle_format import load_manifest

    if config.bundle is None:
        return None
    manifest = load_manifest(config.bundle, verify=False)
    if manifest.task != config.task:
        raise SiloError(f"bundle {config.bundle} is for task {manifest.task!r}, not "
                        f"--task {config.task!r}")
    return manifest


def _bundle(prior, operator, op_config, config: BenchConfig, image_size: int, batch: int = 1,
            precision: str = "fp32"):
    """The bundle to time: the given one, or one exported (and cached) for this config.

    ``precision`` ``fp16`` exports (and names the cached bundle) with ``--precision fp16``,
    whose ``step_fp16`` graph ``trt-fp16`` builds; the other backends use fp32 bundles.
    """
    from ..bundle_format import load_manifest
    from ..export import ExportOptions, export_bundle
    from ..sampler import SamplingOptions

    if config.bundle is not None:
        return Path(config.bundle), None
    name = f"bench-{config.model}-{config.arch}-{config.task}-{image_size}px-{config.steps}st"
    name += f"-b{batch}" if batch > 1 else ""
    name += f"-{precision}" if precision != "fp32" else ""
    path = Path(config.cache) / name
    if path.exists():
        try:
            m = load_manifest(path, verify=False)
            if (m.prior.get("fingerprint") == prior.fingerprint() and
                    m.operator == json.loads(op_config.to_json()) and
                    (precision == "fp32" or "step_fp16" in m.graphs)):
                return path, None
        except SiloError:
            pass
    Path(config.cache).mkdir(parents=True, exist_ok=True)
    _say(config, f"exporting {name} (cached for later runs)")
    start = time.perf_counter()
    export_bundle(prior, operator, op_config,
                  ExportOptions(SamplingOptions(config.task, steps=config.steps), image_size,
                                batch, precision=precision),
                  path, on_stage=lambda s, sec: _say(config, f"  {s}: {sec:.1f} s"))
    return path, time.perf_counter() - start


def _step_flops(step, inputs) -> float:
    """FLOPs of one guided step (UNet + H_θ forward and the input gradient)."""
    from torch.utils.flop_counter import FlopCounterMode

    names = ("z_t", "timestep", "coefficients", "noise", "w", "eta", "context", "sigma_y")
    kw = dict(zip(names, inputs))
    z = kw["z_t"].clone().requires_grad_()
    with FlopCounterMode(display=False) as counter:
        loss, _ = step.measurement_loss(z, kw["timestep"], kw["coefficients"], kw["w"],
                                        kw["context"], kw["sigma_y"])
        loss.backward()
    return float(counter.get_total_flops())


def run_bench(config: BenchConfig) -> dict:
    """Run the benchmark; returns the JSON-ready result (schema in :mod:`.report`)."""
    import torch

    from ..prior import load_prior
    from ..schedule import from_scheduler
    from ..step import GuidedStep

    config.validate()
    bundle = _given_bundle(config)
    torch.set_num_threads(config.threads)
    _say(config, f"loading {config.model}")
    prior = load_prior(config.model)
    image_size = config.image_size or prior.default_image_size
    if bundle is not None and bundle.image_size != image_size:
        raise SiloError(f"bundle {config.bundle} restores {bundle.image_size}px images; the "
                        f"benchmark runs at {image_size}px (pass --size {bundle.image_size})")
    get_degradation(config.task).check_size(image_size)
    operator, op_config, operator_label = _operator(prior, config, image_size)
    spec = get_degradation(config.task)
    rng = np.random.default_rng(0)
    latent = prior.latent_shape(image_size)
    side = image_size // spec.scale
    y = rng.uniform(-1, 1, (1, 3, side, side)).astype(np.float32)
    schedule = from_scheduler(prior.scheduler, 999)
    context = prior.encode_prompt("")
    step = GuidedStep(prior, operator)
    step_inputs = (torch.from_numpy(rng.standard_normal(latent, dtype=np.float32)),
                   torch.tensor([float(schedule.timesteps[500])]),
                   torch.from_numpy(schedule.coefficients[500]),
                   torch.from_numpy(rng.standard_normal(latent, dtype=np.float32)),
                   torch.from_numpy(rng.standard_normal(latent, dtype=np.float32)),
                   torch.tensor([0.5]), context, torch.tensor([0.02]))
    measurements, restorations, memory = [], [], {}
    warm, reps = config.warmup, config.reps

    def record(backend, name, stats):
        measurements.append({"backend": backend, "measure": name, **stats})
        _say(config, f"  {backend:<6} {name:<12} median {stats['median_ms']:9.2f} ms")

    export_s = None
    step_calls = {}  # CPU backends' one-step callables, timed interleaved below
    restore_calls = {}  # and their whole restorations
    shared = _Shared(prior, operator, op_config, config, image_size, step, step_inputs,
                     context, latent, y, rng, record, restorations, step_calls, restore_calls)
    compiled = {}  # torch.compile backends: compile seconds, fullgraph, parity vs eager
    failed = {}  # backend -> one-line error; the other backends still run
    phases = {}  # backend -> RSS before it and its own peak (the process's peak is cumulative)
    for backend in config.backends:
        _say(config, f"timing {backend}")
        before = memory_mib().get("rss")
        reset_peak()
        try:
            if backend == "torch":
                _time_torch(shared)
            elif backend == "torch-compile":
                compiled[backend] = _time_torch_compile(shared)
            elif backend == "torch-compile-cuda-graph":
                compiled[backend] = _time_torch_compile_cuda(shared)
            elif backend in ("torch-cuda", "torch-cuda-graph"):
                _time_torch_cuda(backend, prior, operator, config, step_inputs, y, record,
                                 restorations)
            else:
                export_s = _time_bundle(backend, shared) or export_s
        except Exception as exc:  # any failure of one backend is recorded, never fatal
            failed[backend] = _one_line(exc)
            _say(config, f"  {backend} failed: {failed[backend]}")
        memory[backend] = peak_rss_mib()
        if before is not None:
            phases[backend] = {"rss_before": before, "peak": memory_mib()["hwm"]}

    for backend, stats in _interleaved(step_calls, warm, reps, failed=failed).items():
        stats.pop("output")
        record(backend, "step", stats)
    _say(config, f"timing {config.steps}-step restorations x{config.restore_reps}")
    restore_calls = {b: call for b, call in restore_calls.items() if b not in failed}
    timed = _interleaved(restore_calls, 0, config.restore_reps, settle=False, failed=failed)
    images = {b: np.asarray(stats.pop("output"), np.float64) for b, stats in timed.items()}
    for backend, stats in timed.items():
        entry = {**_restoration(backend, config.steps, stats["median_ms"] / 1e3),
                 "reps": stats["reps"], "p90_s": stats["p90_ms"] / 1e3,
                 "samples_s": [ms / 1e3 for ms in stats["samples_ms"]]}
        if "torch" in images and backend != "torch":  # same seed: the images must agree
            ref = images["torch"]
            entry["rel_diff_vs_torch"] = float(np.linalg.norm(images[backend] - ref)
                                               / np.linalg.norm(ref))
        restorations.append(entry)

    baselines = []
    for method in config.baselines:
        _say(config, f"timing baseline {method}")
        baselines.append({"method": method, **_baseline_step(prior, config, method, y,
                                                             step_inputs, context)})

    flops = _step_flops(step, step_inputs)
    gflops = matmul_gflops(config.threads)
    floor = {"step_flops": flops, "matmul_gflops": gflops,
             "floor_step_ms": flops / (gflops * 1e9) * 1e3}
    ran_on_gpu = (set(config.backends) - set(failed)) & set(GPU_BACKENDS)
    for precision in sorted({gpu_precision(b) for b in ran_on_gpu}):
        gpu = gpu_matmul_gflops(precision)
        floor[f"gpu_matmul_gflops_{precision}"] = gpu
        floor[f"gpu_floor_step_ms_{precision}"] = flops / (gpu * 1e9) * 1e3
    result = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        "versions": package_versions(("silo-rt", "torch", "diffusers", "onnx",
                                     "onnxruntime", "openvino")),
        "config": {**{k: (str(v) if isinstance(v, Path) else v)
                      for k, v in asdict(config).items() if k != "log"},
                   "image_size": image_size, "operator_label": operator_label,
                   "prior_random_weights": prior.is_random},
        "export_s": export_s,
        "measurements": measurements,
        "restorations": restorations,
        "baselines": baselines,
        "peak_rss_mib": memory,
        "floor": floor,
        "failed": failed,
    }
    if compiled:
        result["compiled"] = compiled
    if phases:
        result["phase_rss_mib"] = phases
    _derive(result)
    return result


@dataclass
class _Shared:
    """What every backend's timing needs: the prior, the inputs, and where results go."""

    prior: object
    operator: object
    op_config: object
    config: BenchConfig
    image_size: int
    step: object
    step_inputs: tuple
    context: object
    latent: tuple
    y: np.ndarray
    rng: np.random.Generator
    record: object
    restorations: list
    step_calls: dict
    restore_calls: dict


def _one_line(exc: BaseException) -> str:
    """An exception as one line: SiloError's message, else ``Type: first line``."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, SiloError):
        return text or "SiloError"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _time_torch(s: _Shared) -> None:
    """PyTorch eager on the CPU: each graph, and the step and restoration (interleaved)."""
    import torch

    from ..export.graphs import UNetOperatorGraph
    from ..latents import LatentDecoder, MeasurementEncoder
    from ..sampler import SamplingOptions, restore

    config, inputs = s.config, s.step_inputs
    graphs = {"unet_h": UNetOperatorGraph(s.step),
              "vae_encoder": MeasurementEncoder(s.prior, config.task, s.image_size),
              "vae_decoder": LatentDecoder(s.prior)}
    feeds = {"unet_h": (inputs[0], inputs[1], inputs[2], s.context, inputs[7]),
             "vae_encoder": (torch.from_numpy(s.y), torch.zeros(s.latent)),
             "vae_decoder": (inputs[0],)}
    for name, module in graphs.items():
        with torch.no_grad():
            s.record("torch", name, time_calls(lambda m=module, f=feeds[name]: m(*f),
                                               config.warmup, config.reps))
    s.step_calls["torch"] = lambda: s.step(*inputs)
    if config.restoration:
        options = SamplingOptions(config.task, steps=config.steps)
        s.restore_calls["torch"] = (
            lambda o=options: restore(s.prior, s.operator,
                                      torch.from_numpy(s.y), o))


def _time_torch_compile(s: _Shared) -> dict:
    """Inductor's compiled guided step on the eager backend's inputs, timed interleaved."""
    import torch

    from ..sampler import SamplingOptions
    from .compiled import compile_step, compiled_restore

    config = s.config
    _say(config, "  compiling the guided step (Inductor; minutes on a CPU)")
    done = compile_step(s.step, s.step_inputs)
    _say(config, f"  compiled in {done.compile_s:.1f} s (fullgraph={done.fullgraph}); "
                 f"z_prev rel. err vs eager {done.rel_err:.1e}")
    s.step_calls["torch-compile"] = lambda: done.call(*s.step_inputs)
    if config.restoration:
        options = SamplingOptions(config.task, steps=config.steps)
        y = torch.from_numpy(s.y)
        compiled_restore(s.prior, config.task, y, options, done.call)  # warm-up, no recompile
        s.restore_calls["torch-compile"] = (
            lambda: compiled_restore(s.prior, config.task, y, options, done.call))
    return {"compile_s": done.compile_s, "fullgraph": done.fullgraph,
            "rel_err_vs_torch": done.rel_err}


def _time_torch_compile_cuda(s: _Shared) -> dict:
    """The compiled step on the GPU with CUDA graphs (``mode="reduce-overhead"``), TF32 off.

    Per-step latency is a loop of ``reps`` calls with one synchronisation at the end, as for
    the other GPU backends; parity is against the eager step on the same GPU.
    """
    import torch

    from ..torch_cuda import exact_fp32, require_cuda
    from .compiled import compile_step

    device = require_cuda()
    modules = (s.prior.unet, s.operator)
    try:
        for module in modules:
            module.to(device)
        inputs = tuple(t.to(device) for t in s.step_inputs)
        with exact_fp32():
            done = compile_step(s.step, inputs, mode="reduce-overhead",
                                sync=torch.cuda.synchronize)
            n = s.config.reps

            def loop():
                for _ in range(n):
                    torch.compiler.cudagraph_mark_step_begin()
                    done.call(*inputs)
                torch.cuda.synchronize()

            loop()  # warm-up: the CUDA graph is recorded in the first calls
            samples = []
            for _ in range(3):
                start = time.perf_counter()
                loop()
                samples.append((time.perf_counter() - start) / n)
        s.record("torch-compile-cuda-graph", "step", summarize(samples))
    finally:
        _back_to_cpu(modules)  # also after a failure
    return {"compile_s": done.compile_s, "fullgraph": done.fullgraph,
            "rel_err_vs_torch": done.rel_err}


def _time_bundle(backend: str, s: _Shared) -> float | None:
    """ort, openvino* or trt-*: export (or reuse) the bench bundle and time it; returns export
    seconds."""
    from ..runtime import BundleRunner

    config = s.config
    runner_name, precision = runner_backend(backend)
    path, export_s = _bundle(s.prior, s.operator, s.op_config, config, s.image_size,
                             precision="fp16" if precision == "fp16" else "fp32")
    if runner_name == "trt":
        runner = BundleRunner(path, backend="trt", precision=precision,
                              verify=False, log=lambda line: _say(config, line))
        try:
            _time_bundle_runner(backend, runner, s.step_inputs, s.y, config, s.record,
                                s.restorations)
        finally:
            runner.graphs.close()  # GPU memory back before the next backend
        return export_s
    runner = BundleRunner(path, backend=runner_name, precision=precision,
                          threads=config.threads, verify=False)
    for name in ("unet_h", "vae_encoder", "vae_decoder"):
        graph = runner.manifest.graphs.get(name)
        if graph is None:
            continue
        feeds = {key: _feed(key, shape, s.rng) for key, shape in graph.inputs.items()}
        if name == "vae_encoder":
            feeds["measurement"] = s.y
        s.record(backend, name, time_calls(lambda n=name, f=feeds: runner.graphs.run(n, **f),
                                           config.warmup, config.reps))
    arrays = [t.numpy() for t in s.step_inputs]
    s.step_calls[backend] = runner.graphs.single_step(
        arrays[0], arrays[4], runner.context, arrays[1], arrays[2], arrays[3], 0.5, 0.02)
    if config.restoration and runner.steps == config.steps:
        runner.restore(s.y)  # warm-up: sessions and arenas
        s.restore_calls[backend] = lambda r=runner: r.restore(s.y)
    return export_s


def _feed(name: str, shape: list[int], rng) -> np.ndarray:
    """A plausible value for graph input ``name`` of ``shape`` (bench timings)."""
    if name == "timestep":
        return np.array([500.0], np.float32)
    if name == "coefficients":
        return np.array([1.2, -0.6, 0.1, 0.9, 0.05], np.float32)
    if name in ("eta", "sigma_y", "cfg_scale"):
        return np.array([0.5], np.float32)
    return rng.standard_normal(shape).astype(np.float32)


def _interleaved(calls: dict, warmup: int, reps: int, settle: bool = True,
                 failed: dict | None = None) -> dict:
    """Time each callable ``reps`` times, round-robin, so machine noise hits all alike.

    Each result keeps its ``samples_ms`` in round order, so rep ``i`` of two backends ran
    back to back and their ratio is a paired measurement.

    With ``settle``, each timed call follows an untimed one of the same backend: ONNX
    Runtime's worker threads spin for a while after a run, which would otherwise slow the
    next backend's short call.

    A callable that raises is dropped from the rounds and its error goes to ``failed``
    (without ``failed`` the exception propagates).
    """
    samples = {name: [] for name in calls}
    last, active = {}, dict(calls)
    for rep in range(warmup + reps):
        for name, call in list(active.items()):
            try:
                if settle:
                    call()
                start = time.perf_counter()
                last[name] = call()
            except Exception as exc:
                if failed is None:
                    raise
                failed[name] = _one_line(exc)
                del active[name], samples[name]
                continue
            if rep >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: {**summarize(values), "samples_ms": [v * 1e3 for v in values],
                   "output": last.get(name)}
            for name, values in samples.items()}


def _time_bundle_runner(backend, runner, step_inputs, y, config, record, restorations):
    """Per-step latency (whole loop / steps, one sync at the end) and a full restoration."""
    arrays = [t.numpy() for t in step_inputs]
    z, timestep, coefficients, noise, w = arrays[:5]
    n = config.reps

    def loop():
        runner.graphs.run_steps(z, w, runner.context, np.repeat(timestep.astype(np.int64), n),
                                np.repeat(coefficients[None], n, 0),
                                np.repeat(noise[None], n, 0), 0.5, 0.02)

    loop()  # warm-up (graph capture, allocations)
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        loop()
        samples.append((time.perf_counter() - start) / n)
    record(backend, "step", summarize(samples))
    if config.restoration and runner.steps == config.steps:
        start = time.perf_counter()
        runner.restore(y)
        restorations.append(_restoration(backend, config.steps, time.perf_counter() - start))


def _time_torch_cuda(backend, prior, operator, config, step_inputs, y, record, restorations):
    """The PyTorch reference on the GPU, eager or replaying a CUDA graph."""
    from ..torch_cuda import require_cuda

    device = require_cuda()
    modules = (prior.unet, prior.vae, prior.text_encoder, operator)
    try:
        for module in modules:
            module.to(device)
        _time_cuda_loop(backend, prior, operator, config, step_inputs, y, record,
                        restorations, device)
    finally:
        _back_to_cpu(modules)  # also after a failure


def _time_cuda_loop(backend, prior, operator, config, step_inputs, y, record, restorations,
                    device):
    """Step latency (whole loop / steps, one sync at the end) and a full restoration."""
    import torch

    from ..sampler import SamplingOptions
    from ..step import GuidedStep
    from ..torch_cuda import CudaStepLoop, restore_cuda

    use_graph = backend == "torch-cuda-graph"
    loop = CudaStepLoop(GuidedStep(prior, operator), use_graph)
    z, timestep, coefficients, noise, w, _, context, _ = (t.to(device) for t in step_inputs)
    n = config.reps
    args = (np.repeat(timestep.cpu().numpy(), n), np.repeat(coefficients.cpu().numpy()[None],
                                                            n, 0),
            np.repeat(noise.cpu().numpy()[None], n, 0), 0.5, 0.02)
    loop.run(z, w, context, *args)
    samples = []
    for _ in range(3):
        torch.cuda.synchronize()
        start = time.perf_counter()
        loop.run(z, w, context, *args)
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) / n)
    record(backend, "step", summarize(samples))
    if config.restoration:
        options = SamplingOptions(config.task, steps=config.steps)
        torch.cuda.synchronize()
        start = time.perf_counter()
        restore_cuda(prior, operator, torch.from_numpy(y), options, use_graph)
        restorations.append(_restoration(backend, config.steps, time.perf_counter() - start))


def _baseline_step(prior, config, method, y, step_inputs, context):
    import torch

    from ..baselines import BaselineWeights, DecoderGuidedStep

    step = DecoderGuidedStep(prior, config.task, method, BaselineWeights())
    z, timestep, coefficients, noise = step_inputs[:4]
    y_t = torch.from_numpy(y)
    stats = time_calls(lambda: step(z, timestep, coefficients, noise, y_t, context),
                       min(config.warmup, 1), config.baseline_reps)
    return stats


def _restoration(backend, steps, seconds):
    return {"backend": backend, "steps": steps, "total_s": seconds,
            "per_step_ms": seconds / steps * 1e3}


def gpu_precision(backend: str) -> str:
    """The arithmetic a GPU backend's step runs in: ``fp16`` for ``trt-fp16``, else ``fp32``
    (TF32 off: the PyTorch-CUDA backends under :func:`~silo_rt.torch_cuda.exact_fp32`,
    TensorRT fp32 with ``BuilderFlag.TF32`` cleared). Its floor is that precision's
    measured matmul rate, not the fp16 tensor-core rate for all."""
    return "fp16" if runner_backend(backend)[1] == "fp16" else "fp32"


def _back_to_cpu(modules) -> None:
    """Move ``modules`` back to the CPU and return torch's cached GPU blocks to the driver,
    so a later backend in this process (TensorRT's engines) has the memory (24-48 GB cards)."""
    import torch

    for module in modules:
        module.to("cpu")
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def _derive(result: dict) -> None:
    """Ratios quoted in reports: speed-ups against torch and SILO against the baselines."""
    by = {(m["backend"], m["measure"]): m for m in result["measurements"]}
    floor = result["floor"]
    for m in result["measurements"]:
        if m["measure"] == "step":
            gpu_floor = f"gpu_floor_step_ms_{gpu_precision(m['backend'])}"
            on_gpu = m["backend"] in GPU_BACKENDS and gpu_floor in floor
            m["achieved_fraction"] = (floor[gpu_floor if on_gpu else "floor_step_ms"]
                                      / m["median_ms"])
        ref = by.get(("torch", m["measure"]))
        if ref is not None:
            m["speedup_vs_torch"] = ref["median_ms"] / m["median_ms"]
            paired = _paired_speedup(ref.get("samples_ms"), m.get("samples_ms"))
            if paired is not None:
                m["paired_speedup_vs_torch"] = paired
    rest = {r["backend"]: r for r in result["restorations"]}
    for r in result["restorations"]:
        if "torch" in rest:
            r["speedup_vs_torch"] = rest["torch"]["total_s"] / r["total_s"]
            paired = _paired_speedup(rest["torch"].get("samples_s"), r.get("samples_s"))
            if paired is not None:
                r["paired_speedup_vs_torch"] = paired
    silo = by.get(("torch", "step"))
    for b in result["baselines"]:
        if silo is not None:
            b["silo_time_ratio"] = silo["median_ms"] / b["median_ms"]


def _paired_speedup(reference, samples) -> float | None:
    """Median over rounds of ``reference_i / samples_i`` (interleaved samples only).

    Each round timed both backends back to back, so a slow spell of the machine scales
    both sides of a pair; the median of the pair ratios is steadier than the ratio of the
    two medians when the machine's speed drifts during the run.
    """
    if not reference or not samples or len(reference) != len(samples):
        return None
    return statistics.median(a / b for a, b in zip(reference, samples))
