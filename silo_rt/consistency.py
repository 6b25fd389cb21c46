"""Making a restoration agree with its measurement (``restore --keep-measured``), numpy only.

For a linear measurement ``y = A x + noise`` every image splits into a part the measurement
determines (the row space of ``A``) and a part it says nothing about (the null space). A
restoration ``x̂`` keeps its null-space part and takes the determined part from ``y``::

    x̂' = x̂ + A⁺ (y − A x̂)            so that  A x̂' = y

(the range/null-space decomposition of DDNM, Wang et al. 2022). SILO's own output agrees
with ``y`` only as well as the latent operator H_θ imitates ``A``; this step makes the
agreement exact, after sampling, at the cost of a few small matrix products.

* ``ip``: ``A`` keeps the pixels outside the box and ``A⁺ = Aᵀ``, so the step copies the
  observed pixels into the result;
* ``sr4``/``sr8``: ``A`` is PyTorch's antialiased bicubic downsampling, which is separable:
  ``A x = R X Rᵀ`` per channel with the 1-D matrix ``R`` of :func:`bicubic_aa_matrix`, and
  ``A⁺ y = R⁺ Y R⁺ᵀ``.

Blur (``gb``) has no stable pseudo-inverse and JPEG is not linear: both are refused.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .errors import SiloError
from .tasks import get_task, measured_pixels

SUPPORTED_TASKS = ("ip", "sr4", "sr8")


def _cubic_aa(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5, the one PyTorch's antialiased bicubic uses."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x < 1, near, np.where(x < 2, far, 0.0))


@lru_cache(maxsize=16)
def bicubic_aa_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` float64 matrix of 1-D resizing as
    ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)`` does it.

    Each output sample ``i`` is centred at ``scale·(i + ½)`` (``scale = in/out``); when
    downsampling the kernel is stretched by ``scale`` (that is the antialiasing) and its
    weights over the input samples it reaches are normalised to sum to one.
    """
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    inv_scale = 1.0 / scale if scale >= 1.0 else 1.0
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        # int() truncates toward zero, as the C++ cast in PyTorch's kernel does
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = np.arange(lo, hi)
        weights = _cubic_aa((taps - center + 0.5) * inv_scale)
        total = weights.sum()
        matrix[i, lo:hi] = weights / total if total != 0 else weights
    matrix.setflags(write=False)  # cached: shared by every caller
    return matrix


@lru_cache(maxsize=16)
def _pseudo_inverse(in_size: int, out_size: int) -> np.ndarray:
    inverse = np.linalg.pinv(bicubic_aa_matrix(in_size, out_size))
    inverse.setflags(write=False)
    return inverse


def check_keep_measured(task: str) -> None:
    """Raise :class:`SiloError` unless ``task`` has an exact consistency step."""
    name = get_task(task).name
    if name not in SUPPORTED_TASKS:
        raise SiloError(f"--keep-measured needs a task whose measurement can be imposed "
                        f"exactly ({', '.join(SUPPORTED_TASKS)}), not {name}")


def keep_measured(task: str, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``x`` with the part the measurement determines taken from ``y``.

    Args:
        task: ``ip``, ``sr4`` or ``sr8``.
        y: ``(B, 3, h, w)`` measurement in [-1, 1] (``h = H/scale``).
        x: ``(B, 3, H, W)`` restoration in [-1, 1].

    Returns:
        ``(B, 3, H, W)`` float32 in [-1, 1]: for ``ip`` the observed pixels copied from ``y``;
        for ``sr`` ``x + A⁺(y − A x)`` (clipped to [-1, 1], which can move ``A x`` off ``y``
        by the clipped amount only).
    """
    check_keep_measured(task)
    spec = get_task(task)
    if spec.name == "ip":
        mask = measured_pixels(task, x.shape[-1])
        return (mask * y + (1 - mask) * x).astype(np.float32)
    height, width = x.shape[-2:]
    if y.shape[-2:] != (height // spec.scale, width // spec.scale):
        raise SiloError(f"measurement {y.shape[-1]}x{y.shape[-2]} does not fit a "
                        f"{width}x{height} {spec.name} restoration")
    rows = bicubic_aa_matrix(height, height // spec.scale)
    cols = bicubic_aa_matrix(width, width // spec.scale)
    xd = np.asarray(x, np.float64)
    residual = np.asarray(y, np.float64) - rows @ xd @ cols.T
    correction = (_pseudo_inverse(height, height // spec.scale) @ residual
                  @ _pseudo_inverse(width, width // spec.scale).T)
    return np.clip(xd + correction, -1.0, 1.0).astype(np.float32)
