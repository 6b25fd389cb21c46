"""``jpeg``: JPEG at quality 10 through kornia's differentiable codec. Not linear, so it has
no transpose and ``--keep-measured`` refuses it."""

from __future__ import annotations

from ..errors import SiloError
from .base import Degradation
from .registry import register

JPEG_QUALITY = 10


@register("jpeg")
class Jpeg(Degradation):
    """kornia's ``jpeg_codec_differentiable`` on [0, 1] images, clipped back to [-1, 1]."""

    name = "jpeg"
    description = "JPEG compression at quality 10 (kornia's differentiable codec)"
    linear = False

    def __call__(self, x):
        import torch
        from kornia.enhance import jpeg_codec_differentiable

        quality = torch.full((x.shape[0],), float(JPEG_QUALITY), dtype=x.dtype, device=x.device)
        out = jpeg_codec_differentiable((x + 1) / 2, quality)
        return (out * 2 - 1).clamp(-1, 1)

    def check_size(self, image_size):
        super().check_size(image_size)
        if image_size % 16:
            raise SiloError(f"task jpeg needs an image size divisible by 16, got {image_size}")
