"""Tiled Algorithm 1: restore a measurement of any size with graphs of one fixed tile size
(numpy only; the runtime and the PyTorch reference run the same loop).

MultiDiffusion (Bar-Tal et al., 2023) averages overlapping latent windows after every
denoising step; here every window takes a whole *guided* SILO step:

1. the measurement is padded (:class:`~silo_rt.tiling.Padding`) and cut into the plan's
   tiles; each tile is encoded on its own, so each tile's guidance target ``w`` is exactly
   the encoding H_θ was trained to imitate for that window (no blended ``w`` is needed);
2. every step runs the guided step on each tile (batched up to the graph's batch) and
   blends the tiles' ``z_{t-1}`` with the plan's weights;
3. the result is decoded by tiles and blended in pixel space, then cropped.

The encoder noise, ``z_T`` and each step's posterior noise are drawn as full-size fields
from one :class:`~silo_rt.noise.NoiseSource` and cropped per tile, so the result does not
depend on how tiles are batched, and a measurement of exactly one tile draws the same
numbers as an untiled restoration. Memory: the full latent, one noise field, the tiles'
encodings and the output image; the graphs only ever see one batch of tiles.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .errors import SiloError
from .noise import NoiseSource
from .tiling import DEFAULT_OVERLAP, Padding, TilePlan, plan_for


class TileModel(Protocol):
    """The three graphs of a restoration at one fixed tile size.

    Attributes:
        batch: tiles per call (calls always get exactly this many).
        tile_px: tile side in image pixels.
        scale: image-to-measurement factor of the task (1, 4, 8).
        vae_scale: image pixels per latent pixel (8).
        latent_channels: C.
        timesteps: ``(T,)`` the schedule's timesteps (step ``i`` runs ``timesteps[i]``).
        init_noise_sigma: the scale of ``z_T``.
    """

    batch: int
    tile_px: int
    scale: int
    vae_scale: int
    latent_channels: int
    timesteps: np.ndarray
    init_noise_sigma: float

    def encode(self, y: np.ndarray, noise: np.ndarray) -> np.ndarray:
        """``(b, 3, tile_px/scale, …)`` measurement tiles + ``(b, C, T, T)`` encoder noise →
        ``w`` ``(b, C, T, T)``."""

    def step(self, index: int, z: np.ndarray, w: np.ndarray, noise: np.ndarray
             ) -> tuple[np.ndarray, float]:
        """Guided step ``index`` of the schedule on ``(b, C, T, T)`` tiles: ``(z_{t-1},
        loss)``."""

    def decode(self, z: np.ndarray) -> np.ndarray:
        """``(b, C, T, T)`` → ``(b, 3, tile_px, tile_px)`` in [-1, 1]."""


@dataclass(frozen=True)
class TiledJob:
    """One (image, tile) pair of a restoration."""

    image: int
    tile: int


def _batches(jobs: list[TiledJob], size: int) -> Iterator[list[TiledJob]]:
    for start in range(0, len(jobs), size):
        yield jobs[start:start + size]


def _stack(arrays: list[np.ndarray], batch: int) -> np.ndarray:
    """``arrays`` stacked and padded to ``batch`` with copies of the last (those outputs are
    dropped; a copy keeps the padding's numbers ordinary)."""
    return np.stack(arrays + [arrays[-1]] * (batch - len(arrays))).astype(np.float32)


class TiledRestoration:
    """Algorithm 1 over a tile plan for ``y`` ``(N, 3, h, w)`` of any ``h × w``.

    Args:
        model: the fixed-size graphs (:class:`TileModel`).
        y: measurements in [-1, 1], all of one size.
        overlap: latent pixels shared by neighbouring tiles.
    """

    def __init__(self, model: TileModel, y: np.ndarray, overlap: int | None = DEFAULT_OVERLAP):
        if model.vae_scale % model.scale:
            raise SiloError(f"cannot tile a measurement {model.scale}x smaller than the image "
                            f"with {model.vae_scale}x latents: a latent pixel must cover whole "
                            "measurement pixels")
        self.model = model
        self.padding: Padding
        self.plan: TilePlan
        self.padding, self.plan = plan_for(y.shape[-2], y.shape[-1], model.scale,
                                           model.tile_px, overlap, model.vae_scale)
        self.y = self.padding.pad_measurement(np.asarray(y, np.float32))
        self.latent_shape = (y.shape[0], model.latent_channels, self.plan.height,
                             self.plan.width)
        self.jobs = [TiledJob(n, k) for n in range(y.shape[0]) for k in range(len(self.plan))]

    @property
    def tile_count(self) -> int:
        """Tiles per image."""
        return len(self.plan)

    def describe(self) -> str:
        """One line: the tiles and the padding."""
        (h, w), (ph, pw) = self.padding.image_shape, self.padding.padded_image_shape
        padded = f" (padded to {pw}x{ph})" if (ph, pw) != (h, w) else ""
        side = self.model.tile_px
        return (f"{w}x{h}{padded} in {self.tile_count} tile(s) of {side}x{side} px, "
                f"{len(self.plan.rows)} row(s) x {len(self.plan.cols)} column(s), overlap "
                f"{self.plan.overlap * self.model.vae_scale} px")

    def _crops(self, field: np.ndarray, batch: list[TiledJob], factor: int = 1) -> np.ndarray:
        tiles = self.plan.tiles
        return _stack([self.plan.crop(field[job.image], tiles[job.tile], factor)
                       for job in batch], self.model.batch)

    def _blend(self, blender, batch: list[TiledJob], values: np.ndarray) -> None:
        for row, job in enumerate(batch):
            blender.add(job.tile, values[row], (job.image,))

    def encode(self, noise: NoiseSource) -> list[np.ndarray]:
        """``w`` of every call's tiles, ``(batch, C, T, T)`` each, in call order (the last
        padded as its measurement tiles were)."""
        eps = noise.encoder_noise(self.latent_shape)
        factor = self.model.vae_scale // self.model.scale
        return [self.model.encode(self._crops(self.y, batch, factor), self._crops(eps, batch))
                for batch in _batches(self.jobs, self.model.batch)]

    def run(self, noise: NoiseSource, callback: Callable | None = None) -> np.ndarray:
        """The restoration ``(N, 3, H, W)`` float32 in [-1, 1].

        ``callback(i, timestep, z, loss)`` after each step: ``z`` the blended latent
        ``(N, C, h', w')``, ``loss`` the guidance loss summed over the step's calls (a
        batch padded with copies of its last tile counts them too).
        """
        timesteps = self.model.timesteps
        encoded = self.encode(noise)
        z = noise.initial_latent(self.latent_shape) * np.float32(self.model.init_noise_sigma)
        rows = noise.step_noise_rows(len(timesteps), self.latent_shape)
        batches = list(_batches(self.jobs, self.model.batch))
        blender = self.plan.blender(self.latent_shape[:2])
        for i, step_noise in enumerate(rows):
            blender.clear()
            loss = 0.0
            for batch, w in zip(batches, encoded):
                z_prev, batch_loss = self.model.step(i, self._crops(z, batch), w,
                                                     self._crops(step_noise, batch))
                self._blend(blender, batch, z_prev)
                loss += batch_loss
            z = blender.result()
            if callback is not None:
                callback(i, int(timesteps[i]), z, loss)
        return self.decode(z)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Decode ``z`` ``(N, C, h', w')`` by tiles, blended in pixel space and cropped."""
        blender = self.plan.blender((z.shape[0], 3), self.model.vae_scale)
        for batch in _batches(self.jobs, self.model.batch):
            self._blend(blender, batch, self.model.decode(self._crops(z, batch)))
        return self.padding.crop_image(blender.result())
