"""GPU checks (``pytest -m gpu``; skipped without CUDA / TensorRT).

Parity: the PyTorch-CUDA step (eager and CUDA graph) and TensorRT FP32 against the CPU
reference (≤ 1e-3 relative); TensorRT FP16 against FP32 within a looser bound; CUDA-graph
replay equals eager execution; a NaN is reported with its step index.
"""

import numpy as np
import pytest
import torch

from silo_rt.errors import SiloError
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.sampler import SamplingOptions, restore

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
FP16_TOLERANCE = 5e-2  # relative, end to end over 12 steps; see the issue note for the
#                        measured value (FP16 UNet activations, FP32 tail and VAE)


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
    reference = restore(tiny_prior, operator, "readout", torch.from_numpy(y), options).numpy()
    return {"config": config, "operator": operator, "y": y, "options": options,
            "reference": reference}


def _cuda_restore(tiny_prior, setup, use_graph):
    import copy

    from silo_rt.torch_cuda import restore_cuda

    prior = copy.deepcopy(tiny_prior)
    operator = copy.deepcopy(setup["operator"])
    return restore_cuda(prior, operator, "readout", torch.from_numpy(setup["y"]),
                        setup["options"], use_graph).numpy()


def test_torch_cuda_matches_cpu_reference_and_graph_matches_eager(tiny_prior, setup):
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
    loop = CudaStepLoop(GuidedStep(prior, operator, "readout"), use_graph=True)
    shape = prior.latent_shape(64)
    z = torch.full(shape, float("nan"), device="cuda")
    ctx = prior.encode_prompt("").cuda()
    _, losses = loop.run(z, torch.zeros(shape, device="cuda"), ctx, np.array([999, 998]),
                         np.ones((2, 5), np.float32), np.zeros((2, *shape), np.float32),
                         0.5, 0.02)
    with pytest.raises(SiloError, match="step 0"):
        check_losses(losses.cpu().numpy(), [999, 998])


@pytest.fixture(scope="module")
def bundle(tiny_prior, setup, tmp_path_factory):
    from silo_rt.export import ExportOptions, export_bundle

    out = tmp_path_factory.mktemp("gpu") / "bundle"
    export_bundle(tiny_prior, setup["operator"], setup["config"],
                  ExportOptions(setup["options"], 64), out)
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_the_reference(bundle, setup, precision):
    from silo_rt.runtime import BundleRunner
    from silo_rt.runtime.restore import tensorrt_available

    if not tensorrt_available():
        pytest.skip("TensorRT is not usable here")
    runner = BundleRunner(bundle, backend="trt", precision=precision)
    ours = runner.restore(setup["y"], seed=setup["options"].seed)
    error = rel(ours, setup["reference"])
    print(f"\nTensorRT {precision} vs reference: {error:.2e}")
    assert error < (1e-3 if precision == "fp32" else FP16_TOLERANCE)
