"""Shared fixtures: the random-weight ``tiny`` prior (built once) and small test images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(2)


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
