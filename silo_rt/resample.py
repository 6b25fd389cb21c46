"""ReSample (Song et al., ICLR 2024): hard data consistency and stochastic resampling.

The paper's fourth baseline, on the same prior, timesteps, seeds and measurements as
:mod:`silo_rt.baselines`. Facts taken from the authors' public code (``soominkwon/resample``,
``ldm/models/diffusion/ddim.py``: ``resample_sampling``, ``pixel_optimization``,
``latent_optimization``, ``stochastic_resample``; ``ldm_inverse/condition_methods.py``;
``sample_condition.py``), with ``T`` DDIM steps (η = 0) and ``index = T − 1 − i`` at the
``i``-th step (``i = 0`` the noisiest):

1. every step: a DDIM step from ``z_t`` with the latent DPS step,
   ``z_{t−1} = √ᾱ_{t−1} ẑ0 + √(1 − ᾱ_{t−1}) ε − 0.5 ᾱ_t ∇_{z_t} ‖y − A(D(ẑ0))‖``;
2. when ``0 < index ≤ T − T // 3`` and ``index % 10 == 0`` (the last two thirds, every 10th
   step), the **hard data-consistency step**: from ``z_{t−1}``, up to 5 more unconditional DDIM
   UNet evaluations give ``ẑ0`` (the one of the last evaluation); then, in the middle third
   (``index ≥ T // 3``), ``x̂0 = D(ẑ0)`` is optimised in *pixel* space on
   ``mean((y − A(x))²)`` and encoded back; in the last third ``ẑ0`` itself is optimised in
   *latent* space on ``mean((y − A(D(z)))²)`` (AdamW, see :class:`ReSampleSettings`);
3. then **stochastic resampling** replaces ``z_{t−1}`` by a draw of the Gaussian whose
   density is the product of ``N(√ᾱ_{t−1} ẑ0*, (1 − ᾱ_{t−1}) I)`` and ``N(z_{t−1}, σ_t² I)``,
   ``σ_t² = γ (1 − ᾱ_{t−1}) / (1 − ᾱ_t) (1 − ᾱ_t / ᾱ_{t−1})`` (the DDPM posterior variance
   scaled by γ = 40);
4. after the last step, one more latent optimisation from ``z_0``, then ``x̂ = D(z_0)``.

Where the authors' code differs from their paper we follow the paper and say so here:
its ``ẑ0`` for the DPS loss and the consistency start is ``(z_t − (1 − ᾱ_t) ε) / √ᾱ_t``
(not Tweedie's ``(z_t − √(1 − ᾱ_t) ε) / √ᾱ_t``; we use Tweedie, Eq. 12, as the other
baselines), and its look-ahead steps use the ᾱ of the step before their timestep (we use
each timestep's own). The encoder after the pixel step is the posterior mean (as the
other baselines; the authors' LDM-VQ4 encoder has no sampling). The resampling noise of
step ``i`` is row ``i`` of :meth:`NoiseSource.step_noise <silo_rt.noise.NoiseSource>`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from .degradations import get_degradation
from .errors import SiloError
from .latents import decode_latent
from .noise import NoiseSource
from .sampler import SamplingOptions, image_size_for, prepare_sampling


@dataclass(frozen=True)
class ReSampleSettings:
    """ReSample's hyperparameters; defaults are the authors' code (``ddim.py``).

    Attributes:
        gamma: γ scaling the resampling variance (``sigma = 40 * …`` in
            ``resample_sampling``; their comment: "Change the 40 value for each task").
        eps: optimisation stops once the MSE is below ``eps²`` (``eps=1e-3`` in both
            optimisations; their comment: "needs tuning according to noise level").
        dps_scale: the DPS step size is ``dps_scale · ᾱ_t`` (``scale=a_t*.5``; the task
            configs' ``scale`` is never used by their ``ps`` method).
        pixel_lr, pixel_iterations: AdamW learning rate and iteration cap of the pixel-space
            step (``lr=1e-2``, ``max_iters=2000``).
        latent_lr, latent_iterations: the same for the latent-space step (``5e-3``, ``500``;
            their note: "around 500 steps, 200 steps for inpainting").
        latent_patience: the latent step also stops once its loss is above the loss of
            this many iterations earlier (``200``).
        every: consistency at every ``every``-th step index (``index % 10 == 0``).
        stages: the schedule splits into this many parts (``splits = 3``): DPS only in the
            first, pixel-space steps in the middle ones, latent-space steps in the last.
        lookahead: UNet evaluations ahead of ``z_{t−1}`` for ``ẑ0`` (``inter_timesteps = 5``).
        consistency: ``False`` switches steps 2-4 off: plain latent DPS-DDIM.
    """

    gamma: float = 40.0
    eps: float = 1e-3
    dps_scale: float = 0.5
    pixel_lr: float = 1e-2
    pixel_iterations: int = 2000
    latent_lr: float = 5e-3
    latent_iterations: int = 500
    latent_patience: int = 200
    every: int = 10
    stages: int = 3
    lookahead: int = 5
    consistency: bool = True

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class ReSampleStats:
    """What one restoration did: its hard-consistency steps (``(step i, "pixel"|"latent",
    iterations)``, the final latent step last) and the totals of optimiser iterations."""

    consistency: list[tuple[int, str, int]] = field(default_factory=list)

    def total(self, kind: str) -> int:
        return sum(n for _, k, n in self.consistency if k == kind)

    def to_json(self) -> dict:
        return {"consistency_steps": len(self.consistency),
                "pixel_iterations": self.total("pixel"),
                "latent_iterations": self.total("latent")}


def consistency_kind(i: int, steps: int, settings: ReSampleSettings) -> str | None:
    """``"pixel"``, ``"latent"`` or ``None``: the hard-consistency step after step ``i`` of
    ``steps`` (``i = 0`` the noisiest), by the authors' rule on ``index = steps − 1 − i``."""
    index = steps - 1 - i
    split = steps // settings.stages
    if not settings.consistency or not (0 < index <= steps - split) or index % settings.every:
        return None
    return "pixel" if index >= split else "latent"


def resampling_variance(a_t: float, a_prev: float, gamma: float) -> float:
    """``σ_t² = γ (1 − ᾱ_{t−1}) / (1 − ᾱ_t) · (1 − ᾱ_t / ᾱ_{t−1})``."""
    return gamma * (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)


def stochastic_resample(z0, z_prime, a_prev: float, variance: float, noise):
    """A draw of ``N(√ᾱ z0, (1 − ᾱ) I) · N(z', σ² I)`` (normalised), ``ᾱ = a_prev``,
    ``σ² = variance``; ``noise`` is ``N(0, I)`` of ``z0``'s shape. Returns the new latent."""
    mean = (variance * a_prev ** 0.5 * z0 + (1.0 - a_prev) * z_prime) / (variance + 1.0 - a_prev)
    return mean + noise * (variance * (1.0 - a_prev) / (variance + 1.0 - a_prev)) ** 0.5


class ReSampleSolver:
    """The pieces of one ReSample restoration on ``prior`` for ``task`` (see the module)."""

    def __init__(self, prior, task: str, settings: ReSampleSettings):
        self.prior = prior
        self.settings = settings
        self.degradation = get_degradation(task)

    def decode(self, z):
        """``D(z)``: ``(B, C, s, s)`` latent → ``(B, 3, S, S)`` image, unclamped."""
        return self.prior.vae.decode(z / self.prior.scaling_factor).sample

    def encode(self, x):
        """``E(x)``: the posterior mean × scaling factor."""
        return self.prior.vae.encode(x).latent_dist.mean * self.prior.scaling_factor

    def tweedie(self, z_t, timestep, a_t: float, context):
        """``(ẑ0, ε)`` at ``z_t`` (Eq. 12)."""
        eps = self.prior.unet(z_t, timestep, encoder_hidden_states=context).sample
        return (z_t - (1.0 - a_t) ** 0.5 * eps) / a_t ** 0.5, eps

    def dps_step(self, z_t, timestep, a_t: float, a_prev: float, y, context):
        """One DDIM (η = 0) step with the DPS gradient; returns ``(z_{t−1}, loss)``, the loss
        a 0-d tensor (read only by a callback: no device sync per step)."""
        z_t = z_t.detach().requires_grad_(True)
        with torch.enable_grad():
            z0, eps = self.tweedie(z_t, timestep, a_t, context)
            loss = torch.linalg.vector_norm(y - self.degradation(self.decode(z0)))
            grad, = torch.autograd.grad(loss, z_t)
        z_prev = a_prev ** 0.5 * z0 + (1.0 - a_prev) ** 0.5 * eps
        return (z_prev - self.settings.dps_scale * a_t * grad).detach(), loss.detach()

    @torch.no_grad()
    def look_ahead(self, z, timesteps, alphas, context):
        """``ẑ0`` after ``len(timesteps)`` unconditional DDIM UNet evaluations from ``z``
        (``alphas[j]``: ``(ᾱ_t, ᾱ_{t−1})`` of ``timesteps[j]``)."""
        for j, timestep in enumerate(timesteps):
            z0, eps = self.tweedie(z, timestep, alphas[j][0], context)
            z = alphas[j][1] ** 0.5 * z0 + (1.0 - alphas[j][1]) ** 0.5 * eps
        return z0

    def _mse(self, y, x):
        return torch.mean((y - self.degradation(x)) ** 2)

    def pixel_step(self, z0, y):
        """``E(argmin_x mean((y − A(x))²))`` from ``x = D(z0)``; returns ``(z, iterations)``."""
        with torch.no_grad():
            x, iterations = self.pixel_optimise(self.decode(z0), y)
            return self.encode(x), iterations

    def pixel_optimise(self, x, y):
        """``argmin_x mean((y − A(x))²)`` from ``x`` ``(B, 3, S, S)`` (AdamW, stopped below
        ``eps²``); returns ``(x, iterations)``."""
        s = self.settings
        x = x.detach().clone().requires_grad_(True)
        optimiser = torch.optim.AdamW([x], lr=s.pixel_lr)
        iterations = 0
        with torch.enable_grad():
            while iterations < s.pixel_iterations:
                iterations += 1
                optimiser.zero_grad()
                loss = self._mse(y, x)
                loss.backward()
                optimiser.step()
                if loss.item() < s.eps ** 2:
                    break
        return x.detach(), iterations

    def latent_step(self, z0, y):
        """``argmin_z mean((y − A(D(z)))²)`` from ``z = z0``, with the authors' two stopping
        rules (below ``eps²``; above the loss ``latent_patience`` iterations earlier);
        returns ``(z, iterations)``."""
        s = self.settings
        z = z0.detach().clone().requires_grad_(True)
        optimiser = torch.optim.AdamW([z], lr=s.latent_lr)
        window, iterations = [], 0
        with torch.enable_grad():
            while iterations < s.latent_iterations:
                iterations += 1
                optimiser.zero_grad()
                loss = self._mse(y, self.decode(z))
                loss.backward()
                optimiser.step()
                window.append(loss.item())
                if len(window) > s.latent_patience:
                    if window[0] < window[-1]:
                        break
                    window.pop(0)
                if window[-1] < s.eps ** 2:
                    break
        return z.detach(), iterations


def ddim_alphas(prior, timesteps: np.ndarray) -> list[tuple[float, float]]:
    """``(ᾱ_t, ᾱ_{t−1})`` per step of ``timesteps`` (noisiest first; the last step's
    ``ᾱ_{t−1} = 1``, as :mod:`silo_rt.schedule`)."""
    alphas = prior.scheduler.alphas_cumprod.double().numpy()
    a = [float(alphas[t]) for t in timesteps]
    return list(zip(a, a[1:] + [1.0]))


def restore_resample(prior, y: torch.Tensor, options: SamplingOptions,
                     settings: ReSampleSettings | None = None, callback=None):
    """Restore ``y`` ``(1, 3, h, w)`` in [-1, 1] with ReSample; returns ``(x̂, stats)``:
    ``x̂`` ``(1, 3, H, W)`` in [-1, 1] and :class:`ReSampleStats`.

    ``options``: task, steps, seed (``z_T`` and the resampling noise), no CFG;
    ``callback(i, timestep, z, loss)`` after every step.
    """
    options.validate()
    if options.cfg_scale > 1.0:
        raise SiloError("ReSample runs without CFG (--cfg 1)")
    settings = settings or ReSampleSettings()
    solver = ReSampleSolver(prior, options.task, settings)
    noise = NoiseSource(options.seed)
    shape = prior.latent_shape(image_size_for(options.task, y), y.shape[0])
    start = prepare_sampling(prior, options, shape, noise)
    timesteps = start.schedule.timesteps
    alphas = ddim_alphas(prior, timesteps)
    t_in = [torch.tensor([float(t)]).to(start.z) for t in timesteps]
    stats, z, steps = ReSampleStats(), start.z, len(timesteps)
    for i in range(steps):
        a_t, a_prev = alphas[i]
        z, loss = solver.dps_step(z, t_in[i], a_t, a_prev, y, start.context)
        kind = consistency_kind(i, steps, settings)
        if kind is not None:
            ahead = range(i + 1, min(i + 1 + settings.lookahead, steps))
            z0 = solver.look_ahead(z, [t_in[j] for j in ahead], [alphas[j] for j in ahead],
                                   start.context)
            step = solver.pixel_step if kind == "pixel" else solver.latent_step
            z0, iterations = step(z0, y)
            stats.consistency.append((i, kind, iterations))
            variance = resampling_variance(a_t, a_prev, settings.gamma)
            z = stochastic_resample(z0, z, a_prev, variance,
                                    torch.from_numpy(start.step_noise[i]).to(z))
        if callback is not None:
            callback(i, int(timesteps[i]), z, float(loss))
    if settings.consistency:
        z, iterations = solver.latent_step(z, y)
        stats.consistency.append((steps, "latent", iterations))
    return decode_latent(prior, z), stats
