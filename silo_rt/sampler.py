"""Algorithm 1 (SILO), the PyTorch reference sampler.

``restore`` encodes the measurement once, runs ``steps`` guided DDPM steps entirely in latent
space (:class:`~silo_rt.step.GuidedStep`), and decodes once. Every random number comes from
:class:`~silo_rt.noise.NoiseSource`, so the ONNX Runtime and GPU backends reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .backends import StepCallback
from .degradations import DEFAULT_SIGMA_Y, get_degradation
from .errors import SiloError
from .latents import MeasurementEncoder, decode_latent
from .noise import NoiseSource
from .schedule import DEFAULT_SAMPLER, Schedule, check_sampler, from_scheduler
from .step import GuidedStep


@dataclass
class SamplingOptions:
    """Knobs of one restoration.

    Attributes:
        task: degradation name.
        steps: DDPM inference steps (999 = the authors' default).
        eta: consistency scale η; ``None`` takes the task default (0.5, or 1.0 for ``ip``).
        seed: seed of :class:`~silo_rt.noise.NoiseSource`.
        prompt: text condition ("" = unconditional).
        cfg_scale: classifier-free guidance scale (1 = off).
        sigma_y: measurement noise std in the [-1, 1] range, given to H_θ.
        sampler: update rule, ``ddpm`` (the paper's) or ``ddim`` (deterministic), see
            :mod:`silo_rt.schedule`.
    """

    task: str
    steps: int = 999
    eta: float | None = None
    seed: int = 0
    prompt: str = ""
    cfg_scale: float = 1.0
    sigma_y: float = DEFAULT_SIGMA_Y
    sampler: str = DEFAULT_SAMPLER

    @property
    def resolved_eta(self) -> float:
        return get_degradation(self.task).eta if self.eta is None else float(self.eta)

    def validate(self) -> None:
        """Refuse out-of-range settings (NaN included) in one :class:`SiloError` line."""
        import math

        get_degradation(self.task)
        check_sampler(self.sampler)
        if not 1 <= self.steps <= 1000:
            raise SiloError(f"steps must be between 1 and 1000, got {self.steps}")
        if not (math.isfinite(self.cfg_scale) and 1.0 <= self.cfg_scale <= 50.0):
            raise SiloError(f"cfg scale must be in [1, 50] (1 = off), got {self.cfg_scale}")
        if self.eta is not None and not (math.isfinite(self.eta) and 0.0 <= self.eta <= 100.0):
            raise SiloError(f"eta must be a finite number in [0, 100], got {self.eta}")
        if not (math.isfinite(self.sigma_y) and 0.0 <= self.sigma_y < 1.0):
            raise SiloError(f"sigma_y must be in [0, 1) (the [-1, 1] image range), "
                            f"got {self.sigma_y}")


def image_size_for(task: str, measurement: torch.Tensor | np.ndarray) -> int:
    """Full image side for a square measurement of ``task`` (SR measurements are smaller)."""
    h, w = measurement.shape[-2:]
    if h != w:
        raise SiloError(f"measurement must be square, got {w}x{h}")
    return h * get_degradation(task).scale


def batch_context(context: torch.Tensor, batch: int) -> torch.Tensor:
    """Repeat a ``(1 or 2, L, D)`` context for ``batch`` images, keeping CFG's
    [unconditional…, prompt…] halves in order."""
    return context.repeat_interleave(batch, dim=0) if batch > 1 else context


@torch.no_grad()
def encode_measurement(prior, task: str, y: torch.Tensor, noise: NoiseSource) -> torch.Tensor:
    """``w``: :class:`~silo_rt.latents.MeasurementEncoder` with the encoder noise of ``noise``
    (a posterior *sample* × scaling factor; clamped to ±4 for gb/sr)."""
    image_size = image_size_for(task, y)
    eps = torch.from_numpy(noise.encoder_noise(prior.latent_shape(image_size, y.shape[0])))
    return MeasurementEncoder(prior, task, image_size)(y, eps)


def run_steps(z: torch.Tensor, schedule: Schedule, step_noise: np.ndarray, step_fn,
              callback: StepCallback | None = None) -> torch.Tensor:
    """The shared DDPM loop: ``z, loss = step_fn(z, timestep, coefficients, noise)`` per step.

    ``timestep`` is a ``(1,)`` float32 tensor, ``coefficients`` ``(5,)`` float32.
    """
    timesteps = torch.from_numpy(schedule.timesteps.astype(np.float32))
    coefficients = torch.from_numpy(schedule.coefficients)
    for i in range(len(schedule)):
        n = torch.from_numpy(step_noise[i]).to(z)
        z, loss = step_fn(z, timesteps[i:i + 1].to(z), coefficients[i].to(z), n)
        z = z.detach()
        if callback is not None:
            callback(i, int(schedule.timesteps[i]), z, float(loss))
    return z


@dataclass
class SamplingStart:
    """What every sampler loop starts from (all on the prior's device)."""

    context: torch.Tensor
    schedule: Schedule
    z: torch.Tensor
    step_noise: np.ndarray


def prepare_sampling(prior, options: SamplingOptions, shape: tuple[int, ...],
                     noise: NoiseSource) -> SamplingStart:
    """Text context (batched, CFG-aware), schedule, ``z_T`` and all step noise for ``shape``."""
    context = batch_context(prior.encode_prompt(options.prompt, options.cfg_scale), shape[0])
    schedule = from_scheduler(prior.scheduler, options.steps, options.sampler)
    z = (torch.from_numpy(noise.initial_latent(shape)).to(context.device)
         * prior.scheduler.init_noise_sigma)
    return SamplingStart(context, schedule, z, noise.step_noise(len(schedule), shape))


def restore(prior, operator, y: torch.Tensor, options: SamplingOptions,
            callback: StepCallback | None = None) -> torch.Tensor:
    """Restore measurement ``y`` ``(1, 3, h, w)`` in [-1, 1] with SILO; returns ``x̂``.

    Args:
        prior: :class:`~silo_rt.prior.LatentPrior`.
        operator: the trained H_θ (frozen).
        y: the measurement (low resolution for SR tasks).
        options: steps, η, seed, prompt, CFG, σ_y.
        callback: called after every step.
    """
    options.validate()
    noise = NoiseSource(options.seed)
    w = encode_measurement(prior, options.task, y, noise)
    start = prepare_sampling(prior, options, tuple(w.shape), noise)
    step = GuidedStep(prior, operator, options.cfg_scale)
    eta = torch.tensor([options.resolved_eta])
    sigma_y = torch.tensor([options.sigma_y])

    def silo_step(z_t, timestep, coefficients, n):
        return step(z_t, timestep, coefficients, n, w, eta, start.context, sigma_y)

    z0 = run_steps(start.z, start.schedule, start.step_noise, silo_step, callback)
    return decode_latent(prior, z0)
