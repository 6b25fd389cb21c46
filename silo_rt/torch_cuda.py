"""The PyTorch-CUDA backend: the reference guided step on a GPU, eager or as a CUDA graph.

It is the strongest plain-PyTorch path the TensorRT backend is compared with. All per-step
inputs (timesteps, coefficients, noise) are uploaded once; the host synchronises only at the
end. In graph mode one step is captured once per input shape (after three warm-up steps on
a side stream) with static input buffers, and every later run only replays it: each replay
is preceded by three small device-to-device copies that load that step's timestep,
coefficients and noise into the static buffers (a run's fixed inputs, w, the context, η and
σ_y, are copied in once per run).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np
import torch

from .errors import SiloError
from .noise import NoiseSource
from .runtime.finite import check_losses
from .sampler import SamplingOptions, decode_latent, encode_measurement, prepare_sampling
from .step import GuidedStep

WARMUP_STEPS = 3
"""Eager steps before a capture: allocator pools, cuDNN/cuBLAS plans (never in the graph)."""


def require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise SiloError("the torch-cuda backend needs an NVIDIA GPU with a CUDA build of torch")
    return torch.device("cuda")


@contextmanager
def exact_fp32(backends=None):
    """Run the enclosed CUDA work with TF32 off for matmuls and cuDNN; restore afterwards.

    TF32 keeps a 10-bit mantissa: each matmul or convolution is off by ~1e-3 relative, which
    alone would exhaust the 1e-3 parity bound the CPU reference is held to (cuDNN uses TF32
    by default). PyTorch >= 2.9 has ``fp32_precision`` (``"ieee"`` = no TF32), and mixing it
    with the legacy ``allow_tf32`` switches is reported to make Inductor raise, so the new
    API is used wherever it exists, the legacy switches only where it does not.
    ``backends``: ``torch.backends`` (a stand-in in tests).
    """
    backends = backends or torch.backends
    matmul, cudnn = backends.cuda.matmul, backends.cudnn
    conv = getattr(cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        switches = ((matmul, "fp32_precision", "ieee"), (conv, "fp32_precision", "ieee"))
    else:
        switches = ((matmul, "allow_tf32", False), (cudnn, "allow_tf32", False))
    saved = [getattr(owner, name) for owner, name, _ in switches]
    for owner, name, value in switches:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for (owner, name, _), value in zip(switches, saved):
            setattr(owner, name, value)


@contextmanager
def deterministic():
    """Deterministic kernels for parity runs (not for timing): cuDNN's backward-data
    algorithms and memory-efficient attention's backward are not bit-reproducible, which
    makes a graph-vs-eager comparison at 1e-5 flaky. Restores every setting afterwards."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility
    cudnn.deterministic, cudnn.benchmark = True, False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with sdpa_kernel([SDPBackend.MATH]):  # attention's backward, deterministic
            yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])
        if saved[4] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


