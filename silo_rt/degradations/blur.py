"""``gb``: Gaussian blur, 61×61 kernel, σ = 3, reflection padding."""

from __future__ import annotations

from ..errors import SiloError
from .base import Degradation
from .registry import register

BLUR_KERNEL_SIZE = 61
BLUR_SIGMA = 3.0


def gaussian_kernel(size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA):
    """Normalised 2-D Gaussian kernel, ``(size, size)`` float32 torch tensor, sums to 1."""
    import torch

    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


@register("gb")
class GaussianBlur(Degradation):
    """Depthwise convolution with a 61×61 Gaussian (σ = 3), reflection padding 30.

    It has no stable pseudo-inverse, so ``--keep-measured`` refuses it.
    """

    name = "gb"
    description = "Gaussian blur, 61x61 kernel, sigma 3, reflection padding"
    clamp_latent = True

    def __call__(self, x):
        import torch.nn.functional as F

        kernel = gaussian_kernel().to(x)
        c = x.shape[1]
        weight = kernel.expand(c, 1, *kernel.shape)
        pad = BLUR_KERNEL_SIZE // 2
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), weight, groups=c)

    def check_measurable(self, height, width):
        super().check_measurable(height, width)
        if min(height, width) <= BLUR_KERNEL_SIZE // 2:
            raise SiloError(f"task gb needs both image sides larger than "
                            f"{BLUR_KERNEL_SIZE // 2} px (its reflection padding), got "
                            f"{width}x{height}")

    def check_size(self, image_size):
        super().check_size(image_size)
        if image_size <= BLUR_KERNEL_SIZE // 2:
            raise SiloError(f"task gb needs images larger than {BLUR_KERNEL_SIZE // 2} px")
