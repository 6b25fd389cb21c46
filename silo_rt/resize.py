"""Image resizing as 1-D matrices (numpy only): the SR measurement models and SR upsampling.

A separable resize of a ``(…, H, W)`` image is ``R_h · X · R_wᵀ`` with two matrices of shape
``(out, in)``. Written this way the same numbers serve the PyTorch degradation, the exported
VAE-encoder graph (two MatMuls: TensorRT's parser refuses an antialiased ``Resize``) and the
numpy pseudo-inverse of ``restore --keep-measured``.

Two downsampling kernels, by name (``RESIZERS``):

* ``dps``: the resizer of DPS (Chung et al. 2023), with which the SILO paper made its SR
  measurements and trained its operators; MATLAB ``imresize`` semantics: Keys' cubic
  (a = -0.5) stretched by the scale (antialiasing), weights normalised over the taps, and
  **symmetric** boundary handling (the image mirrored with its edge sample repeated);
* ``torch-bicubic``: ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)``,
  the same kernel but truncated and renormalised at the borders. silo-rt's operators trained
  before the DPS resizer was added use it (their metadata says so).

Both place output sample ``i`` at input coordinate ``(i + ½)·in/out − ½`` (pixel centres), so
they differ only near the borders.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

RESIZERS = ("dps", "torch-bicubic")
DEFAULT_RESIZER = "dps"
LEGACY_RESIZER = "torch-bicubic"
"""The measurement model of operators whose metadata predates the choice."""


def keys_cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (support [-2, 2])."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x <= 2, far, 0.0))


def _frozen(matrix: np.ndarray) -> np.ndarray:
    matrix.setflags(write=False)  # cached: shared by every caller
    return matrix


@lru_cache(maxsize=32)
def bicubic_aa_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` float64 matrix of 1-D resizing as
    ``F.interpolate(mode="bicubic", antialias=True, align_corners=False)`` does it.

    Each output sample ``i`` is centred at ``scale·(i + ½)`` (``scale = in/out``); when
    downsampling the kernel is stretched by ``scale`` (that is the antialiasing) and its
    weights over the input samples it reaches are normalised to sum to one. Upsampling
    (``scale < 1``) is plain Keys bicubic with a = -0.5 and clamped borders.
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
        weights = keys_cubic((taps - center + 0.5) * inv_scale)
        total = weights.sum()
        matrix[i, lo:hi] = weights / total if total != 0 else weights
    return _frozen(matrix)


@lru_cache(maxsize=32)
def dps_resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` float64 matrix of DPS's cubic resizer along one axis.

    For output sample ``j`` (1-based) the matching input coordinate (1-based) is
    ``u = j/s + ½(1 − 1/s)`` with ``s = out/in``. When downsampling the kernel is
    ``s·cubic(s·x)`` with width ``4/s``; the ``ceil(width) + 2`` taps starting at
    ``floor(u − width/2)`` are weighted by the kernel at ``u − tap``, normalised to sum to
    one, and taps outside the image are folded back symmetrically (``-1 → 0``, ``n → n−1``).
    """
    s = out_size / in_size
    antialias = s < 1.0
    width = 4.0 / s if antialias else 4.0
    out_coords = np.arange(1, out_size + 1, dtype=np.float64)
    u = (out_coords - (out_size - in_size * s) / 2) / s + 0.5 * (1 - 1 / s)
    left = np.floor(u - width / 2)
    taps = left[:, None] + np.arange(math.ceil(width) + 2)[None, :] - 1  # 0-based indices
    distance = u[:, None] - taps - 1
    weights = s * keys_cubic(s * distance) if antialias else keys_cubic(distance)
    totals = weights.sum(axis=1, keepdims=True)
    weights = weights / np.where(totals == 0, 1.0, totals)
    period = 2 * in_size
    folded = np.mod(taps, period).astype(np.int64)
    folded = np.where(folded < in_size, folded, period - 1 - folded)
    matrix = np.zeros((out_size, in_size), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], folded.shape)
    np.add.at(matrix, (rows, folded), weights)
    return _frozen(matrix)


def check_resizer(name: str) -> str:
    """``name`` if it is a known resizer, else a :class:`~silo_rt.errors.SiloError`."""
    if name not in RESIZERS:
        from .errors import SiloError

        raise SiloError(f"unknown SR resizer {name!r}; choose {' or '.join(RESIZERS)}")
    return name


def recorded_resizer(operator_config: dict) -> str:
    """The resizer an operator config (a JSON object) records; configs written before the
    choice existed record none and mean :data:`LEGACY_RESIZER`."""
    return check_resizer(operator_config.get("resizer", LEGACY_RESIZER))


def downsampling_matrix(resizer: str, in_size: int, out_size: int) -> np.ndarray:
    """The ``(out, in)`` matrix of the named SR measurement model (see :data:`RESIZERS`)."""
    check_resizer(resizer)
    if resizer == "dps":
        return dps_resize_matrix(in_size, out_size)
    return bicubic_aa_matrix(in_size, out_size)


@lru_cache(maxsize=32)
def pseudo_inverse(resizer: str, in_size: int, out_size: int) -> np.ndarray:
    """Moore-Penrose pseudo-inverse ``(in, out)`` of :func:`downsampling_matrix`."""
    return _frozen(np.linalg.pinv(downsampling_matrix(resizer, in_size, out_size)))
