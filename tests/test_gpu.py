"""GPU checks (``pytest -m gpu``; skipped without CUDA / TensorRT).

Parity: the PyTorch-CUDA step (eager and CUDA graph, TF32 off, deterministic kernels) and
TensorRT FP32 (TF32 cleared) against the CPU reference (≤ 1e-3 relative); TensorRT FP16
(the bundle's ``step_fp16`` graph) against the reference within a looser bound; CUDA-graph
replay equals eager execution; a NaN is reported with its step index; a TensorRT runner
captures its step graphs once, replays them for every restoration and frees everything on
close.
"""

import numpy as np
import pytest
import torch

from silo_rt.errors import SiloError
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.sampler import SamplingOptions, restore

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
# Relative, end to end over this file's 12-step tiny readout restoration. Measured on the
# CPU with the same bundle's step_fp16 through ONNX Runtime (benchmarks/fp16-parity.md):
# 2.0e-4 against the fp32 reference (per step at most 1.4e-4). TensorRT's fp16 tactics may
# accumulate in fp16 where ONNX Runtime's CPU kernels do not, so the bound allows 25x that.
FP16_TOLERANCE = 5e-3


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def setup(tiny_prior):
    torch.manual_seed(0)
    config = OperatorConfig.for_prior(tiny_prior, "readout", "sr4")
    operator = build_operator(config).eval().requires_grad_(False)
    y = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    options = SamplingOptions("sr4", steps=12, seed=2)
    reference = restore(tiny_prior, operator, torch.from_numpy(y), options).numpy()
    return {"config": config, "operator": operator, "y": y, "options": options,
            "reference": reference}


def _cuda_restore(tiny_prior, setup, use_graph):
    import copy

    from silo_rt.torch_cuda import restore_cuda

    prior = copy.deepcopy(tiny_prior)
    operator = copy.deepcopy(setup["operator"])
    return restore_cuda(prior, operator, torch.from_numpy(setup["y"]),
                        setup["options"], use_graph).numpy()


def test_torch_cuda_matches_cpu_reference_and_graph_matches_eager(tiny_prior, setup):
    from silo_rt.torch_cuda import deterministic

    with deterministic():  # cuDNN / attention backward kernels vary run to run otherwise
        eager = _cuda_restore(tiny_prior, setup, use_graph=False)
        graph = _cuda_restore(tiny_prior, setup, use_graph=True)
    print(f"\ntorch-cuda eager vs CPU: {rel(eager, setup['reference']):.2e}; "
          f"graph vs eager: {rel(graph, eager):.2e}")
    assert rel(eager, setup["reference"]) < 1e-3
    assert rel(graph, eager) < 1e-5


def test_nan_is_reported_with_step_index(tiny_prior, setup):
    import copy

    from silo_rt.runtime.finite import check_losses
    from silo_rt.step import GuidedStep
    from silo_rt.torch_cuda import CudaStepLoop

    prior = copy.deepcopy(tiny_prior)
    prior.unet.cuda()
    operator = copy.deepcopy(setup["operator"]).cuda()
    loop = CudaStepLoop(GuidedStep(prior, operator), use_graph=True)
    shape = prior.latent_shape(64)
    z = torch.full(shape, float("nan"), device="cuda")
    ctx = prior.encode_prompt("").cuda()
    _, losses = loop.run(z, torch.zeros(shape, device="cuda"), ctx, np.array([999, 998]),
                         np.ones((2, 5), np.float32), np.zeros((2, *shape), np.float32),
                         0.5, 0.02)
    with pytest.raises(SiloError, match="step 0"):
        check_losses(losses.cpu().numpy(), [999, 998])
    loop.run(z, torch.zeros(shape, device="cuda"), ctx, np.array([999, 998]),
             np.ones((2, 5), np.float32), np.zeros((2, *shape), np.float32), 0.5, 0.02)
    assert loop.captures == 1  # the second run replayed the first run's graph


def _require_tensorrt():
    from silo_rt.runtime.restore import tensorrt_available

    if not tensorrt_available():
        pytest.skip("TensorRT is not usable here")


@pytest.fixture(scope="module")
def bundle(tiny_prior, setup, tmp_path_factory):
    from silo_rt.export import ExportOptions, export_bundle

    _require_tensorrt()  # before the export: it needs onnxscript, which may be absent
    out = tmp_path_factory.mktemp("gpu") / "bundle"
    export_bundle(tiny_prior, setup["operator"], setup["config"],
                  ExportOptions(setup["options"], 64, precision="fp16"), out)
    return out


def _runner(bundle, precision):
    from silo_rt.bundle_format import read_manifest
    from silo_rt.runtime import BundleRunner

    if precision == "fp16" and "step_fp16" not in read_manifest(bundle)["graphs"]:
        pytest.skip("this bundle was exported without --precision fp16")
    return BundleRunner(bundle, backend="trt", precision=precision)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_the_reference(bundle, setup, precision):
    runner = _runner(bundle, precision)
    try:
        ours = runner.restore(setup["y"], seed=setup["options"].seed)
    finally:
        runner.graphs.close()
    error = rel(ours, setup["reference"])
    print(f"\nTensorRT {precision} vs reference: {error:.2e}")
    assert error < (1e-3 if precision == "fp32" else FP16_TOLERANCE)


def test_tensorrt_graphs_are_captured_once_and_freed(bundle, setup):
    runner = _runner(bundle, "fp32")
    with runner.graphs as graphs:
        first = runner.restore(setup["y"], seed=setup["options"].seed)
        captured = graphs._step_graphs
        assert captured is not None and len(captured) == 2
        second = runner.restore(setup["y"], seed=setup["options"].seed)
        assert graphs._step_graphs is captured  # replayed, not re-captured
        timesteps, coefficients = runner.schedule()
        steps = len(timesteps) + 3  # a longer schedule: the tables grow, the graphs stay
        shape = tuple(runner.manifest.latent_shape)
        z = np.zeros(shape, np.float32)
        graphs.run_steps(z, z, runner.context, np.resize(timesteps, steps),
                         np.resize(coefficients, (steps, 5)),
                         np.zeros((steps, *shape), np.float32), 0.5, 0.02)
        assert graphs._step_graphs is captured and graphs._capacity == steps
    np.testing.assert_array_equal(first, second)
    assert graphs.stream is None and not graphs.engines and graphs.activations is None
