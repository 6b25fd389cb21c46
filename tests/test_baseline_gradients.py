"""LDPS / GML-DPS / PSLD (and ReSample's DPS step) against their closed forms on a linear
toy prior.

With a linear "UNet" (ε = B z), a linear decoder (x = D z / s) and a linear encoder mean
(E x · s), every loss of :mod:`silo_rt.baselines` is a norm of an affine function of z_t, so
its gradient is written out by hand here (float64 numpy, ``A`` read off the task's numpy
twin): a sign, a weight, a missing scaling factor or a wrong gluing term changes the
guided step by far more than the float64 tolerance.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import TOLERANCES

from silo_rt.baselines import BASELINES, BaselineWeights, DecoderGuidedStep
from silo_rt.degradations import get_degradation
from silo_rt.resample import ReSampleSettings, ReSampleSolver

SIZE = 16  # image side
LATENT = (1, 4, 2, 2)
N_LATENT, N_IMAGE = int(np.prod(LATENT)), 3 * SIZE * SIZE
OMEGA, GAMMA = 0.7, 0.3  # distinct, so swapping or dropping a weight shows
COEFFICIENTS = np.array([1.3, -0.4, 0.6, 0.8, 0.1])  # ẑ0 = c0 z + c1 ε; z' = c2 ẑ0 + c3 z + c4 n


class LinearPrior:
    """The parts of a :class:`~silo_rt.prior.LatentPrior` the baselines use, all linear."""

    scaling_factor = 0.5

    def __init__(self, b, d, e):
        self.b, self.d, self.e = (torch.from_numpy(m) for m in (b, d, e))
        self.vae = SimpleNamespace(decode=self._decode, encode=self._encode)

    def unet(self, z, timestep, encoder_hidden_states=None):
        return SimpleNamespace(sample=(self.b @ z.reshape(-1)).reshape(z.shape))

    def _decode(self, z):
        return SimpleNamespace(sample=(self.d @ z.reshape(-1)).reshape(1, 3, SIZE, SIZE))

    def _encode(self, x):
        mean = (self.e @ x.reshape(-1)).reshape(LATENT)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=mean))


def operator_matrix(task):
    """``A`` as a dense float64 matrix, column by column from the numpy twin of the task."""
    degradation = get_degradation(task)
    basis = np.eye(N_IMAGE).reshape(N_IMAGE, 3, SIZE, SIZE)
    return degradation.apply_numpy(basis).reshape(N_IMAGE, -1).T


def expected_step(method, a, b, d, e, s, z, y, noise):
    """``(z_{t−1}, L)`` of one guided step, from the formulas in the baselines' docstring."""
    c0, c1, c2, c3, c4 = COEFFICIENTS
    k = c0 * np.eye(N_LATENT) + c1 * b  # ẑ0 = K z
    z0 = k @ z
    dk = d @ k / s  # x̂0 = D ẑ0 / s
    r = y - a @ dk @ z
    loss = OMEGA * np.linalg.norm(r)
    grad = -OMEGA * (a @ dk).T @ r / np.linalg.norm(r)
    if method != "ldps":
        if method == "gml-dps":  # q = ẑ0 − s E x̂0
            q_of_z, q_offset = k - s * e @ dk, 0.0
        else:  # q = ẑ0 − s E (Aᵀy + (I − AᵀA) x̂0)
            q_of_z = k - s * e @ (np.eye(N_IMAGE) - a.T @ a) @ dk
            q_offset = -s * e @ a.T @ y
        q = q_of_z @ z + q_offset
        loss += GAMMA * np.linalg.norm(q)
        grad += GAMMA * q_of_z.T @ q / np.linalg.norm(q)
    return c2 * z0 + c3 * z + c4 * noise - grad, loss


