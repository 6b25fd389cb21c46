"""The modules that become a bundle's ONNX graphs (static shapes, fp32, frozen weights).

Their inputs and outputs (names, order, shapes, dtypes) are :mod:`silo_rt.runtime.step_io`'s
contract (``GRAPHS``): export names them from it and every backend binds them by it.

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

    def __init__(self, step: GuidedStep):
        super().__init__()
        self.step = step

    def forward(self, z_t, timestep, coefficients, context, sigma_y):
        return self.step.predict(z_t, timestep, coefficients, context, sigma_y)
