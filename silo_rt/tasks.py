"""Task names and their sampling defaults (light metadata shared by every backend).

``sigma_y`` is always given in the [-1, 1] image range used throughout silo-rt: the paper's
sigma_y = 0.01 (for images in [0, 1]) is 0.02 here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SiloError


@dataclass(frozen=True)
class TaskSpec:
    """Facts about one degradation task.

    Attributes:
        name: short name used on the command line.
        description: one line for ``--help``.
        eta: default consistency scale of Algorithm 1.
        clamp_latent: whether the encoded measurement ``w`` is clamped to [-4, 4].
        scale: downsampling factor of the measurement (1 for same-size measurements).
    """

    name: str
    description: str
    eta: float
    clamp_latent: bool
    scale: int = 1


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("gb", "Gaussian blur, 61x61 kernel, sigma 3, reflection padding", 0.5, True),
        TaskSpec("sr4", "super-resolution x4 (bicubic, antialiased downsampling)", 0.5, True, 4),
        TaskSpec("sr8", "super-resolution x8 (bicubic, antialiased downsampling)", 0.5, True, 8),
        TaskSpec("ip", "box inpainting: a centred box of half the side is zeroed", 1.0, False),
        TaskSpec("jpeg", "JPEG compression at quality 10 (kornia's differentiable codec)", 0.5,
                 False),
    )
}

DEFAULT_SIGMA_Y = 0.02
"""Default measurement noise std in the [-1, 1] range (the paper's 0.01 in [0, 1])."""

LATENT_CLAMP = 4.0
"""Encoded measurements of blur and SR tasks are clamped to [-LATENT_CLAMP, LATENT_CLAMP]."""


def get_task(name: str) -> TaskSpec:
    """Return the :class:`TaskSpec` called ``name``, or raise a :class:`SiloError`."""
    try:
        return TASKS[name]
    except KeyError:
        raise SiloError(
            f"unknown task {name!r}; choose one of: {', '.join(TASKS)}"
        ) from None


def measured_pixels(task: str, image_size: int):
    """``(1, 1, S, S)`` float32 numpy mask of the pixels a measurement of ``task`` observes
    directly (1) and those it hides (0), or None when no pixel is observed as it is.

    For ``ip``: 0 inside the centred box of side S/2 (pixels [S/4, S/4 + S/2)), 1 elsewhere.
    """
    import numpy as np

    if get_task(task).name != "ip":
        return None
    mask = np.ones((1, 1, image_size, image_size), np.float32)
    lo = image_size // 4
    mask[..., lo:lo + image_size // 2, lo:lo + image_size // 2] = 0
    return mask
