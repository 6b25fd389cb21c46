"""Between images and the prior's latent space: the two VAE passes of a restoration.

These modules are the only implementation of "encode a measurement" and "decode a latent":
the reference sampler, the Eq. 20 training target and the exported ``vae_encoder`` /
``vae_decoder`` graphs all run them, so the reference and the bundle agree by construction.
"""

from __future__ import annotations

import torch
from torch import nn

from .degradations import LATENT_CLAMP, get_degradation
from .resize import DEFAULT_RESIZER


class MeasurementEncoder(nn.Module):
    """measurement ``y`` → ``w = clamp((μ + σ·noise) · scaling_factor)``.

    ``y`` is ``(B, 3, h, w)`` in [-1, 1] (``h = image_size / scale``); the task's
    :meth:`~silo_rt.degradations.Degradation.encoder_input` brings it to full size first
    (SR: antialiased bicubic upsampling). ``noise`` ``(B, C, s, s)`` picks the posterior
    sample; the ±4 clamp applies to tasks with ``clamp_latent`` (gb, sr).
    """

    def __init__(self, prior, task: str, image_size: int, resizer: str = DEFAULT_RESIZER):
        super().__init__()
        self.vae = prior.vae
        self.scaling_factor = prior.scaling_factor
        self.degradation = get_degradation(task, resizer)
        self.image_size = image_size

    def forward(self, measurement, noise):
        x = self.degradation.encoder_input(measurement, self.image_size)
        posterior = self.vae.encode(x).latent_dist
        w = (posterior.mean + posterior.std * noise.to(posterior.mean)) * self.scaling_factor
        return w.clamp(-LATENT_CLAMP, LATENT_CLAMP) if self.degradation.clamp_latent else w


class LatentDecoder(nn.Module):
    """``z0`` ``(B, C, s, s)`` → ``x̂ = clamp(D(z0 / scaling_factor), -1, 1)``, ``(B, 3, H, W)``."""

    def __init__(self, prior):
        super().__init__()
        self.vae = prior.vae
        self.scaling_factor = prior.scaling_factor

    def forward(self, z0):
        return self.vae.decode(z0 / self.scaling_factor).sample.clamp(-1, 1)


@torch.no_grad()
def decode_latent(prior, z0: torch.Tensor) -> torch.Tensor:
    """:class:`LatentDecoder` applied once, without gradients."""
    return LatentDecoder(prior)(z0)
