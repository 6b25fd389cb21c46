"""Decoder-in-the-loop baselines on the same prior, for side-by-side time and quality.

Each differentiates through the VAE decoder (and, for GML-DPS/PSLD, the encoder) at every
step, which is what SILO avoids. With ``ẑ0`` from Eq. 12 and ``x̂0 = D(ẑ0)``:

* LDPS (Eq. 11):    ``L = ω‖y − A(x̂0)‖``
* GML-DPS (Eq. 13): ``L = ω‖y − A(x̂0)‖ + γ‖ẑ0 − E(x̂0)‖``
* PSLD (Eq. 14):    ``L = ω‖y − A(x̂0)‖ + γ‖ẑ0 − E(Aᵀy + (I − AᵀA)x̂0)‖``

and ``z_{t−1} = z'_{t−1} − ∇_{z_t} L``. Defaults follow PSLD's public code (ω = 0.1,
γ = 0.01; LDPS is its γ = 0 case). The encoder in the loop uses the posterior mean.

The paper's fourth baseline, ReSample (DDIM with this LDPS step, hard data consistency and
stochastic resampling), is :mod:`silo_rt.resample`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .degradations import get_degradation
from .errors import SiloError
from .noise import NoiseSource
from .sampler import SamplingOptions, decode_latent, image_size_for, prepare_sampling, run_steps

BASELINES = ("ldps", "gml-dps", "psld")


@dataclass
class BaselineWeights:
    """Step sizes: ω on the measurement term, γ on the gluing term."""

    omega: float = 0.1
    gamma: float = 0.01


class DecoderGuidedStep(torch.nn.Module):
    """One LDPS / GML-DPS / PSLD step (same inputs as :class:`~silo_rt.step.GuidedStep`,
    with the pixel-space measurement ``y`` in place of ``w``)."""

    def __init__(self, prior, task: str, method: str, weights: BaselineWeights):
        super().__init__()
        if method not in BASELINES:
            raise SiloError(f"unknown baseline {method!r}; choose one of {', '.join(BASELINES)}")
        self.prior = prior
        self.method = method
        self.weights = weights
        self.degradation = get_degradation(task)
        if method == "psld" and not self.degradation.linear:
            raise SiloError(f"PSLD needs a linear degradation; {task!r} is not")

    def _encode(self, x):
        return self.prior.vae.encode(x).latent_dist.mean * self.prior.scaling_factor

    def loss(self, z_t, timestep, coefficients, y, context):
        eps = self.prior.unet(z_t, timestep, encoder_hidden_states=context).sample
        z0 = coefficients[0] * z_t + coefficients[1] * eps
        x0 = self.prior.vae.decode(z0 / self.prior.scaling_factor).sample
        loss = self.weights.omega * torch.linalg.vector_norm(y - self.degradation(x0))
        if self.method == "gml-dps":
            loss = loss + self.weights.gamma * torch.linalg.vector_norm(z0 - self._encode(x0))
        elif self.method == "psld":
            size = x0.shape[-1]
            a = self.degradation
            glued = a.transpose(y, size) + x0 - a.transpose(a(x0), size)
            loss = loss + self.weights.gamma * torch.linalg.vector_norm(z0 - self._encode(glued))
        return loss, (z0, loss)

    def forward(self, z_t, timestep, coefficients, noise, y, context):
        grad, (z0, loss) = torch.func.grad(self.loss, argnums=0, has_aux=True)(
            z_t, timestep, coefficients, y, context)
        z_prev = coefficients[2] * z0 + coefficients[3] * z_t + coefficients[4] * noise - grad
        return z_prev, loss


def restore_baseline(prior, method: str, y: torch.Tensor, options: SamplingOptions,
                     weights: BaselineWeights | None = None, callback=None) -> torch.Tensor:
    """Restore ``y`` ``(1, 3, h, w)`` with a decoder-in-the-loop baseline; returns ``x̂``."""
    options.validate()
    if options.cfg_scale > 1.0:
        raise SiloError("the decoder-in-the-loop baselines run without CFG (--cfg 1)")
    step = DecoderGuidedStep(prior, options.task, method, weights or BaselineWeights())
    noise = NoiseSource(options.seed)
    shape = prior.latent_shape(image_size_for(options.task, y), y.shape[0])
    start = prepare_sampling(prior, options, shape, noise)

    def baseline_step(z_t, timestep, coefficients, n):
        return step(z_t, timestep, coefficients, n, y, start.context)

    return decode_latent(prior, run_steps(start.z, start.schedule, start.step_noise,
                                          baseline_step, callback))
