"""One point of the scaling sweep, in its own process:
``python -m silo_rt.bench.scaling_worker SPEC_JSON`` prints the point's JSON on its last
stdout line (schema of a point in :mod:`.scaling`).

``SPEC_JSON``: ``{model, task, arch, reps, warmup, threads, steps, backend, size, batch,
what ("step" | "restore"), bundle (path, "" for the PyTorch backends)}``. A bundle point
does not import torch, so its peak RSS is the runtime's own.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np

from .memory import Stages


def run_point(spec: dict) -> dict:
    """Load, warm up and time one point; its timings and the memory of each stage."""
    stages = Stages()
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


def _bundle_point(spec: dict, stages: Stages):
    """``ort``, ``openvino`` or ``openvino-bf16`` on the point's bundle."""
    from ..backends import runner_backend
    from ..restorer import Restorer

    backend, precision = runner_backend(spec["backend"])
    restorer = Restorer.from_bundle(spec["bundle"], backend=backend, threads=spec["threads"],
                                    precision=precision, verify=False)
    runner = restorer.runner
    m = runner.manifest
    stages.mark("import + manifest")
    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, m.measurement_shape).astype(np.float32)
    if spec["what"] == "restore":
        return (lambda: restorer(y, eta=m.eta).image), {}  # the bundle's own η, as recorded
    latent = m.latent_shape
    z, noise, w = (rng.standard_normal(latent).astype(np.float32) for _ in range(3))
    coefficients = np.array([1.2, -0.6, 0.1, 0.9, 0.05], np.float32)
    call = runner.graphs.single_step(z, w, runner.context, 500.0, coefficients, noise, 0.5,
                                     0.02)  # loads the step graph
    stages.mark("step session")
    return call, {}


def _torch_point(spec: dict, stages: Stages):
    """``torch`` or ``torch-compile``: the guided step (or a restoration) in PyTorch."""
    import torch

    from ..prior import load_prior
    from ..sampler import SamplingOptions, batch_context, restore
    from ..step import GuidedStep
    from .subject import Subject

    torch.set_num_threads(spec["threads"])
    prior = load_prior(spec["model"])
    size, batch = spec["size"], spec["batch"]
    operator, _, _ = Subject(spec["model"], spec["task"], spec["arch"]).operator(prior, size)
    stages.mark("import + load")
    rng = np.random.default_rng(0)
    if spec["what"] == "restore":
        from ..degradations import get_degradation

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
        from .compiled import compile_step

        done = compile_step(step, inputs)
        stages.mark("compile")
        return (lambda: done.call(*inputs)), {"compile_s": done.compile_s}
    return (lambda: step(*inputs)), {}


if __name__ == "__main__":
    print(json.dumps(run_point(json.loads(sys.argv[1]))))
