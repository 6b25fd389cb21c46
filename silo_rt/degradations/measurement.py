"""Making a noisy measurement ``y = A(x) + σ_y·n`` as ``silo-rt degrade`` writes it (PyTorch)."""

from __future__ import annotations

import math

import numpy as np

from ..errors import SiloError
from ..resize import DEFAULT_RESIZER
from .registry import get_degradation


def add_noise(y, sigma_y: float, rng: np.random.Generator):
    """``y + sigma_y * n`` with ``n ~ N(0, I)`` drawn from numpy ``rng`` (float32 torch)."""
    import torch

    if not (sigma_y >= 0 and math.isfinite(sigma_y)):
        raise SiloError(f"sigma_y must be a finite number >= 0, got {sigma_y}")
    n = torch.from_numpy(rng.standard_normal(tuple(y.shape), dtype=np.float32)).to(y)
    return y + sigma_y * n


def make_measurement(x: np.ndarray, task: str, sigma_y: float, seed: int,
                     resizer: str = DEFAULT_RESIZER) -> np.ndarray:
    """``y = A(x) + sigma_y·n`` clipped to [-1, 1].

    ``x``: ``(B, 3, H, W)`` float32 in [-1, 1], any size and aspect whose sides the task's
    scale divides (:meth:`~silo_rt.degradations.Degradation.check_measurable`); the noise
    comes from ``default_rng(seed)``;
    ``resizer``: the SR measurement model.
    """
    import torch

    degradation = get_degradation(task, resizer)
    degradation.check_measurable(*x.shape[-2:])
    with torch.no_grad():
        y = degradation(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return add_noise(y, sigma_y, np.random.default_rng(seed)).clamp(-1, 1).numpy()
