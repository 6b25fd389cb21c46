"""The PyTorch reference as a :class:`~silo_rt.tiled.TileModel`: the same encoder, guided
step and decoder the exporter traces, one tile batch per call, so a tiled reference
restoration and a tiled bundle restoration compute the same thing."""

from __future__ import annotations

import numpy as np
import torch

from .latents import MeasurementEncoder, decode_latent
from .noise import NoiseSource
from .sampler import SamplingOptions, batch_context
from .schedule import from_scheduler
from .step import GuidedStep
from .tiled import TiledRestoration
from .tiling import DEFAULT_OVERLAP


class ReferenceTileModel:
    """Prior + operator at a tile of ``tile_px`` image pixels, ``batch`` tiles per call.

    Args:
        prior: :class:`~silo_rt.prior.LatentPrior`.
        operator: the frozen H_θ (trained at ``tile_px``).
        options: the restoration's :class:`~silo_rt.sampler.SamplingOptions` (validated).
        tile_px: tile side in image pixels (the operator's native size).
        batch: tiles per call.
    """

    def __init__(self, prior, operator, options: SamplingOptions, tile_px: int,
                 batch: int = 1):
        from .degradations import get_degradation

        self.batch = batch
        self.tile_px = tile_px
        self.scale = get_degradation(options.task).scale
        self.vae_scale = prior.vae_scale
        self.latent_channels = prior.latent_channels
        self.schedule = from_scheduler(prior.scheduler, options.steps, options.sampler)
        self.timesteps = self.schedule.timesteps
        self.init_noise_sigma = float(prior.scheduler.init_noise_sigma)
        self._prior = prior
        self._device = prior.unet.device
        self._encoder = MeasurementEncoder(prior, options.task, tile_px)
        self._step = GuidedStep(prior, operator, options.cfg_scale)
        self._context = batch_context(prior.encode_prompt(options.prompt, options.cfg_scale),
                                      batch)
        self._eta = torch.tensor([options.resolved_eta], device=self._device)
        self._sigma_y = torch.tensor([options.sigma_y], device=self._device)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array, np.float32)).to(self._device)

    @torch.no_grad()
    def encode(self, y: np.ndarray, noise: np.ndarray) -> np.ndarray:
        return self._encoder(self._tensor(y), self._tensor(noise)).cpu().numpy()

    def step(self, index: int, z: np.ndarray, w: np.ndarray, noise: np.ndarray
             ) -> tuple[np.ndarray, float]:
        timestep = self._tensor(self.schedule.timesteps[index:index + 1].astype(np.float32))
        coefficients = self._tensor(self.schedule.coefficients[index])
        z_prev, loss = self._step(self._tensor(z), timestep, coefficients, self._tensor(noise),
                                  self._tensor(w), self._eta, self._context, self._sigma_y)
        return z_prev.detach().cpu().numpy(), float(loss)

    def decode(self, z: np.ndarray) -> np.ndarray:
        return decode_latent(self._prior, self._tensor(z)).cpu().numpy()


def restore_by_tiles(prior, operator, y: np.ndarray, options: SamplingOptions, tile_px: int,
                     overlap: int | None = DEFAULT_OVERLAP, callback=None, log=lambda line: None
                     ) -> np.ndarray:
    """Restore ``y`` ``(N, 3, h, w)`` of any size with the reference by tiles of ``tile_px``
    (on the device the prior is on); returns ``(N, 3, h·s, w·s)`` float32 in [-1, 1].

    The task must be tileable (:meth:`~silo_rt.degradations.Degradation.check_tileable`).
    """
    from .degradations import get_degradation

    options.validate()
    get_degradation(options.task).check_tileable(
        f"the operator is for {tile_px}px images, this measurement is "
        f"{y.shape[-1]}x{y.shape[-2]}")
    model = ReferenceTileModel(prior, operator, options, tile_px)
    tiled = TiledRestoration(model, y, overlap)
    log(f"tiles: {tiled.describe()}")
    return tiled.run(NoiseSource(options.seed), callback)
