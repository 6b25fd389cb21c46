"""Slow checks (``pytest -m slow``): every task × operator kind end to end through a bundle,
and the full SD-1.5 architecture exported and stepped in ONNX Runtime."""

import resource
import time

import numpy as np
import pytest
import torch
from conftest import END_TO_END_RELATIVE

from silo_rt.degradations import get_degradation, task_names
from silo_rt.export import ExportOptions, export_bundle
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.runtime import BundleRunner
from silo_rt.sampler import SamplingOptions, restore

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("arch", ["cnn", "readout"])
@pytest.mark.parametrize("task", list(task_names()))
def test_every_task_and_operator_matches_the_reference(tiny_prior, tmp_path, task, arch):
    torch.manual_seed(3)
    config = OperatorConfig.for_prior(tiny_prior, arch, task)
    operator = build_operator(config).eval().requires_grad_(False)
    options = SamplingOptions(task, steps=25, seed=5)
    export_bundle(tiny_prior, operator, config, ExportOptions(options, 64), tmp_path / "b")
    side = 64 // get_degradation(task).scale
    y = np.random.default_rng(1).uniform(-1, 1, (1, 3, side, side)).astype(np.float32)
    ours = BundleRunner(tmp_path / "b").restore(y, seed=5)
    ref = restore(tiny_prior, operator, torch.from_numpy(y), options).numpy()
    error = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    print(f"\n{arch}/{task}: end-to-end relative difference {error:.2e}")
    assert error < END_TO_END_RELATIVE


def test_sd15_random_exports_and_steps_in_onnx_runtime(tmp_path):
    """Full SD-1.5 architecture (random weights): the step graph needs external data."""
    from silo_rt.prior import load_prior

    prior = load_prior("sd15-random")
    config = OperatorConfig.for_prior(prior, "cnn", "sr8")
    operator = build_operator(config).eval().requires_grad_(False)
    options = ExportOptions(SamplingOptions("sr8", steps=999), 512, include_unet_h=False)
    start = time.perf_counter()
    stages = {}
    export_bundle(prior, operator, config, options, tmp_path / "b",
                  on_stage=lambda name, s: stages.__setitem__(name, s))
    export_s = time.perf_counter() - start
    runner = BundleRunner(tmp_path / "b", verify=False)
    g = np.random.default_rng(0)
    shape = tuple(runner.manifest.latent_shape)
    z = g.standard_normal(shape).astype(np.float32)
    w = g.standard_normal(shape).astype(np.float32)
    sched = runner.manifest.schedule
    start = time.perf_counter()
    out = runner.graphs.run_steps(z, w, runner.context, np.asarray(sched.timesteps[:1]),
                                  np.asarray(sched.coefficients[:1], np.float32),
                                  g.standard_normal((1, *shape)).astype(np.float32), 0.5, 0.02)
    step_s = time.perf_counter() - start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nsd15-random: export {export_s:.0f} s {stages}, one fused ORT step {step_s:.1f} s,"
          f" peak RSS {peak_gib:.1f} GiB")
    assert np.isfinite(out).all() and out.shape == shape
    assert any(p.name.endswith(".data") for p in (tmp_path / "b").iterdir())


def test_sd15_random_graphs_parse_and_build_with_tensorrt(tmp_path):
    """NVIDIA's parser and AOT builder accept the full-size graphs, external data and the
    fp16 step included (TensorRT-RTX, no GPU)."""
    pytest.importorskip("tensorrt_rtx")
    from silo_rt.bundle_format import load_manifest
    from silo_rt.prior import load_prior
    from silo_rt.runtime.tensorrt.check import check_bundle_with_tensorrt

    prior = load_prior("sd15-random")
    config = OperatorConfig.for_prior(prior, "readout", "sr8")
    operator = build_operator(config).eval().requires_grad_(False)
    options = ExportOptions(SamplingOptions("sr8", steps=20), 512, include_unet_h=False,
                            precision="fp16")
    export_bundle(prior, operator, config, options, tmp_path / "b")
    verdicts = check_bundle_with_tensorrt(tmp_path / "b",
                                          load_manifest(tmp_path / "b").graph_files)
    for verdict in verdicts:
        print(f"\n{verdict.graph}: {verdict.stage} {verdict.message} ({verdict.seconds:.0f} s)")
    assert {v.graph for v in verdicts} == {"vae_encoder", "vae_decoder", "step", "step_fp16"}
    assert all(v.ok for v in verdicts)
