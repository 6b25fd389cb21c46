"""The DDIM update beside the paper's DDPM one: coefficients against diffusers' own
schedulers and the guided loop with η = 0 against ``DDIMScheduler.step`` (the bundle against
the reference for ``ddim``: ``test_compact_bundles.py``)."""

import copy

import numpy as np
import pytest
import torch

from silo_rt.errors import SiloError
from silo_rt.prior import sd_scheduler
from silo_rt.sampler import SamplingOptions, run_steps
from silo_rt.schedule import alphas_record, from_alphas, from_scheduler
from silo_rt.step import GuidedStep


def _ddim_scheduler(ddpm):
    from diffusers import DDIMScheduler

    # set_alpha_to_one: the last step lands on ẑ0, as the paper's DDPM schedule here does.
    return DDIMScheduler.from_config(ddpm.config, set_alpha_to_one=True)


@pytest.mark.parametrize("steps", [1, 10, 25, 50, 250, 999])
def test_ddim_update_equals_diffusers_step(steps):
    """``c2·ẑ0 + c3·z_t`` (c4 = 0) is ``DDIMScheduler.step(eta=0)`` at every timestep, and
    the timesteps are DDPM's (the numpy rebuild of a bundle gives the same numbers).

    One documented difference: at 999 steps (``steps_offset`` 1) diffusers' DDIM ends at
    t = 1 → 0, one noise level short of clean; here, as in the DDPM schedule, the last step
    lands on ẑ0 (the paper's t = T…1)."""
    ddpm = sd_scheduler()
    schedule = from_scheduler(copy.deepcopy(ddpm), steps, "ddim")
    record = alphas_record(ddpm)
    rebuilt = from_alphas(record["alphas_cumprod"], steps, record["steps_offset"], "ddim")
    np.testing.assert_array_equal(rebuilt.coefficients, schedule.coefficients)
    ddim = _ddim_scheduler(ddpm)
    ddim.set_timesteps(steps)
    np.testing.assert_array_equal(schedule.timesteps, ddim.timesteps.numpy())
    gen = torch.Generator().manual_seed(steps)
    z = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    eps = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    for i, t in enumerate(ddim.timesteps):
        c = torch.from_numpy(schedule.coefficients[i]).double()
        z0 = c[0] * z + c[1] * eps
        ours = c[2] * z0 + c[3] * z
        theirs = ddim.step(eps, t, z, eta=0.0).prev_sample
        if i == steps - 1 and int(t) - ddim.config.num_train_timesteps // steps >= 0:
            theirs = z0  # the last step lands on ẑ0
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
        assert c[4] == 0.0


def test_ddim_and_ddpm_differ_and_unknown_sampler_refused():
    record = alphas_record(sd_scheduler())
    ddpm = from_alphas(record["alphas_cumprod"], 50, record["steps_offset"], "ddpm")
    ddim = from_alphas(record["alphas_cumprod"], 50, record["steps_offset"], "ddim")
    np.testing.assert_array_equal(ddpm.coefficients[:, :2], ddim.coefficients[:, :2])
    assert not np.allclose(ddpm.coefficients[:-1, 2:4], ddim.coefficients[:-1, 2:4])
    assert (ddpm.coefficients[:-1, 4] > 0).all() and (ddim.coefficients[:, 4] == 0).all()
    np.testing.assert_allclose(ddim.coefficients[-1, 2:], [1.0, 0.0, 0.0], atol=1e-7)
    with pytest.raises(SiloError, match="unknown sampler 'euler'"):
        from_alphas(record["alphas_cumprod"], 50, 0, "euler")
    with pytest.raises(SiloError, match="sampler"):
        SamplingOptions(task="sr4", sampler="plms").validate()


def test_guided_loop_with_eta_zero_is_diffusers_ddim(tiny_prior):
    """The whole guided loop with η = 0 and the ddim schedule is diffusers' DDIM sampling."""
    from silo_rt.operators import OperatorConfig, build_operator

    steps, shape = 20, tiny_prior.latent_shape(64)
    schedule = from_scheduler(copy.deepcopy(tiny_prior.scheduler), steps, "ddim")
    context = tiny_prior.encode_prompt("")
    z_T = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    scheduler = _ddim_scheduler(tiny_prior.scheduler)
    scheduler.set_timesteps(steps)
    z = z_T.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            eps = tiny_prior.unet(z, t, encoder_hidden_states=context).sample
            z = scheduler.step(eps, t, z, eta=0.0).prev_sample
    torch.manual_seed(0)
    operator = build_operator(OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")).eval()
    step = GuidedStep(tiny_prior, operator.requires_grad_(False))
    w = torch.zeros(shape)
    noise = np.random.default_rng(0).standard_normal((steps, *shape)).astype(np.float32)

    def guided(z_t, timestep, coefficients, n):
        return step(z_t, timestep, coefficients, n, w, torch.zeros(1), context,
                    torch.tensor([0.02]))

    ours = run_steps(z_T.clone(), schedule, noise, guided)  # the noise is weighted by 0
    torch.testing.assert_close(ours, z, rtol=1e-4, atol=1e-4)
