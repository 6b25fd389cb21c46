"""Peak memory of an export and of a restoration from its bundle, stage by stage (#13, #26).

Each part runs in its own process and reports the peak RSS of every stage (VmHWM, reset
between stages), as ``silo-rt bench --sizes`` does:

    python benchmarks/sd15_memory.py export  BUNDLE [--prior sd15-random] [--size 512]
                                             [--attention recompute|keep] [--chunk 512]
                                             [--weights fp32|fp16]
    python benchmarks/sd15_memory.py restore BUNDLE [--backend ort|openvino] [--steps 3]
                                             [--memory fast|low] [--image 1024x768]
                                             [--ort-config KEY=VALUE ...] [--ov-config K=V ...]
    python benchmarks/sd15_memory.py torch   -      [--steps 2]   # PyTorch eager, the peer

Export: sr8 with a 999-step schedule, no ``unet_h``. Restore: the stages of Algorithm 1 as
the runtime runs them (each graph's session is created when it is first needed and kept),
with every step's seconds. The default prior is ``sd15-random``: Stable Diffusion 1.5's
architecture with random weights (a test and benchmark model, no download). Prints one JSON
line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from silo_rt.bench.memory import Stages


def export(bundle: str, prior_name: str, size: int, attention: str | None,
           chunk: int | None, weights: str = "fp32") -> dict:
    from silo_rt.export import ExportOptions, export_bundle
    from silo_rt.export.attention import DEFAULT_ATTENTION, DEFAULT_CHUNK
    from silo_rt.operators import OperatorConfig, build_operator
    from silo_rt.prior import load_prior
    from silo_rt.sampler import SamplingOptions

    stages = Stages()
    stages.mark("interpreter + imports")
    prior = load_prior(prior_name)
    config = OperatorConfig.for_prior(prior, "cnn", "sr8")
    operator = build_operator(config).eval().requires_grad_(False)
    stages.mark("prior + operator")
    seconds = {}

    def on_stage(name, s):
        seconds[name] = round(s, 1)
        stages.mark(f"export: {name}")

    attention, chunk = attention or DEFAULT_ATTENTION, chunk or DEFAULT_CHUNK
    start = time.perf_counter()
    options = ExportOptions(SamplingOptions("sr8", steps=999), size, include_unet_h=False,
                            attention=attention, attention_chunk=chunk, weights=weights)
    export_bundle(prior, operator, config, options, bundle, on_stage=on_stage,
                  consume=True)  # as the CLI does
    stages.mark("export: rest")
    return {"what": "export", "prior": prior_name, "size": size, "attention": attention,
            "chunk": chunk, "weights": weights, "seconds": round(time.perf_counter() - start, 1),
            "stage_seconds": seconds, "peak_mib": stages.peak, "stages_mib": stages.rows}


def _rss_kinds() -> list[float]:
    """``[anonymous, file-backed]`` resident MiB now: ONNX Runtime maps external weights
    from the file, and those pages count in the RSS but are page cache."""
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                found[key] = round(int(value.split()[0]) / 1024, 1)
    return [found.get("RssAnon", 0.0), found.get("RssFile", 0.0)]


def _pairs(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def _configure(graphs, ort_config: dict, ov_config: dict) -> None:
    """Session options to try on top of the backend's own (``--ort-config``/``--ov-config``):
    ORT session config entries, ``arena=0`` / ``mem_pattern=0`` for the two switches;
    OpenVINO compile properties, and ``ENABLE_MMAP=0`` (the core reads weights into memory
    instead of mapping the file)."""
    if hasattr(graphs, "_options"):
        for key, value in ort_config.items():
            if key == "arena":
                graphs._options.enable_cpu_mem_arena = value == "1"
            elif key == "mem_pattern":
                graphs._options.enable_mem_pattern = value == "1"
            else:
                graphs._options.add_session_config_entry(key, value)
    elif ov_config:
        ov_config = dict(ov_config)  # the caller's copy is recorded as given
        mmap = ov_config.pop("ENABLE_MMAP", None)  # how read_model reads the weights
        if mmap is not None:
            graphs._core.set_property({"ENABLE_MMAP": mmap == "1"})
        graphs._config.update(ov_config)


def _open(graphs, name: str) -> None:
    (graphs.session if hasattr(graphs, "session") else graphs.request)(name)


def restore(bundle: str, backend: str, steps: int, ort_config: dict, ov_config: dict,
            memory: str = "fast") -> dict:
    from silo_rt.noise import NoiseSource
    from silo_rt.runtime import BundleRunner

    stages, kinds = Stages(), {}

    def mark(label):
        stages.mark(label)
        kinds[label] = _rss_kinds()

    mark("interpreter + imports")
    runner = BundleRunner(bundle, backend=backend, threads=2, verify=False, memory=memory)
    graphs, m = runner.graphs, runner.manifest
    _configure(graphs, ort_config, ov_config)
    mark("manifest")
    y = np.random.default_rng(0).uniform(-1, 1, m.measurement_shape).astype(np.float32)
    noise = NoiseSource(0)
    shape = tuple(m.latent_shape)
    _open(graphs, "vae_encoder")
    mark("load vae_encoder")
    w = graphs.run("vae_encoder", measurement=y, noise=noise.encoder_noise(shape))[0]
    mark("encode")
    _open(graphs, graphs.step_graph)
    mark("load step")
    timesteps, coefficients = runner.schedule(steps)
    z = noise.initial_latent(shape) * np.float32(m.init_noise_sigma)
    step_noise = noise.step_noise(len(timesteps), shape)
    ticks, cpu_ticks = [time.perf_counter()], [time.process_time()]

    def tick(i, t, latent, loss):
        ticks.append(time.perf_counter())
        cpu_ticks.append(time.process_time())
        if i == 0:
            mark("step 1")

    z0 = graphs.run_steps(z, w, runner.context, timesteps, coefficients, step_noise, m.eta,
                          m.sigma_y, None, tick)
    mark(f"steps 2-{steps}")
    _open(graphs, "vae_decoder")
    mark("load vae_decoder")
    x = graphs.run("vae_decoder", z0=z0)[0]
    mark("decode")
    assert np.isfinite(x).all()
    step_seconds = [round(b - a, 3) for a, b in zip(ticks, ticks[1:])]
    # CPU seconds of all threads: on a machine shared with other work, wall time measures
    # the others too
    step_cpu_seconds = [round(b - a, 3) for a, b in zip(cpu_ticks, cpu_ticks[1:])]
    return {"what": "restore", "backend": runner.label, "steps": steps, "memory": memory,
            "ort_config": ort_config, "ov_config": ov_config,
            "step_seconds": step_seconds, "step_cpu_seconds": step_cpu_seconds,
            "median_step_s_after_first": (round(float(np.median(step_seconds[1:])), 3)
                                          if steps > 1 else None),
            "peak_mib": stages.peak, "stages_mib": stages.rows,
            "anon_file_mib_at_stage_end": kinds}


def restore_image(bundle: str, backend: str, steps: int, image: str, memory: str) -> dict:
    """One whole restoration of a random measurement of ``image`` (``WxH`` restored pixels)
    through ``BundleRunner.restore``: the bundle's own size in one piece, another by tiles."""
    from silo_rt.runtime import BundleRunner

    stages = Stages()
    stages.mark("interpreter + imports")
    runner = BundleRunner(bundle, backend=backend, threads=2, verify=False, memory=memory)
    stages.mark("manifest")
    width, height = (int(n) for n in image.split("x"))
    scale = runner.degradation.scale
    y = np.random.default_rng(0).uniform(
        -1, 1, (1, 3, height // scale, width // scale)).astype(np.float32)
    lines, ticks = [], [time.perf_counter()]
    start = time.perf_counter()
    x = runner.restore(y, steps=steps, log=lines.append,
                       callback=lambda *args: ticks.append(time.perf_counter()))
    seconds = time.perf_counter() - start
    stages.mark(f"restoration ({steps} steps)")
    assert np.isfinite(x).all() and x.shape[-2:] == (height, width)
    return {"what": "restore-image", "backend": runner.label, "steps": steps,
            "memory": memory, "image": image, "tiles": lines, "seconds": round(seconds, 1),
            "peak_mib": stages.peak, "stages_mib": stages.rows}


def torch_restore(steps: int) -> dict:
    import torch

    from silo_rt.operators import OperatorConfig, build_operator
    from silo_rt.prior import load_prior
    from silo_rt.sampler import SamplingOptions
    from silo_rt.sampler import restore as silo_restore

    torch.set_num_threads(2)
    stages = Stages()
    stages.mark("interpreter + imports")
    prior = load_prior("sd15-random")
    operator = build_operator(OperatorConfig.for_prior(prior, "cnn", "sr8"))
    operator = operator.eval().requires_grad_(False)
    stages.mark("prior + operator")
    y = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64))).float()
    start = time.perf_counter()
    x = silo_restore(prior, operator, y, SamplingOptions("sr8", steps=steps))
    seconds = time.perf_counter() - start
    stages.mark(f"restoration ({steps} steps)")
    assert torch.isfinite(x).all()
    return {"what": "restore", "backend": "torch (eager)", "steps": steps,
            "seconds": round(seconds, 1), "peak_mib": stages.peak, "stages_mib": stages.rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("export", "restore", "torch"))
    parser.add_argument("bundle")
    parser.add_argument("--prior", default="sd15-random")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--attention", default=None, help="recompute | keep (export's default)")
    parser.add_argument("--chunk", type=int, default=None, help="(export's default)")
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--weights", default="fp32", help="export: fp32 | fp16 storage")
    parser.add_argument("--memory", default="fast", help="restore: fast | low (ort)")
    parser.add_argument("--image", default=None,
                        help="restore: WxH restored pixels, one whole restoration (by tiles "
                             "where not the bundle's size)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--ort-config", nargs="*", default=[])
    parser.add_argument("--ov-config", nargs="*", default=[])
    args = parser.parse_args()
    if args.what == "export":
        result = export(args.bundle, args.prior, args.size, args.attention, args.chunk,
                        args.weights)
    elif args.what == "torch":
        result = torch_restore(args.steps)
    elif args.image:
        result = restore_image(args.bundle, args.backend, args.steps, args.image, args.memory)
    else:
        result = restore(args.bundle, args.backend, args.steps, _pairs(args.ort_config),
                         _pairs(args.ov_config), args.memory)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
