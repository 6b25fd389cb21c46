"""`restore --keep-measured`: the numpy consistency step against the torch degradations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TOLERANCES

from silo_rt.degradations import get_degradation
from silo_rt.errors import SiloError
from silo_rt.resize import bicubic_aa_matrix


@pytest.mark.parametrize("in_size,out_size", [(64, 16), (64, 8), (256, 64), (50, 13),
                                              (16, 64)])
def test_resize_matrix_is_pytorchs_antialiased_bicubic(in_size, out_size):
    x = torch.randn(2, 3, in_size, in_size, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x, size=(out_size, out_size), mode="bicubic", antialias=True,
                             align_corners=False)
    r = torch.tensor(bicubic_aa_matrix(in_size, out_size))
    assert (r @ x @ r.T - expected).abs().max() < 1e-12


@pytest.mark.parametrize("task,size", [("sr4", 64), ("sr8", 64), ("sr4", 32)])
def test_sr_result_reproduces_the_measurement_and_keeps_the_detail(task, size):
    rng = np.random.default_rng(1)
    degrade = get_degradation(task)
    truth = rng.uniform(-0.4, 0.4, (1, 3, size, size)).astype(np.float32)
    y = degrade(torch.from_numpy(truth)).numpy()
    guess = rng.uniform(-0.4, 0.4, truth.shape).astype(np.float32)

    kept = get_degradation(task).keep_measured(y, guess)

    assert np.abs(degrade(torch.from_numpy(kept)).numpy() - y).max() < 1e-5
    # the part of the guess the measurement cannot see is untouched: the change is a
    # pseudo-inverse image, so imposing the guess's own measurement changes nothing
    own = degrade(torch.from_numpy(guess)).numpy()
    degradation = get_degradation(task)
    np.testing.assert_allclose(degradation.keep_measured(own, guess), guess,
                               **TOLERANCES["float32"])
    # and imposing twice is imposing once
    np.testing.assert_allclose(get_degradation(task).keep_measured(y, kept), kept,
                               **TOLERANCES["float32"])
    # the change is the smallest one: orthogonal to everything the measurement cannot see
    # (imposing a zero measurement on z leaves exactly z's invisible part)
    z = rng.uniform(-0.4, 0.4, truth.shape).astype(np.float32)
    invisible = get_degradation(task).keep_measured(np.zeros_like(y), z).astype(np.float64)
    assert np.abs(degrade(torch.from_numpy(invisible)).numpy()).max() < 1e-5
    change = (kept - guess).astype(np.float64)
    assert abs(np.sum(change * invisible)) < 1e-4 * np.linalg.norm(change) * np.linalg.norm(
        invisible)


def test_ip_copies_exactly_the_observed_pixels():
    rng = np.random.default_rng(2)
    y, x = (rng.uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32) for _ in range(2))
    kept = get_degradation("ip").keep_measured(y, x)
    np.testing.assert_array_equal(kept[..., 8:24, 8:24], x[..., 8:24, 8:24])
    kept[..., 8:24, 8:24] = y[..., 8:24, 8:24]
    np.testing.assert_array_equal(kept, y)


@pytest.mark.parametrize("task", ["gb", "jpeg"])
def test_tasks_without_an_exact_step_are_refused(task):
    x = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(SiloError, match=f"--keep-measured .* not {task}"):
        get_degradation(task).keep_measured(x, x)


def test_a_measurement_of_the_wrong_size_is_refused():
    with pytest.raises(SiloError, match="does not fit"):
        get_degradation("sr4").keep_measured(np.zeros((1, 3, 8, 8), np.float32),
                                            np.zeros((1, 3, 64, 64), np.float32))
