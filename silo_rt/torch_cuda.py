"""The PyTorch-CUDA backend: the reference guided step on a GPU, eager or as a CUDA graph.

It is the strongest plain-PyTorch path the TensorRT backend is compared with. All per-step
inputs (timesteps, coefficients, noise) are uploaded once; the host synchronises only at the
end. In graph mode one step is captured (after a warm-up on a side stream) with static input
buffers and replayed T times; each replay is preceded by three small device-to-device copies
that load that step's timestep, coefficients and noise into the static buffers.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from .errors import SiloError
from .noise import NoiseSource
from .runtime.finite import check_losses
from .sampler import SamplingOptions, decode_latent, encode_measurement, prepare_sampling
from .step import GuidedStep


def require_cuda() -> torch.device:
    if not torch.cuda.is_available():
        raise SiloError("the torch-cuda backend needs an NVIDIA GPU with a CUDA build of torch")
    return torch.device("cuda")


@contextmanager
def exact_fp32():
    """Run the enclosed CUDA work with TF32 off for matmuls and cuDNN; restore afterwards.

    TF32 keeps a 10-bit mantissa: each matmul or convolution is off by ~1e-3 relative, which
    alone would exhaust the 1e-3 parity bound the CPU reference is held to (cuDNN uses TF32
    by default).
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32)
    matmul.allow_tf32 = cudnn.allow_tf32 = False
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved


class CudaStepLoop:
    """Runs T guided steps on the GPU.

    Args:
        step: a :class:`~silo_rt.step.GuidedStep` whose prior and operator are on the GPU.
        use_graph: capture one step in a CUDA graph and replay it.
    """

    def __init__(self, step: GuidedStep, use_graph: bool):
        self.step = step
        self.use_graph = use_graph
        self._graph = None

    def run(self, z, w, context, timesteps: np.ndarray, coefficients: np.ndarray,
            noise: np.ndarray, eta: float, sigma_y: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the final latent and the per-step losses (both on the GPU); no TF32."""
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
        static = {"z": z.clone(), "t": ts[0].clone(), "c": cs[0].clone(), "n": ns[0].clone()}

        def once():
            return self.step(static["z"], static["t"], static["c"], static["n"], w, eta_t,
                             context, sigma_t)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up: allocator pools, cuDNN/cuBLAS plans
                once()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out_z, out_loss = once()
        for i in range(steps):
            static["t"].copy_(ts[i])
            static["c"].copy_(cs[i])
            static["n"].copy_(ns[i])
            graph.replay()
            static["z"].copy_(out_z)
            losses[i] = out_loss
        return static["z"], losses


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
