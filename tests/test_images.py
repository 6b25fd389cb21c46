"""Image files: atomic writes with the usual permissions, PSNR's closed form."""

import os

import numpy as np
import pytest
from conftest import TOLERANCES

from silo_rt.images import psnr, read_image, write_image


def test_written_images_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    path = tmp_path / "x.png"
    write_image(path, np.zeros((1, 3, 8, 8), np.float32))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert not [p for p in tmp_path.iterdir() if p.name != "x.png"]  # no temporary left


def test_psnr_closed_form():
    a = np.zeros((1, 3, 4, 4), np.float32)
    b = np.full_like(a, 0.2)  # mse 0.04, peak-to-peak range 2
    assert psnr(a, b) == pytest.approx(10 * np.log10(4 / 0.04))
    assert psnr(a, a) == float("inf")


def test_png_roundtrip_is_8_bit_exact(tmp_path):
    levels = (np.arange(256, dtype=np.float32) / 127.5 - 1).reshape(1, 1, 16, 16)
    image = np.repeat(levels, 3, axis=1)
    write_image(tmp_path / "g.png", image)
    np.testing.assert_allclose(read_image(tmp_path / "g.png"), image,
                               **TOLERANCES["float32-pixels"])
