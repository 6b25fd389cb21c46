"""The DDPM schedule of a restoration as plain per-step coefficients (numpy only).

A guided step (Algorithm 1, lines 4-9) needs, for the step's timestep t and its predecessor:

* ``z0 = x0_from_zt * z_t + x0_from_eps * eps``                      (Eq. 12)
* ``z'_{t-1} = mean_from_x0 * z0 + mean_from_zt * z_t + sigma * n``   (Algorithm 1, line 7)

These five numbers per step are what the exported step graph takes as inputs, so one graph
serves every step *and every update rule* that is linear in ẑ0, z_t and n:

* ``ddpm`` (the paper's Algorithm 1): the DDPM posterior mean and ``fixed_small`` noise,
  exactly as diffusers' ``DDPMScheduler.step`` (``epsilon`` prediction, no clipping);
* ``ddim``: the deterministic DDIM update (DDIM's η = 0, so no posterior noise),
  ``z_{t-1} = √ᾱ_prev·ẑ0 + √(1−ᾱ_prev)·ε̂`` with ``ε̂ = (z_t − √ᾱ_t·ẑ0)/√(1−ᾱ_t)``,
  written in ẑ0 and z_t; diffusers' ``DDIMScheduler.step`` with ``eta=0`` and
  ``set_alpha_to_one=True`` (the last step lands on ẑ0, as the DDPM schedule here does;
  where diffusers' DDIM would end one noise level short, at 999 steps, it lands on ẑ0 too).

Both use the same ("leading") timesteps; the step guidance ``−η·clamp(g)`` is added to either.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SiloError

COEFFICIENT_NAMES = ("x0_from_zt", "x0_from_eps", "mean_from_x0", "mean_from_zt", "sigma")
SAMPLERS = ("ddpm", "ddim")
"""Update rules: ``ddpm`` (the paper's, stochastic) and ``ddim`` (deterministic)."""
DEFAULT_SAMPLER = "ddpm"


def check_sampler(sampler: str) -> str:
    """``sampler`` if it is one of :data:`SAMPLERS`, else a one-line :class:`SiloError`."""
    if sampler not in SAMPLERS:
        raise SiloError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
    return sampler


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


def _rows(alphas_cumprod: np.ndarray, timesteps, previous, sampler: str) -> np.ndarray:
    """The five coefficients per step (float64 maths, float32 result)."""
    check_sampler(sampler)
    rows = []
    for t in timesteps:
        prev_t = previous(int(t))
        a_t = alphas_cumprod[t]
        a_prev = alphas_cumprod[prev_t] if prev_t >= 0 else 1.0
        x0_from_zt, x0_from_eps = 1.0 / np.sqrt(a_t), -np.sqrt(1.0 - a_t) / np.sqrt(a_t)
        if sampler == "ddim":
            # √ᾱ_prev·ẑ0 + √(1−ᾱ_prev)·ε̂, with ε̂ = (z_t − √ᾱ_t·ẑ0)/√(1−ᾱ_t)
            ratio = np.sqrt((1.0 - a_prev) / (1.0 - a_t))
            rows.append((x0_from_zt, x0_from_eps, np.sqrt(a_prev) - ratio * np.sqrt(a_t),
                         ratio, 0.0))
            continue
        beta_t = 1.0 - a_t / a_prev
        variance = max((1.0 - a_prev) / (1.0 - a_t) * beta_t, 1e-20)
        rows.append((
            x0_from_zt,
            x0_from_eps,
            np.sqrt(a_prev) * beta_t / (1.0 - a_t),
            np.sqrt(a_t / a_prev) * (1.0 - a_prev) / (1.0 - a_t),
            np.sqrt(variance) if t > 0 else 0.0,
        ))
    return np.asarray(rows, dtype=np.float32)


def from_alphas(alphas_cumprod, steps: int, steps_offset: int = 0,
                sampler: str = DEFAULT_SAMPLER) -> Schedule:
    """The schedule for ``steps`` steps of ``sampler`` from the training ``alphas_cumprod``
    (numpy only; what :func:`from_scheduler` gives for a diffusers scheduler with
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
    return Schedule(timesteps, _rows(alphas_cumprod, timesteps, following.__getitem__, sampler))


def alphas_record(scheduler) -> dict | None:
    """What a bundle stores to rebuild its schedule for other step counts with
    :func:`from_alphas`; None when the scheduler's spacing is not ``leading``."""
    if scheduler.config.get("timestep_spacing", "leading") != "leading":
        return None
    return {"alphas_cumprod": scheduler.alphas_cumprod.double().numpy().tolist(),
            "steps_offset": int(scheduler.config.get("steps_offset", 0))}


def from_scheduler(scheduler, steps: int, sampler: str = DEFAULT_SAMPLER) -> Schedule:
    """Coefficients for ``steps`` inference steps of ``sampler`` on the timesteps of a
    diffusers ``DDPMScheduler`` (its ``alphas_cumprod`` and ``previous_timestep``).

    The scheduler's ``set_timesteps`` is called (it is stateful, as in diffusers).
    """
    check_supported(scheduler.config)
    train_steps = scheduler.config.num_train_timesteps
    if not 1 <= steps <= train_steps:
        raise SiloError(f"steps must be between 1 and {train_steps}, got {steps}")
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.numpy().astype(np.int64)
    if timesteps.max() >= train_steps:  # steps_offset pushed the first step past the end
        raise SiloError(f"{steps} steps would start at timestep {timesteps.max()}; use at most "
                        f"{train_steps - 1} steps")
    return Schedule(timesteps, _rows(scheduler.alphas_cumprod.double().numpy(), timesteps,
                                     lambda t: int(scheduler.previous_timestep(t)), sampler))
