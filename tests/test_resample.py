"""ReSample (silo_rt.resample) on the random ``tiny`` prior: its consistency step, its
resampling Gaussian, its reduction to latent DPS-DDIM, its seeding."""

import numpy as np
import pytest
import torch

from silo_rt.baselines import BaselineWeights, DecoderGuidedStep
from silo_rt.latents import decode_latent
from silo_rt.noise import NoiseSource
from silo_rt.resample import (
    ReSampleSettings,
    ReSampleSolver,
    consistency_kind,
    ddim_alphas,
    resampling_variance,
    restore_resample,
    stochastic_resample,
)
from silo_rt.sampler import SamplingOptions, prepare_sampling, run_steps
from silo_rt.schedule import Schedule, from_scheduler


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread here: these small problems gain nothing from two, and two threads
    spin for tens of seconds when the machine's cores are busy with other work."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _measurement(prior, task="sr4", seed=0):
    """``y = A(D(z))`` for a random latent ``z`` of ``prior`` (exactly reachable)."""
    solver = ReSampleSolver(prior, task, ReSampleSettings())
    z = torch.randn(prior.latent_shape(64), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return solver.degradation(solver.decode(z))


def _residual(solver, y, z):
    with torch.no_grad():
        return float(torch.linalg.vector_norm(y - solver.degradation(solver.decode(z))))


@pytest.mark.parametrize("task", ["sr4", "ip"])
def test_the_latent_consistency_step_lowers_the_residual(tiny_prior, task):
    y = _measurement(tiny_prior, task)
    solver = ReSampleSolver(tiny_prior, task, ReSampleSettings(latent_iterations=30))
    z0 = torch.randn(tiny_prior.latent_shape(64), generator=torch.Generator().manual_seed(5))
    z, iterations = solver.latent_step(z0, y)
    assert iterations == 30
    assert _residual(solver, y, z) < 0.95 * _residual(solver, y, z0)


def test_the_pixel_consistency_step_reaches_the_measurement_and_stops(tiny_prior):
    y = _measurement(tiny_prior, "ip")
    solver = ReSampleSolver(tiny_prior, "ip", ReSampleSettings())
    x0 = torch.zeros(1, 3, 64, 64)
    x, iterations = solver.pixel_optimise(x0, y)
    mse = float(torch.mean((y - solver.degradation(x)) ** 2))
    assert 1 < iterations < 2000  # stopped by the eps rule, not the cap
    assert mse < 2e-6 < float(torch.mean((y - solver.degradation(x0)) ** 2))
    # the unmeasured pixels only see AdamW's weight decay (the authors' default 0.01)
    hidden = solver.degradation(torch.ones_like(x)) == 0
    assert float(x[hidden].abs().max()) == 0.0


def test_the_consistency_steps_stop_by_the_authors_rules(tiny_prior):
    y = _measurement(tiny_prior)
    z0 = torch.zeros(tiny_prior.latent_shape(64))
    loose = ReSampleSolver(tiny_prior, "sr4", ReSampleSettings(eps=10.0))
    assert loose.latent_step(z0, y)[1] == 1 and loose.pixel_step(z0, y)[1] == 1
    # a step far too large makes the loss rise: stopped `latent_patience` steps later
    wild = ReSampleSolver(tiny_prior, "sr4", ReSampleSettings(latent_lr=50.0,
                                                              latent_patience=2,
                                                              latent_iterations=60))
    assert wild.latent_step(z0, y)[1] < 60


def test_the_resampling_draws_have_the_closed_form_moments():
    """Product of N(√ᾱ ẑ0, 1 − ᾱ) and N(z', σ²): precision-weighted mean, summed precisions."""
    a, variance, z0, z_prime = 0.6, 0.2, 0.7, -0.3
    noise = torch.randn(400_000, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    draws = stochastic_resample(torch.full_like(noise, z0), torch.full_like(noise, z_prime),
                                a, variance, noise)
    var = 1.0 / (1.0 / variance + 1.0 / (1.0 - a))
    mean = var * (a ** 0.5 * z0 / (1.0 - a) + z_prime / variance)
    assert float(draws.mean()) == pytest.approx(mean, abs=4 * (var / len(noise)) ** 0.5)
    assert float(draws.var()) == pytest.approx(var, rel=5 * (2 / len(noise)) ** 0.5)


def test_the_resampling_variance_is_gamma_times_the_ddpm_posterior_variance(tiny_prior):
    schedule = from_scheduler(tiny_prior.scheduler, 50)
    alphas = ddim_alphas(tiny_prior, schedule.timesteps)
    for i in (0, 10, 48):
        sigma = float(schedule.coefficients[i, 4])
        assert resampling_variance(*alphas[i], 1.0) == pytest.approx(sigma ** 2, rel=1e-5)
        assert resampling_variance(*alphas[i], 40.0) == pytest.approx(40 * sigma ** 2, rel=1e-5)


def test_the_consistency_steps_are_the_authors_timesteps():
    s = ReSampleSettings()
    kinds = {i: consistency_kind(i, 100, s) for i in range(100)}
    chosen = {100 - 1 - i: k for i, k in kinds.items() if k}  # by the authors' index
    assert chosen == {60: "pixel", 50: "pixel", 40: "pixel", 30: "latent", 20: "latent",
                      10: "latent"}
    kinds = [consistency_kind(i, 500, s) for i in range(500)]
    assert kinds.count("pixel") == 17 and kinds.count("latent") == 16
    assert consistency_kind(39, 100, ReSampleSettings(consistency=False)) is None


def _ddim_schedule(prior, steps):
    """DDIM (η = 0) on the baselines' timesteps, in the five-coefficient form of
    :mod:`silo_rt.schedule`: ``z' = c2·ẑ0 + c3·z_t`` with ``ε = (z_t − √ᾱ ẑ0)/√(1 − ᾱ)``."""
    ddpm = from_scheduler(prior.scheduler, steps)
    rows = ddpm.coefficients.astype(np.float64).copy()
    alphas = prior.scheduler.alphas_cumprod.double().numpy()
    for i, t in enumerate(ddpm.timesteps):
        a = alphas[t]
        a_prev = alphas[ddpm.timesteps[i + 1]] if i + 1 < steps else 1.0
        rows[i, 2] = np.sqrt(a_prev) - np.sqrt(1 - a_prev) * np.sqrt(a) / np.sqrt(1 - a)
        rows[i, 3] = np.sqrt(1 - a_prev) / np.sqrt(1 - a)
        rows[i, 4] = 0.0
    return Schedule(ddpm.timesteps, rows.astype(np.float32)), alphas[ddpm.timesteps]


@pytest.mark.parametrize("task", ["sr4", "ip"])
def test_without_consistency_it_is_latent_dps_ddim(tiny_prior, task):
    """LDPS's step (silo_rt.baselines) on a DDIM schedule with ω_t = 0.5·ᾱ_t."""
    steps, seed = 6, 4
    y = _measurement(tiny_prior, task, seed=1)
    options = SamplingOptions(task, steps=steps, seed=seed)
    ours, stats = restore_resample(tiny_prior, y, options, ReSampleSettings(consistency=False))
    assert stats.consistency == []

    start = prepare_sampling(tiny_prior, options, tiny_prior.latent_shape(64),
                             NoiseSource(seed))
    schedule, alphas = _ddim_schedule(tiny_prior, steps)
    ldps = DecoderGuidedStep(tiny_prior, task, "ldps", BaselineWeights())
    step_index = iter(range(steps))

    def step(z_t, timestep, coefficients, n):
        ldps.weights = BaselineWeights(omega=0.5 * float(alphas[next(step_index)]))
        return ldps(z_t, timestep, coefficients, n, y, start.context)

    theirs = decode_latent(tiny_prior, run_steps(start.z, schedule, start.step_noise, step))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    # and the DPS gradient matters: ω = 0 gives something else
    plain, _ = restore_resample(tiny_prior, y, options,
                                ReSampleSettings(consistency=False, dps_scale=0.0))
    assert float((plain - ours).abs().max()) > 1e-3


def test_the_same_seed_gives_the_same_restoration(tiny_prior):
    y = _measurement(tiny_prior, seed=2)
    settings = ReSampleSettings(pixel_iterations=40, latent_iterations=4, every=3)
    first, stats = restore_resample(tiny_prior, y, SamplingOptions("sr4", steps=12, seed=7),
                                    settings)
    again, _ = restore_resample(tiny_prior, y, SamplingOptions("sr4", steps=12, seed=7),
                                settings)
    other, _ = restore_resample(tiny_prior, y, SamplingOptions("sr4", steps=12, seed=8),
                                settings)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert float((first - other).abs().max()) > 1e-3
    # 12 steps, every 3rd index up to 12 - 4 = 8: pixel at 6, latent at 3, then the final one
    assert [(i, k) for i, k, _ in stats.consistency] == [(5, "pixel"), (8, "latent"),
                                                         (12, "latent")]
    assert stats.to_json() == {"consistency_steps": 3, "pixel_iterations": 40,
                               "latent_iterations": 8}
    assert torch.isfinite(first).all() and float(first.abs().max()) <= 1.0
