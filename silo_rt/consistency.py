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
* ``sr4``/``sr8``: ``A`` is the operator's SR resizer (:mod:`silo_rt.resize`: DPS's, or
  PyTorch's antialiased bicubic), which is separable: ``A x = R X Rᵀ`` per channel with a
  1-D matrix ``R``, and ``A⁺ y = R⁺ Y R⁺ᵀ``.

Blur (``gb``) has no stable pseudo-inverse and JPEG is not linear: both are refused.
"""

from __future__ import annotations

import numpy as np

from .errors import SiloError
from .resize import DEFAULT_RESIZER, downsampling_matrix, pseudo_inverse
from .tasks import get_task, measured_pixels

SUPPORTED_TASKS = ("ip", "sr4", "sr8")


def check_keep_measured(task: str) -> None:
    """Raise :class:`SiloError` unless ``task`` has an exact consistency step."""
    name = get_task(task).name
    if name not in SUPPORTED_TASKS:
        raise SiloError(f"--keep-measured needs a task whose measurement can be imposed "
                        f"exactly ({', '.join(SUPPORTED_TASKS)}), not {name}")


def apply_measurement(task: str, x: np.ndarray, resizer: str = DEFAULT_RESIZER) -> np.ndarray:
    """``A x`` in float64, no noise, no clipping: ``(B, 3, H, W)`` → ``(B, 3, h, w)`` for
    ``ip``/``sr4``/``sr8`` (the numpy twin of :mod:`silo_rt.degradations`)."""
    check_keep_measured(task)
    spec = get_task(task)
    x = np.asarray(x, np.float64)
    if spec.name == "ip":
        return x * measured_pixels(task, x.shape[-1])
    height, width = x.shape[-2:]
    rows = downsampling_matrix(resizer, height, height // spec.scale)
    cols = downsampling_matrix(resizer, width, width // spec.scale)
    return rows @ x @ cols.T


def keep_measured(task: str, y: np.ndarray, x: np.ndarray,
                  resizer: str = DEFAULT_RESIZER) -> np.ndarray:
    """``x`` with the part the measurement determines taken from ``y``.

    Args:
        task: ``ip``, ``sr4`` or ``sr8``.
        resizer: the SR measurement model ``y`` was made with (:data:`~.resize.RESIZERS`).
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
    small_h, small_w = height // spec.scale, width // spec.scale
    xd = np.asarray(x, np.float64)
    residual = np.asarray(y, np.float64) - apply_measurement(task, xd, resizer)
    correction = (pseudo_inverse(resizer, height, small_h) @ residual
                  @ pseudo_inverse(resizer, width, small_w).T)
    return np.clip(xd + correction, -1.0, 1.0).astype(np.float32)
