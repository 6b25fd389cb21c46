"""The PyTorch-CUDA loop's control flow on a CPU: a CUDA graph is captured once per input
shape and only replayed afterwards (a stand-in for ``torch.cuda``'s graphs re-runs the
captured function into the captured outputs, as a replay does); TF32 is switched off through
PyTorch's current API; parity runs are deterministic."""

import warnings
from types import SimpleNamespace

import numpy as np
import torch

from silo_rt.torch_cuda import CudaStepLoop, deterministic, exact_fp32


class CpuGraphs:
    """``TorchCudaGraphs`` on a CPU: capture = warm-up calls + one call whose outputs a
    replay overwrites in place (what a CUDA graph replay does to its output buffers)."""

    def __init__(self):
        self.captures = self.warmups = 0

    def capture(self, fn, warmup=3):
        self.captures += 1
        for _ in range(warmup):
            self.warmups += 1
            fn()
        outputs = fn()

        def replay():
            for out, new in zip(outputs, fn()):
                out.copy_(new)

        return replay, outputs


class ToyStep:
    """A guided step's signature and data flow; every input changes the result."""

    def __init__(self):
        self.calls = 0

    def __call__(self, z, t, c, n, w, eta, context, sigma):
        self.calls += 1
        z_prev = c[0] * z + c[1] * n * eta + 1e-3 * t * w + context.mean() - sigma
        return z_prev, (z_prev - w).square().mean()


def _inputs(seed, shape=(1, 4, 8, 8), steps=5):
    rng = np.random.default_rng(seed)
    return (torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)),
            torch.from_numpy(rng.standard_normal(shape, dtype=np.float32)),
            torch.from_numpy(rng.standard_normal((1, 7, 16), dtype=np.float32)),
            np.arange(steps * 100, 0, -100), rng.uniform(0.5, 1, (steps, 5)).astype(np.float32),
            rng.standard_normal((steps, *shape), dtype=np.float32), 0.3 + seed, 0.01 * seed)


def test_a_cuda_graph_is_captured_once_per_shape_and_then_only_replayed():
    graphs, step = CpuGraphs(), ToyStep()
    loop = CudaStepLoop(step, use_graph=True, graphs=graphs)
    eager = CudaStepLoop(ToyStep(), use_graph=False)
    for seed in (1, 2):  # new z, w, context, η, σ_y each run: all must reach the graph
        z, losses = loop.run(*_inputs(seed))
        z_ref, losses_ref = eager.run(*_inputs(seed))
        torch.testing.assert_close(z, z_ref)
        torch.testing.assert_close(losses, losses_ref)
    assert loop.captures == graphs.captures == 1 and graphs.warmups == 3
    assert step.calls == 3 + 1 + 2 * 5  # warm-up, capture, one call per replayed step
    loop.run(*_inputs(3, shape=(1, 4, 16, 16)))  # another resolution: one more graph
    assert loop.captures == 2
    first, _ = loop.run(*_inputs(1))
    again, _ = loop.run(*_inputs(1))
    assert first.data_ptr() != again.data_ptr()  # results are not the reused static buffer


def test_tf32_is_switched_off_with_the_current_api_and_restored():
    matmul, conv = torch.backends.cuda.matmul, torch.backends.cudnn.conv
    before = (matmul.fp32_precision, conv.fp32_precision)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no legacy allow_tf32 deprecation on this torch
        with exact_fp32():
            assert (matmul.fp32_precision, conv.fp32_precision) == ("ieee", "ieee")
    assert (matmul.fp32_precision, conv.fp32_precision) == before
    legacy = SimpleNamespace(cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=True)),
                             cudnn=SimpleNamespace(allow_tf32=True))  # torch < 2.9
    with exact_fp32(legacy):
        assert (legacy.cuda.matmul.allow_tf32, legacy.cudnn.allow_tf32) == (False, False)
    assert (legacy.cuda.matmul.allow_tf32, legacy.cudnn.allow_tf32) == (True, True)


def test_parity_runs_are_deterministic_and_settings_come_back(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    cudnn = torch.backends.cudnn
    before = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    with deterministic():
        assert cudnn.deterministic and not cudnn.benchmark
        assert torch.are_deterministic_algorithms_enabled()
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert (cudnn.deterministic, cudnn.benchmark,
            torch.are_deterministic_algorithms_enabled()) == before
    assert "CUBLAS_WORKSPACE_CONFIG" not in __import__("os").environ

