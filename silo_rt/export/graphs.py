"""The modules that become a bundle's ONNX graphs (static shapes, fp32, frozen weights).

=============  ==========================================  ==============================
graph          inputs                                      outputs
=============  ==========================================  ==============================
vae_encoder    measurement (B,3,h,w), noise (B,C,s,s)       w (B,C,s,s)
vae_decoder    z0 (B,C,s,s)                                image (B,3,H,W) in [-1, 1]
unet_h         z_t, timestep, coefficients, context,        eps, z0, w_hat (B,C,s,s)
               sigma_y
step           z_t, timestep, coefficients, noise, w, eta,  z_prev (B,C,s,s), loss ()
               context, sigma_y [, cfg_scale]
=============  ==========================================  ==============================

``vae_encoder`` includes the task's preparation (SR measurements are upsampled back with
antialiased bicubic) and the ±4 clamp for gb/sr, so the runtime needs no image code.
"""

from __future__ import annotations

from torch import nn

from ..degradations import get_degradation
from ..step import GuidedStep
from ..tasks import LATENT_CLAMP, get_task


class VaeEncoderGraph(nn.Module):
    """measurement → ``w = clamp((mean + std·noise) · scaling_factor)``."""

    input_names = ("measurement", "noise")
    output_names = ("w",)

    def __init__(self, prior, task: str, image_size: int):
        super().__init__()
        self.encoder = prior.vae
        self.scaling_factor = prior.scaling_factor
        self.degradation = get_degradation(task)
        self.clamp = get_task(task).clamp_latent
        self.image_size = image_size

    def forward(self, measurement, noise):
        x = self.degradation.encoder_input(measurement, self.image_size)
        posterior = self.encoder.encode(x).latent_dist
        w = (posterior.mean + posterior.std * noise) * self.scaling_factor
        return w.clamp(-LATENT_CLAMP, LATENT_CLAMP) if self.clamp else w


class VaeDecoderGraph(nn.Module):
    """``z0`` → ``clamp(D(z0 / scaling_factor), -1, 1)``."""

    input_names = ("z0",)
    output_names = ("image",)

    def __init__(self, prior):
        super().__init__()
        self.vae = prior.vae
        self.scaling_factor = prior.scaling_factor

    def forward(self, z0):
        return self.vae.decode(z0 / self.scaling_factor).sample.clamp(-1, 1)


class UNetOperatorGraph(nn.Module):
    """The forward half of a step: ``ε̂``, ``ẑ0`` and ``ŵ = H_θ(ẑ0 | features, t, σ_y)``."""

    input_names = ("z_t", "timestep", "coefficients", "context", "sigma_y")
    output_names = ("eps", "z0", "w_hat")

    def __init__(self, step: GuidedStep):
        super().__init__()
        self.step = step

    def forward(self, z_t, timestep, coefficients, context, sigma_y):
        step = self.step
        eps, features = step.predict_noise(z_t, timestep, context)
        z0 = coefficients[0] * z_t + coefficients[1] * eps
        needs_time = getattr(step.operator, "uses_timestep", False)
        temb = step._prior.timestep_embedding(timestep) if needs_time else None
        w_hat = step.operator(z0, step._prior.sigma_embedding(sigma_y), temb, features)
        return eps, z0, w_hat


def step_input_names(cfg: bool) -> tuple[str, ...]:
    names = ("z_t", "timestep", "coefficients", "noise", "w", "eta", "context", "sigma_y")
    return names + ("cfg_scale",) if cfg else names


STEP_OUTPUT_NAMES = ("z_prev", "loss")
