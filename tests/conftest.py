"""Shared fixtures: the random-weight ``tiny`` prior (built once) and small test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_and_pinned_auto(tmp_path_factory):
    """Caches go to a folder of this run, never to the user's ``~/.cache``; and ``--backend
    auto`` runs ONNX Runtime on a CPU (its timing-dependent choice would make tests that
    compare outputs depend on the machine). Also for the commands the tests start.
    ``tests/test_cpu_backends.py`` unpins it to test the choice itself."""
    import os

    settings = {"XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache")),
                "SILO_RT_AUTO_CPU": "ort"}
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

TOLERANCES = {
    # What "equal" means in these tests, by the arithmetic of the comparison (as kornia's
    # _DTYPE_PRECISIONS). Use ``**TOLERANCES[...]`` instead of literals.
    "float64": {"rtol": 1e-10, "atol": 1e-10},  # closed forms, adjoints, in float64
    "float64-matrix": {"rtol": 0, "atol": 1e-12},  # two float64 formulas of one matrix
    "float32": {"rtol": 1e-5, "atol": 1e-5},  # a float32 computation against float64/numpy
    "float32-pixels": {"rtol": 0, "atol": 1e-6},  # float32 images through numpy and torch
}
END_TO_END_RELATIVE = 1e-3
"""Relative L2 difference allowed between two float32 restorations of hundreds of steps
(ONNX Runtime / CUDA vs the PyTorch reference): rounding, amplified by the sampler."""


@pytest.fixture(scope="session")
def tiny_prior():
    from silo_rt.prior import load_prior

    return load_prior("tiny")


def smooth_image(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth, colourful ``(1, 3, size, size)`` float32 image in [-1, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 6)
        channels.append(0.8 * np.sin(2 * np.pi * (fx * xx + phase)) * np.cos(2 * np.pi * fy * yy))
    return np.stack(channels)[None].astype(np.float32)


@pytest.fixture
def image_array():
    return smooth_image()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """A folder of 6 smooth RGB PNGs (80×72) for training tests."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        arr = smooth_image(80, seed=i)[0, :, :72, :]
        Image.fromarray(((arr.transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)).save(
            folder / f"img{i}.png")
    return folder
