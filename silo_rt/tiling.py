"""One tiling plan: how an image of any size is cut into a bundle's fixed-size tiles and
blended back (numpy only; the runtime and the PyTorch reference both use it).

Coordinates are in latent pixels (an image pixel is ``1/8`` of one for SD-1.x); a plan
maps them to any other resolution by an integer ``factor`` (8 for the image, ``8/scale``
for an SR measurement), so the latent, the measurement and the image are cut at the same
places.

Along each axis tiles of side ``T`` start every ``T − overlap`` latent pixels; the last tile
is moved back to sit flush with the edge, so it may overlap its neighbour by more. Where two
tiles overlap they are blended with a raised-cosine (``sin²``/``cos²``) crossfade across
exactly their shared band: the two weights sum to one at every pixel (a partition of unity,
so a constant field stays constant), each tile's weight falls smoothly to near zero at its
inner border, where the UNet saw its zero padding rather than the neighbouring content, and
the crossfade's derivative is continuous at both ends of the band, which a linear ramp's is
not. Sides on the image border keep weight one. With ``overlap = 0`` tiles only abut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import SiloError

DEFAULT_OVERLAP = None
"""Overlap when none is given: :func:`default_overlap` of the tile."""


def default_overlap(tile: int) -> int:
    """A quarter of the tile side (latent px): 4 on the demo's 16, 16 on SD-1.x's 64 at
    512 px. On the demo a quarter brought the seam score to the ground truth's where an
    eighth left visible seams (``benchmarks/tiles/``)."""
    return tile // 4


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of ``length`` ≥ ``tile`` (latent px).

    Stride ``tile − overlap``; the last start is ``length − tile`` (flush with the edge).
    """
    if length < tile:
        raise SiloError(f"cannot tile {length} px with {tile} px tiles (pad it first)")
    if not 0 <= overlap < tile:
        raise SiloError(f"tile overlap must be in [0, {tile - 1}] latent px for {tile} px "
                        f"tiles, got {overlap}")
    stride = tile - overlap
    count = 1 + max(0, math.ceil((length - tile) / stride))
    return [min(i * stride, length - tile) for i in range(count)]


def axis_weights(starts: list[int], index: int, tile: int, factor: int = 1) -> np.ndarray:
    """The 1-D blending weight ``(tile·factor,)`` float32 of tile ``index`` along an axis.

    Across the band the tile shares with each neighbour it follows ``sin²`` up (from the
    previous tile) and ``cos²`` down (into the next), sampled at pixel centres of the
    resolution ``factor``; elsewhere 1.
    """
    size = tile * factor
    weight = np.ones(size, np.float64)
    start = starts[index]
    if index > 0:  # rising edge where the previous tile still covers us
        band = (starts[index - 1] + tile - start) * factor
        if band > 0:
            weight[:band] = np.sin(0.5 * np.pi * (np.arange(band) + 0.5) / band) ** 2
    if index + 1 < len(starts):  # falling edge into the next tile
        band = (start + tile - starts[index + 1]) * factor
        if band > 0:
            weight[size - band:] *= np.cos(0.5 * np.pi * (np.arange(band) + 0.5) / band) ** 2
    return weight.astype(np.float32)


@dataclass(frozen=True)
class Tile:
    """One tile: its offsets ``(top, left)`` in latent pixels."""

    top: int
    left: int


