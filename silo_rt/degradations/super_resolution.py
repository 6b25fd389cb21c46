"""``sr4`` / ``sr8``: downsampling by 4 or 8 with an SR resizer (:mod:`silo_rt.resize`).

Both directions are matrix products, ``A x = R X Cᵀ`` per channel, with the same 1-D matrices
in the reference, the exported graph and ``--keep-measured``, so there is no ``Resize`` op for
an exporter to translate and ``A⁺ y = R⁺ Y C⁺ᵀ`` is exact.
"""

from __future__ import annotations

import numpy as np

from ..resize import (
    DEFAULT_RESIZER,
    bicubic_aa_matrix,
    check_resizer,
    downsampling_matrix,
    pseudo_inverse,
)
from .base import Degradation
from .registry import register


def resize_with_matrices(x, rows: np.ndarray, cols: np.ndarray):
    """``rows · x · colsᵀ`` over the last two axes of a torch tensor: ``(…, H, W)`` →
    ``(…, h, w)``."""
    import torch

    r = torch.tensor(rows, dtype=x.dtype, device=x.device)
    c = torch.tensor(cols, dtype=x.dtype, device=x.device)
    return torch.matmul(torch.matmul(r, x), c.t())


class SuperResolution(Degradation):
    """Downsampling by ``factor`` with the named resizer (``dps``, the paper's, or
    ``torch-bicubic``); antialiased bicubic upsampling back to full size to encode (as the
    authors' ``F.interpolate(mode="bicubic", antialias=True)``)."""

    clamp_latent = True
    imposable = True
    baseline_name = "bicubic"

    def __init__(self, factor: int, resizer: str = DEFAULT_RESIZER):
        self.scale = factor
        self.resizer = check_resizer(resizer)
        self.name = f"sr{factor}"
        self.description = f"super-resolution x{factor} (bicubic, antialiased downsampling)"

    def _matrices(self, height: int, width: int):
        return (downsampling_matrix(self.resizer, height, height // self.scale),
                downsampling_matrix(self.resizer, width, width // self.scale))

    def __call__(self, x):
        return resize_with_matrices(x, *self._matrices(*x.shape[-2:]))

    def encoder_input(self, y, image_size):
        h, w = y.shape[-2:]
        return resize_with_matrices(y, bicubic_aa_matrix(h, image_size),
                                    bicubic_aa_matrix(w, image_size))

    def apply_numpy(self, x):
        rows, cols = self._matrices(*x.shape[-2:])
        return rows @ np.asarray(x, np.float64) @ cols.T

    def pseudo_inverse_numpy(self, y, height, width):
        rows = pseudo_inverse(self.resizer, height, height // self.scale)
        cols = pseudo_inverse(self.resizer, width, width // self.scale)
        return rows @ np.asarray(y, np.float64) @ cols.T

    def baseline(self, y, image_size):
        """Pillow's bicubic upsampling, per channel."""
        from PIL import Image

        planes = [Image.fromarray(((y[0, c] + 1) * 127.5).astype(np.float32), mode="F")
                  .resize((image_size, image_size), Image.BICUBIC) for c in range(3)]
        up = np.stack([np.asarray(p, np.float32) for p in planes])[None] / 127.5 - 1.0
        return np.clip(up, -1, 1).astype(np.float32)


@register("sr4")
def _sr4(resizer: str = DEFAULT_RESIZER) -> SuperResolution:
    return SuperResolution(4, resizer)


@register("sr8")
def _sr8(resizer: str = DEFAULT_RESIZER) -> SuperResolution:
    return SuperResolution(8, resizer)