class TorchCudaGraphs:
    """Capture and replay with ``torch.cuda`` (tests substitute a CPU stand-in)."""

    def capture(self, fn, warmup: int = WARMUP_STEPS):
        """Warm ``fn`` up on a side stream, capture one call; returns ``(replay, outputs)``:
        each ``replay()`` re-runs the captured kernels, writing into ``outputs``."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = fn()
        return graph.replay, outputs


class CudaStepLoop:
    """Runs T guided steps on the GPU.

    Args:
        step: a :class:`~silo_rt.step.GuidedStep` whose prior and operator are on the GPU.
        use_graph: capture one step in a CUDA graph (once per input shape) and replay it.
        graphs: the capture mechanism (default :class:`TorchCudaGraphs`).
    """

    def __init__(self, step: GuidedStep, use_graph: bool, graphs=None):
        self.step = step
        self.use_graph = use_graph
        self.graphs = graphs or TorchCudaGraphs()
        self._captured: dict[tuple, tuple] = {}  # shapes -> (replay, static inputs, outputs)

    @property
    def captures(self) -> int:
        """How many graphs this loop has captured (one per input shape)."""
        return len(self._captured)

    def run(self, z, w, context, timesteps: np.ndarray, coefficients: np.ndarray,
            noise: np.ndarray, eta: float, sigma_y: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the final latent ``z`` (shape of ``z``) and the per-step losses ``(T,)``
        (both on ``z``'s device); no TF32."""
        with exact_fp32():
            return self._run(z, w, context, timesteps, coefficients, noise, eta, sigma_y)

    def _run(self, z, w, context, timesteps, coefficients, noise, eta, sigma_y):
        device = z.device
        steps = len(timesteps)
        ts = torch.from_numpy(np.asarray(timesteps, np.float32).reshape(steps, 1)).to(device)
        cs = torch.from_numpy(np.asarray(coefficients, np.float32)).to(device)
        ns = torch.from_numpy(np.asarray(noise, np.float32)).to(device)
        eta_t = torch.tensor([eta], device=device)
        sigma_t = torch.tensor([sigma_y], device=device)
        losses = torch.empty(steps, device=device)
        if not self.use_graph:
            for i in range(steps):
                z, losses[i] = self.step(z, ts[i], cs[i], ns[i], w, eta_t, context, sigma_t)
            return z, losses
        fixed = {"z": z, "w": w, "context": context, "eta": eta_t, "sigma": sigma_t}
        replay, static, (out_z, out_loss) = self._graph_for(fixed, ts[0], cs[0], ns[0])
        for i in range(steps):
            static["t"].copy_(ts[i])
            static["c"].copy_(cs[i])
            static["n"].copy_(ns[i])
            replay()
            static["z"].copy_(out_z)
            losses[i] = out_loss
        return static["z"].clone(), losses  # the static buffer is reused by the next run

    def _graph_for(self, fixed: dict, t, c, n):
        """The captured step for these input shapes (captured now if new), its static
        inputs loaded with this run's fixed inputs."""
        key = tuple((name, tuple(v.shape), v.dtype, str(v.device))
                    for name, v in (*fixed.items(), ("t", t), ("c", c), ("n", n)))
        if key in self._captured:
            replay, static, outputs = self._captured[key]
            for name, value in fixed.items():
                static[name].copy_(value)
            return replay, static, outputs
        static = {name: value.clone() for name, value in fixed.items()}
        static.update(t=t.clone(), c=c.clone(), n=n.clone())

        def once():
            return self.step(static["z"], static["t"], static["c"], static["n"], static["w"],
                             static["eta"], static["context"], static["sigma"])

        replay, outputs = self.graphs.capture(once)
        self._captured[key] = (replay, static, outputs)
        return replay, static, outputs


def restore_cuda(prior, operator, y: torch.Tensor, options: SamplingOptions,
                 use_graph: bool = True) -> torch.Tensor:
    """Algorithm 1 on the GPU (same noise as every backend, TF32 off); returns ``x̂`` on the
    CPU."""
    with exact_fp32():
        return _restore_cuda(prior, operator, y, options, use_graph)


def _restore_cuda(prior, operator, y, options, use_graph):
    device = require_cuda()
    options.validate()
    for module in (prior.unet, prior.vae, prior.text_encoder, operator):
        module.to(device)
    noise = NoiseSource(options.seed)
    w = encode_measurement(prior, options.task, y.to(device), noise)
    start = prepare_sampling(prior, options, tuple(w.shape), noise)
    loop = CudaStepLoop(GuidedStep(prior, operator, options.cfg_scale), use_graph)
    z0, losses = loop.run(start.z, w, start.context, start.schedule.timesteps,
                          start.schedule.coefficients, start.step_noise,
                          options.resolved_eta, options.sigma_y)
    check_losses(losses.cpu().numpy(), start.schedule.timesteps)
    if not torch.isfinite(z0).all():
        raise SiloError("non-finite value in the final latent")
    return decode_latent(prior, z0).cpu()