@dataclass(frozen=True)
class TilePlan:
    """Tiles of side ``tile`` over a latent of ``height × width`` (both ≥ ``tile``).

    Attributes:
        height, width: latent size (already padded, see :class:`Padding`).
        tile: tile side ``T`` (latent px), the bundle's latent side.
        overlap: latent px shared by neighbours (the last tile of a row or column may
            share more).
    """

    height: int
    width: int
    tile: int
    overlap: int

    @cached_property
    def rows(self) -> list[int]:
        return tile_starts(self.height, self.tile, self.overlap)

    @cached_property
    def cols(self) -> list[int]:
        return tile_starts(self.width, self.tile, self.overlap)

    @cached_property
    def tiles(self) -> list[Tile]:
        """Row-major tiles."""
        return [Tile(top, left) for top in self.rows for left in self.cols]

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def is_whole(self) -> bool:
        """One tile covering the whole latent (nothing to blend)."""
        return self.height == self.tile and self.width == self.tile

    def crop(self, field: np.ndarray, tile: Tile, factor: int = 1) -> np.ndarray:
        """The tile's window of ``field`` ``(…, height·factor, width·factor)``: a view."""
        side = self.tile * factor
        top, left = tile.top * factor, tile.left * factor
        return field[..., top:top + side, left:left + side]

    def axis_weights(self, factor: int = 1) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The 1-D weights of every row and every column of tiles at resolution ``factor``
        (:func:`axis_weights`); tile ``k``'s weight is the outer product of row ``k // cols``
        and column ``k % cols``."""
        return ([axis_weights(self.rows, i, self.tile, factor) for i in range(len(self.rows))],
                [axis_weights(self.cols, j, self.tile, factor) for j in range(len(self.cols))])

    def blender(self, leading: tuple[int, ...], factor: int = 1) -> Blender:
        """A :class:`Blender` assembling tiles into a ``(*leading, height·factor,
        width·factor)`` field."""
        return Blender(self, leading, factor)


class Blender:
    """Accumulates weighted tiles, then normalises: ``Σ wᵢ·tileᵢ / Σ wᵢ`` per pixel.

    Memory: the output field, one weight plane and the 1-D weights of the rows and columns
    of tiles, whatever the tile count. :meth:`clear` readies it for the next field of the
    same plan (the sampling loop blends every step with one blender).
    """

    def __init__(self, plan: TilePlan, leading: tuple[int, ...], factor: int = 1):
        self.plan = plan
        self.factor = factor
        self._rows, self._cols = plan.axis_weights(factor)
        shape = (*leading, plan.height * factor, plan.width * factor)
        self.total = np.zeros(shape, np.float32)
        self.norm = np.zeros(shape[-2:], np.float32)
        for index, tile in enumerate(plan.tiles):
            plan.crop(self.norm, tile, factor)[...] += self._weight(index)

    def _weight(self, index: int) -> np.ndarray:
        row, col = divmod(index, len(self._cols))
        return np.outer(self._rows[row], self._cols[col])

    def add(self, index: int, values: np.ndarray, where: tuple = ()) -> None:
        """Add tile ``index``'s ``values`` ``(…, T·f, T·f)`` into ``total[where]`` (e.g.
        ``where = (image,)`` for one image of a batch)."""
        window = self.plan.crop(self.total[where], self.plan.tiles[index], self.factor)
        row, col = divmod(index, len(self._cols))
        window += values * self._rows[row][:, None] * self._cols[col]

    def result(self) -> np.ndarray:
        """The blended field, a new float32 array; a single tile comes back exactly as it
        went in."""
        if self.plan.is_whole:
            return self.total.copy()  # weight 1 everywhere: skip a division that could round
        return self.total / self.norm

    def clear(self) -> None:
        """Start the next field: the accumulated tiles are dropped, the weights kept."""
        self.total.fill(0.0)


@dataclass(frozen=True)
class Padding:
    """How a measurement of any size becomes one a tile plan covers, and back.

    The image ``H × W = (h·scale) × (w·scale)`` is padded at its bottom and right to a
    multiple of 8 (the latent grid) and at least one tile; the measurement is padded by the
    same amount divided by ``scale``. Padding mirrors the edge (numpy ``symmetric``, the
    boundary rule of the DPS resizer), so no hard edge enters the restoration; the padded
    rows and columns are cropped from the result.

    Attributes:
        height, width: measurement size as given.
        scale: measurement-to-image factor (1, 4 or 8).
        tile_px: tile side in image pixels.
        vae_scale: image pixels per latent pixel (8).
    """

    height: int
    width: int
    scale: int
    tile_px: int
    vae_scale: int = 8

    def _padded(self, side: int) -> int:
        image = max(side * self.scale, self.tile_px)
        return -(-image // self.vae_scale) * self.vae_scale

    @property
    def image_shape(self) -> tuple[int, int]:
        """The restored image's ``(H, W)``."""
        return self.height * self.scale, self.width * self.scale

    @property
    def padded_image_shape(self) -> tuple[int, int]:
        return self._padded(self.height), self._padded(self.width)

    @property
    def latent_shape(self) -> tuple[int, int]:
        h, w = self.padded_image_shape
        return h // self.vae_scale, w // self.vae_scale

    @property
    def is_needed(self) -> bool:
        return self.padded_image_shape != self.image_shape

    def pad_measurement(self, y: np.ndarray) -> np.ndarray:
        """``y`` ``(…, h, w)`` mirrored at the bottom and right to the padded size."""
        ph, pw = self.padded_image_shape
        extra = ((0, 0),) * (y.ndim - 2) + ((0, ph // self.scale - self.height),
                                             (0, pw // self.scale - self.width))
        return np.pad(y, extra, mode="symmetric") if self.is_needed else y

    def crop_image(self, x: np.ndarray) -> np.ndarray:
        """The restored ``(…, H, W)`` part of a padded result."""
        h, w = self.image_shape
        return x[..., :h, :w]


def plan_for(height: int, width: int, scale: int, tile_px: int,
             overlap: int | None = DEFAULT_OVERLAP, vae_scale: int = 8
             ) -> tuple[Padding, TilePlan]:
    """The padding and tile plan for a ``height × width`` measurement (``scale``: its
    image-to-measurement factor) restored with tiles of ``tile_px`` image pixels, sharing
    ``overlap`` latent px (None: :func:`default_overlap`)."""
    if tile_px % vae_scale:
        raise SiloError(f"tile size must be a multiple of {vae_scale} px, got {tile_px}")
    if height < 1 or width < 1:
        raise SiloError(f"measurement must have pixels, got {width}x{height}")
    padding = Padding(height, width, scale, tile_px, vae_scale)
    latent_h, latent_w = padding.latent_shape
    tile = tile_px // vae_scale
    overlap = default_overlap(tile) if overlap is None else overlap
    return padding, TilePlan(latent_h, latent_w, tile, overlap)


def tiles_per_image(height: int, width: int, scale: int, tile_px: int,
                    overlap: int | None = DEFAULT_OVERLAP, vae_scale: int = 8) -> int:
    """How many tiles :func:`plan_for` cuts a ``height × width`` measurement into."""
    return len(plan_for(height, width, scale, tile_px, overlap, vae_scale)[1])
