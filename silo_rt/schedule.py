"""The DDPM schedule of a restoration as plain per-step coefficients (numpy only).

A guided step (Algorithm 1, lines 4-9) needs, for the step's timestep t and its predecessor:

* ``z0 = x0_from_zt * z_t + x0_from_eps * eps``                      (Eq. 12)
* ``z'_{t-1} = mean_from_x0 * z0 + mean_from_zt * z_t + sigma * n``   (Algorithm 1, line 7)

These five numbers per step are what the exported step graph takes as inputs, so one graph
serves every step. :func:`from_scheduler` computes them from a diffusers ``DDPMScheduler``
exactly as its ``step`` does (``epsilon`` prediction, ``fixed_small`` variance, no clipping).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SiloError

COEFFICIENT_NAMES = ("x0_from_zt", "x0_from_eps", "mean_from_x0", "mean_from_zt", "sigma")


@dataclass(frozen=True)
class Schedule:
    """Per-step sampling coefficients, first (noisiest) step first.

    Attributes:
        timesteps: ``(steps,)`` int64, the UNet timestep of each step (e.g. 999 … 1).
        coefficients: ``(steps, 5)`` float32, columns as in :data:`COEFFICIENT_NAMES`.
    """

    timesteps: np.ndarray
    coefficients: np.ndarray

    def __len__(self) -> int:
        return len(self.timesteps)

    def to_json(self) -> dict:
        return {"timesteps": self.timesteps.tolist(),
                "coefficient_names": list(COEFFICIENT_NAMES),
                "coefficients": self.coefficients.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> Schedule:
        if list(data.get("coefficient_names", [])) != list(COEFFICIENT_NAMES):
            raise SiloError("schedule in manifest has unexpected coefficient names")
        return cls(np.asarray(data["timesteps"], dtype=np.int64),
                   np.asarray(data["coefficients"], dtype=np.float32))


def check_supported(config) -> None:
    """Raise :class:`SiloError` for scheduler settings Algorithm 1 here does not implement."""
    problems = []
    if config.get("prediction_type", "epsilon") != "epsilon":
        problems.append(f"prediction_type={config['prediction_type']!r} (need 'epsilon')")
    if config.get("variance_type", "fixed_small") != "fixed_small":
        problems.append(f"variance_type={config['variance_type']!r} (need 'fixed_small')")
    if config.get("clip_sample", False):
        problems.append("clip_sample=True")
    if config.get("thresholding", False):
        problems.append("thresholding=True")
    if problems:
        raise SiloError("unsupported DDPM scheduler settings: " + ", ".join(problems))


def _rows(alphas_cumprod: np.ndarray, timesteps, previous) -> np.ndarray:
    """The five coefficients per step (float64 maths, float32 result)."""
    rows = []
    for t in timesteps:
        prev_t = previous(int(t))
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[prev_t] if prev_t >= 0 else 1.0
        beta_t = 1.0 - a_t / a_prev
        variance = max((1.0 - a_prev) / (1.0 - a_t) * beta_t, 1e-20)
        rows.append((
            1.0 / np.sqrt(a_t),
            -np.sqrt(1.0 - a_t) / np.sqrt(a_t),
            np.sqrt(a_prev) * beta_t / (1.0 - a_t),
            np.sqrt(a_t / a_prev) * (1.0 - a_prev) / (1.0 - a_t),
            np.sqrt(variance) if t > 0 else 0.0,
        ))
    return np.asarray(rows, dtype=np.float32)


def from_alphas(alphas_cumprod, steps: int, steps_offset: int = 0) -> Schedule:
    """The schedule for ``steps`` DDPM steps from the training ``alphas_cumprod`` (numpy
    only; what :func:`from_scheduler` gives for a diffusers scheduler with
    ``timestep_spacing="leading"``, the SD-1.x setting). Lets a bundle run any step count.
    """
    alphas_cumprod = np.asarray(alphas_cumprod, dtype=np.float64)
    train_steps = len(alphas_cumprod)
    if not 1 <= steps <= train_steps:
        raise SiloError(f"steps must be between 1 and {train_steps}, got {steps}")
    ratio = train_steps // steps
    timesteps = (np.arange(steps) * ratio).round()[::-1].astype(np.int64) + steps_offset
    if timesteps[0] >= train_steps:
        raise SiloError(f"{steps} steps with steps_offset {steps_offset} would start at "
                        f"timestep {timesteps[0]}; use at most {train_steps - 1} steps")
    following = dict(zip(timesteps.tolist(), timesteps[1:].tolist() + [-1]))  # as diffusers
    return Schedule(timesteps, _rows(alphas_cumprod, timesteps, following.__getitem__))


def alphas_record(scheduler) -> dict | None:
    """What a bundle stores to rebuild its schedule for other step counts with
    :func:`from_alphas`; None when the scheduler's spacing is not ``leading``."""
    if scheduler.config.get("timestep_spacing", "leading") != "leading":
        return None
    return {"alphas_cumprod": scheduler.alphas_cumprod.double().numpy().tolist(),
            "steps_offset": int(scheduler.config.get("steps_offset", 0))}


def from_scheduler(scheduler, steps: int) -> Schedule:
    """Coefficients for ``steps`` inference steps of a diffusers ``DDPMScheduler``.

    The scheduler's ``set_timesteps`` is called (it is stateful, as in diffusers).
    """
    check_supported(scheduler.config)
    train_steps = scheduler.config.num_train_timesteps
    if not 1 <= steps <= train_steps:
        raise SiloError(f"steps must be between 1 and {train_steps}, got {steps}")
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.numpy().astype(np.int64)
    return Schedule(timesteps, _rows(scheduler.alphas_cumprod.double().numpy(), timesteps,
                                     lambda t: int(scheduler.previous_timestep(t))))
