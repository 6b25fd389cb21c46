"""Properties every registered degradation must have, parametrised over the registry, so a
new task is checked by adding it (see silo_rt/degradations/__init__.py)."""

import numpy as np
import pytest
import torch
from conftest import TOLERANCES

from silo_rt.degradations import (
    Degradation,
    all_degradations,
    get_degradation,
    imposable_tasks,
    task_names,
)
from silo_rt.errors import SiloError

SIZE = 64
TASKS = task_names()
LINEAR = [d.name for d in all_degradations() if d.linear]
IMPOSABLE = list(imposable_tasks())


def _images(seed, count=1, size=SIZE, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-0.5, 0.5, (1, 3, size, size)).astype(dtype) for _ in range(count)]


def test_the_registry_holds_the_papers_five_tasks_once():
    assert sorted(TASKS) == ["gb", "ip", "jpeg", "sr4", "sr8"]
    assert sorted(IMPOSABLE) == IMPOSABLE and set(IMPOSABLE) == {"ip", "sr4", "sr8"}
    with pytest.raises(SiloError, match="unknown task 'denoise'; choose one of: " +
                       ", ".join(TASKS)):
        get_degradation("denoise")


@pytest.mark.parametrize("task", TASKS)
def test_metadata_and_shapes(task):
    d = get_degradation(task)
    assert isinstance(d, Degradation) and d.name == task and d.description
    assert 0 < d.eta <= 1 and d.scale in (1, 4, 8) and isinstance(d.clamp_latent, bool)
    d.check_size(SIZE)
    x = torch.from_numpy(_images(0, dtype=np.float32)[0])
    y = d(x)
    side = d.measurement_size(SIZE)
    assert y.shape == (1, 3, side, side) and torch.isfinite(y).all()
    assert d.encoder_input(y, SIZE).shape == (1, 3, SIZE, SIZE)
    base = d.baseline(y.numpy(), SIZE)
    assert base.shape == (1, 3, SIZE, SIZE) and base.dtype == np.float32
    assert np.isfinite(base).all() and isinstance(d.baseline_name, str)


@pytest.mark.parametrize("task", LINEAR)
def test_linear_tasks_are_linear_and_their_transpose_is_the_adjoint(task):
    d = get_degradation(task)
    x1, x2, x3 = (torch.from_numpy(a) for a in _images(1, 3))
    torch.testing.assert_close(d(2.0 * x1 - 0.5 * x2), 2.0 * d(x1) - 0.5 * d(x2),
                               **TOLERANCES["float64"])
    y = d(x3)  # any measurement-shaped tensor
    torch.testing.assert_close((d(x1) * y).sum(), (x1 * d.transpose(y, SIZE)).sum(),
                               **TOLERANCES["float64"])


@pytest.mark.parametrize("task", IMPOSABLE)
def test_numpy_twin_matches_torch_and_the_pseudo_inverse_is_one(task):
    d = get_degradation(task)
    x, v = _images(2, 2)
    torch_a = d(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(d.apply_numpy(x), torch_a, atol=1e-12)
    # A A⁺ A = A, and A⁺ A is a projection (A⁺ A A⁺ A = A⁺ A)
    a_pinv_a = d.pseudo_inverse_numpy(d.apply_numpy(x), SIZE, SIZE)
    np.testing.assert_allclose(d.apply_numpy(a_pinv_a), torch_a, atol=1e-10)
    twice = d.pseudo_inverse_numpy(d.apply_numpy(a_pinv_a), SIZE, SIZE)
    np.testing.assert_allclose(twice, a_pinv_a, atol=1e-10)
    # the measurement is reproduced exactly by imposing it on any other image
    kept = d.keep_measured(torch_a.astype(np.float32), v.astype(np.float32))
    np.testing.assert_allclose(d(torch.from_numpy(kept.astype(np.float64))).numpy(), torch_a,
                               atol=1e-6)


@pytest.mark.parametrize("task", sorted(set(TASKS) - set(IMPOSABLE)))
def test_other_tasks_refuse_keep_measured_naming_the_choices(task):
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    with pytest.raises(SiloError, match=f"exactly \\(ip, sr4, sr8\\), not {task}"):
        get_degradation(task).keep_measured(x, x)


def test_importing_the_registry_needs_no_torch():
    import subprocess
    import sys

    code = ("import sys; import silo_rt.degradations as d; d.all_degradations(); "
            "d.get_degradation('ip').keep_measured(*[__import__('numpy').zeros((1,3,8,8))]*2); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_resizer_goes_to_the_factories_that_take_one_and_errors_are_not_swallowed(
        monkeypatch):
    """A factory's own TypeError propagates (no retry without the resizer), and a factory
    without a ``resizer`` parameter is never offered one."""
    from silo_rt.degradations import registry

    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))
    monkeypatch.setattr(registry, "_TAKES_RESIZER", set(registry._TAKES_RESIZER))
    calls = []

    @registry.register("test-broken")
    def broken(resizer="dps"):
        calls.append(resizer)
        raise TypeError("a bug inside the factory")

    @registry.register("test-plain")
    def plain():
        calls.append("plain")
        return "plain instance"

    with pytest.raises(TypeError, match="a bug inside the factory"):
        get_degradation("test-broken", resizer="torch-bicubic")
    assert get_degradation("test-plain", resizer="torch-bicubic") == "plain instance"
    assert calls == ["torch-bicubic", "plain"]
    assert get_degradation("sr8", resizer="torch-bicubic").resizer == "torch-bicubic"