@pytest.mark.parametrize("task", ["sr4", "ip"])
@pytest.mark.parametrize("method", BASELINES)
def test_guided_step_equals_its_closed_form(method, task):
    g = np.random.default_rng(0)
    b = 0.3 * g.standard_normal((N_LATENT, N_LATENT))
    d = g.standard_normal((N_IMAGE, N_LATENT)) / np.sqrt(N_LATENT)
    e = g.standard_normal((N_LATENT, N_IMAGE)) / np.sqrt(N_IMAGE)
    prior = LinearPrior(b, d, e)
    a = operator_matrix(task)
    z, noise = g.standard_normal(N_LATENT), g.standard_normal(N_LATENT)
    y = g.uniform(-1, 1, a.shape[0])

    side = SIZE // get_degradation(task).scale
    step = DecoderGuidedStep(prior, task, method, BaselineWeights(OMEGA, GAMMA))
    z_prev, loss = step(torch.from_numpy(z).reshape(LATENT), torch.tensor([500.0]),
                        torch.from_numpy(COEFFICIENTS), torch.from_numpy(noise).reshape(LATENT),
                        torch.from_numpy(y).reshape(1, 3, side, side), None)

    want_z, want_loss = expected_step(method, a, b, d, e, prior.scaling_factor, z, y, noise)
    np.testing.assert_allclose(float(loss), want_loss, **TOLERANCES["float64"])
    np.testing.assert_allclose(z_prev.numpy().reshape(-1), want_z, **TOLERANCES["float64"])
    # The guidance is a sizeable part of the step: a wrong sign would be far outside tolerance.
    unguided = COEFFICIENTS[2] * (COEFFICIENTS[0] * z + COEFFICIENTS[1] * b @ z) \
        + COEFFICIENTS[3] * z + COEFFICIENTS[4] * noise
    assert np.linalg.norm(want_z - unguided) > 0.1


def test_guidance_lowers_the_measurement_loss():
    """A small guided step (no prior drift, no noise) descends ω‖y − A x̂0‖: the sign."""
    g = np.random.default_rng(1)
    d = g.standard_normal((N_IMAGE, N_LATENT)) / np.sqrt(N_LATENT)
    prior = LinearPrior(np.zeros((N_LATENT, N_LATENT)), d, np.zeros((N_LATENT, N_IMAGE)))
    step = DecoderGuidedStep(prior, "sr4", "ldps", BaselineWeights(0.05, 0.0))
    coefficients = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    z = torch.from_numpy(g.standard_normal(LATENT))
    y = torch.from_numpy(g.uniform(-1, 1, (1, 3, SIZE // 4, SIZE // 4)))
    args = (torch.tensor([500.0]), coefficients, torch.zeros(LATENT, dtype=torch.float64), y,
            None)
    z_next, before = step(z, *args)
    _, after = step(z_next, *args)
    assert float(after) < float(before)


def test_resample_dps_step_equals_its_closed_form():
    """ReSample's DDIM step with the DPS gradient (``dps_scale · ᾱ_t`` on ∇‖y − A D(ẑ0)‖)."""
    g = np.random.default_rng(2)
    b = 0.3 * g.standard_normal((N_LATENT, N_LATENT))
    d = g.standard_normal((N_IMAGE, N_LATENT)) / np.sqrt(N_LATENT)
    prior = LinearPrior(b, d, np.zeros((N_LATENT, N_IMAGE)))
    a = operator_matrix("sr4")
    z, y = g.standard_normal(N_LATENT), g.uniform(-1, 1, a.shape[0])
    a_t, a_prev, scale = 0.4, 0.6, 0.7
    solver = ReSampleSolver(prior, "sr4", ReSampleSettings(dps_scale=scale))
    z_prev, loss = solver.dps_step(torch.from_numpy(z).reshape(LATENT), torch.tensor([500.0]),
                                   a_t, a_prev, torch.from_numpy(y).reshape(1, 3, 4, 4), None)

    k = (np.eye(N_LATENT) - np.sqrt(1 - a_t) * b) / np.sqrt(a_t)  # ẑ0 = K z (Eq. 12)
    m = a @ d @ k / prior.scaling_factor
    r = y - m @ z
    grad = -m.T @ r / np.linalg.norm(r)
    want = np.sqrt(a_prev) * k @ z + np.sqrt(1 - a_prev) * b @ z - scale * a_t * grad
    np.testing.assert_allclose(float(loss), np.linalg.norm(r), **TOLERANCES["float64"])
    np.testing.assert_allclose(z_prev.numpy().reshape(-1), want, **TOLERANCES["float64"])
    assert np.linalg.norm(scale * a_t * grad) > 0.1
