"""``ip``: box inpainting. A centred box of half the side is zeroed (grey in [-1, 1]):
pixels [S/4, S/4 + S/2) of both axes, 256×256 on 512×512."""

from __future__ import annotations

import numpy as np

from ..errors import SiloError
from .base import Degradation
from .registry import register


def box_mask_array(image_size: int) -> np.ndarray:
    """``(1, 1, S, S)`` float32 numpy mask: 0 inside the centred box of side S/2, 1 elsewhere."""
    mask = np.ones((1, 1, image_size, image_size), np.float32)
    lo = image_size // 4
    mask[..., lo:lo + image_size // 2, lo:lo + image_size // 2] = 0
    return mask


def box_mask(image_size: int):
    """:func:`box_mask_array` as a torch tensor."""
    import torch

    return torch.from_numpy(box_mask_array(image_size))


@register("ip")
class BoxInpainting(Degradation):
    """``A x = m ⊙ x`` with the box mask ``m``; ``A⁺ = Aᵀ = A`` (a projection), so imposing
    the measurement copies the observed pixels."""

    name = "ip"
    description = "box inpainting: a centred box of half the side is zeroed"
    eta = 1.0
    imposable = True
    baseline_name = "biharmonic fill"
    tileable = False
    untileable_reason = ("its operator was trained on one centred box of half the image; "
                         "tiles would move and shrink the box. Restore ip at the size its "
                         "bundle or operator was made for")

    def check_measurable(self, height, width):
        if height != width:
            raise SiloError(f"task ip needs a square image (its box is centred on a square "
                            f"image, as its operator was trained), got {width}x{height}; "
                            f"pass --size WxH with W = H")

    def __call__(self, x):
        return x * box_mask(x.shape[-1]).to(x)

    def measured_pixels(self, image_size):
        return box_mask_array(image_size)

    def apply_numpy(self, x):
        return np.asarray(x, np.float64) * box_mask_array(x.shape[-1])

    def pseudo_inverse_numpy(self, y, height, width):
        return np.asarray(y, np.float64) * box_mask_array(height)

    def keep_measured(self, y, x):
        """The observed pixels copied from ``y``, the box kept from ``x`` (float32)."""
        self.check_imposable()
        mask = box_mask_array(x.shape[-1])
        return (mask * y + (1 - mask) * x).astype(np.float32)

    def baseline(self, y, image_size):
        """scikit-image's biharmonic fill of the box."""
        from skimage.restoration import inpaint_biharmonic

        hole = box_mask_array(image_size)[0, 0] == 0
        filled = inpaint_biharmonic(y[0].transpose(1, 2, 0), hole, channel_axis=-1)
        return filled.transpose(2, 0, 1)[None].astype(np.float32)
