"""A bundle's graphs seen as a :class:`~silo_rt.tiled.TileModel`: the tile is the bundle's
image size, a call takes the bundle's batch, and a step is one step of its schedule."""

from __future__ import annotations

import numpy as np

from ..backends import GraphBackend
from . import step_io


class BundleTileModel:
    """One restoration's settings bound to a bundle's graphs, one tile batch per call.

    Args:
        graphs: the opened backend (:class:`~silo_rt.backends.GraphBackend`).
        manifest: the bundle's :class:`~silo_rt.bundle_format.Manifest`.
        scale: the task's measurement scale.
        context: ``(B', L, D)`` float32 text context.
        timesteps, coefficients: the schedule, ``(T,)`` and ``(T, 5)``.
        eta, sigma_y, cfg_scale: as for :meth:`GraphBackend.run_steps`.
    """

    def __init__(self, graphs: GraphBackend, manifest, scale: int, context: np.ndarray,
                 timesteps: np.ndarray, coefficients: np.ndarray, eta: float,
                 sigma_y: float, cfg_scale: float | None):
        self.graphs = graphs
        self.batch = int(manifest.measurement_shape[0])
        self.tile_px = int(manifest.image_size)
        self.scale = scale
        self.latent_channels = int(manifest.latent_shape[1])
        self.vae_scale = self.tile_px // int(manifest.latent_shape[-1])
        self.init_noise_sigma = float(manifest.init_noise_sigma)
        self.timesteps = np.asarray(timesteps)
        self._context = context
        self._coefficients = np.asarray(coefficients, np.float32)
        self._guidance = (eta, sigma_y, cfg_scale)

    def encode(self, y: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self.graphs.run(step_io.VAE_ENCODER, **step_io.encoder_inputs(y, noise))[0]

    def step(self, index: int, z: np.ndarray, w: np.ndarray, noise: np.ndarray
             ) -> tuple[np.ndarray, float]:
        losses: list[float] = []
        one = slice(index, index + 1)
        z_prev = self.graphs.run_steps(
            z, w, self._context, self.timesteps[one], self._coefficients[one], noise[None],
            *self._guidance, callback=lambda i, t, latent, loss: losses.append(loss))
        return z_prev, losses[0]

    def decode(self, z: np.ndarray) -> np.ndarray:
        return self.graphs.run(step_io.VAE_DECODER, **step_io.decoder_inputs(z))[0]
