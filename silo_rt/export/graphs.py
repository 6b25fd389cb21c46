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

``vae_encoder`` and ``vae_decoder`` are :mod:`silo_rt.latents`' modules, the very ones the
reference sampler runs; ``vae_encoder`` includes the task's preparation (SR measurements are
upsampled back with antialiased bicubic) and the ±4 clamp for gb/sr, so the runtime needs no
image code. ``unet_h`` and ``step`` run :class:`~silo_rt.step.GuidedStep`.
"""

from __future__ import annotations

from torch import nn

from ..step import GuidedStep


class UNetOperatorGraph(nn.Module):
    """The forward half of a step: ``ε̂``, ``ẑ0`` and ``ŵ = H_θ(ẑ0 | features, t, σ_y)``."""

    input_names = ("z_t", "timestep", "coefficients", "context", "sigma_y")
    output_names = ("eps", "z0", "w_hat")

    def __init__(self, step: GuidedStep):
        super().__init__()
        self.step = step

    def forward(self, z_t, timestep, coefficients, context, sigma_y):
        return self.step.predict(z_t, timestep, coefficients, context, sigma_y)


def step_input_names(cfg: bool) -> tuple[str, ...]:
    names = ("z_t", "timestep", "coefficients", "noise", "w", "eta", "context", "sigma_y")
    return names + ("cfg_scale",) if cfg else names


STEP_OUTPUT_NAMES = ("z_prev", "loss")
