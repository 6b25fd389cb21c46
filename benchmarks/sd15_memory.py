"""Peak memory of an sd15-random export and of a restoration from its bundle (issue #13).

Each part runs in its own process and reports the peak RSS of every stage (VmHWM, reset
between stages), as ``silo-rt bench --sizes`` does:

    python benchmarks/sd15_memory.py export  BUNDLE   # sr8, 512 px, 999-step schedule
    python benchmarks/sd15_memory.py restore BUNDLE [--backend ort|openvino] [--steps 2]
    python benchmarks/sd15_memory.py torch   -      [--steps 2]   # PyTorch eager, the peer

The prior is ``sd15-random``: Stable Diffusion 1.5's architecture with random weights (a
test and benchmark model, no download). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from silo_rt.bench.memory import Stages


def export(bundle: str) -> dict:
    from silo_rt.export import ExportOptions, export_bundle
    from silo_rt.operators import OperatorConfig, build_operator
    from silo_rt.prior import load_prior
    from silo_rt.sampler import SamplingOptions

    stages = Stages()
    stages.mark("interpreter + imports")
    prior = load_prior("sd15-random")
    config = OperatorConfig.for_prior(prior, "cnn", "sr8")
    operator = build_operator(config).eval().requires_grad_(False)
    stages.mark("prior + operator")
    seconds = {}

    def on_stage(name, s):
        seconds[name] = round(s, 1)
        stages.mark(f"export: {name}")

    start = time.perf_counter()
    export_bundle(prior, operator, config,
                  ExportOptions(SamplingOptions("sr8", steps=999), 512, include_unet_h=False),
                  bundle, on_stage=on_stage)
    stages.mark("export: rest")
    return {"what": "export", "seconds": round(time.perf_counter() - start, 1),
            "stage_seconds": seconds, "peak_mib": stages.peak, "stages_mib": stages.rows}


def restore(bundle: str, backend: str, steps: int) -> dict:
    from silo_rt.runtime import BundleRunner

    stages = Stages()
    stages.mark("interpreter + imports")
    runner = BundleRunner(bundle, backend=backend, threads=2, verify=False)
    stages.mark("manifest")
    y = np.random.default_rng(0).uniform(-1, 1, runner.manifest.measurement_shape)
    start = time.perf_counter()
    x = runner.restore(y.astype(np.float32), steps=steps)
    seconds = time.perf_counter() - start
    stages.mark(f"restoration ({steps} steps; sessions created lazily inside)")
    assert np.isfinite(x).all()
    return {"what": "restore", "backend": runner.label, "steps": steps,
            "seconds": round(seconds, 1), "peak_mib": stages.peak, "stages_mib": stages.rows}


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
    parser.add_argument("--backend", default="ort")
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    if args.what == "export":
        result = export(args.bundle)
    elif args.what == "torch":
        result = torch_restore(args.steps)
    else:
        result = restore(args.bundle, args.backend, args.steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
