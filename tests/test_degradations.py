"""Degradations against independent numpy / Pillow computations."""

import io

import numpy as np
import pytest
import torch
from conftest import TOLERANCES
from PIL import Image

from silo_rt.degradations import add_noise, box_mask, gaussian_kernel, get_degradation
from silo_rt.errors import SiloError


def test_gaussian_kernel_matches_closed_form():
    k = gaussian_kernel().numpy().astype(np.float64)
    c = np.arange(61) - 30
    g = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * 3.0**2))
    np.testing.assert_allclose(k, g / g.sum(), rtol=1e-5, atol=1e-10)


def test_blur_matches_numpy_reflect_convolution():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (1, 2, 36, 40)).astype(np.float32)
    out = get_degradation("gb")(torch.from_numpy(x)).numpy()
    kernel = gaussian_kernel().numpy().astype(np.float64)
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (30, 30), (30, 30)), mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (61, 61), axis=(2, 3))
    expected = np.einsum("bchwij,ij->bchw", windows, kernel)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, expected, atol=2e-6)


def _pil_resize(channels: np.ndarray, size: int) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(c, mode="F").resize((size, size),
                                                                    Image.BICUBIC))
                     for c in channels])


@pytest.mark.parametrize("factor", [4, 8])
def test_super_resolution_matches_pillow_bicubic(factor, image_array):
    # Pillow's bicubic is the torch-bicubic measurement model (the default is now DPS's)
    sr = get_degradation(f"sr{factor}", resizer="torch-bicubic")
    y = sr(torch.from_numpy(image_array))[0].numpy()
    expected = _pil_resize(image_array[0], 64 // factor)
    assert y.shape == (3, 64 // factor, 64 // factor)
    np.testing.assert_allclose(y, expected, **TOLERANCES["float32"])
    up = sr.encoder_input(torch.from_numpy(expected[None]), 64)[0].numpy()
    np.testing.assert_allclose(up, _pil_resize(expected, 64), **TOLERANCES["float32"])


@pytest.mark.parametrize("size", [64, 512])
def test_box_mask_geometry(size):
    mask = box_mask(size)[0, 0].numpy()
    lo, hi = size // 4, size // 4 + size // 2
    assert (mask == 0).sum() == (size // 2) ** 2
    assert mask[lo:hi, lo:hi].max() == 0 and mask[lo - 1, lo] == 1 and mask[hi, hi - 1] == 1
    if size == 512:
        assert (lo, hi) == (128, 384)


def test_inpainting_keeps_outside_and_zeroes_box(image_array):
    y = get_degradation("ip")(torch.from_numpy(image_array)).numpy()
    mask = box_mask(64).numpy()
    np.testing.assert_array_equal(y, image_array * mask)


def test_jpeg_is_close_to_pillow_quality_10(image_array):
    y = get_degradation("jpeg")(torch.from_numpy(image_array))[0].numpy()
    pixels = ((image_array[0].transpose(1, 2, 0) + 1) * 127.5).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=10)
    ref = np.asarray(Image.open(buf), np.float32).transpose(2, 0, 1) / 127.5 - 1
    psnr_vs_pillow = 10 * np.log10(4 / np.mean((y - ref) ** 2))
    psnr_vs_clean = 10 * np.log10(4 / np.mean((y - image_array[0]) ** 2))
    assert psnr_vs_pillow > psnr_vs_clean + 3  # it really compresses like JPEG q10
    assert y.min() >= -1 and y.max() <= 1


@pytest.mark.parametrize("task", ["gb", "sr4", "sr8", "ip"])
def test_transpose_is_the_adjoint(task):
    a = get_degradation(task)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 64, 64, generator=g, dtype=torch.float64)
    y = torch.randn(a(x).shape, generator=g, dtype=torch.float64)
    lhs = (a(x) * y).sum()
    rhs = (x * a.transpose(y, 64)).sum()
    torch.testing.assert_close(lhs, rhs, **TOLERANCES["float64"])


def test_jpeg_has_no_transpose():
    with pytest.raises(SiloError, match="not linear"):
        get_degradation("jpeg").transpose(torch.zeros(1, 3, 64, 64), 64)


def test_noise_std_and_seed():
    y = torch.zeros(1, 3, 128, 128)
    a = add_noise(y, 0.05, np.random.default_rng(3))
    b = add_noise(y, 0.05, np.random.default_rng(3))
    torch.testing.assert_close(a, b)
    assert abs(float(a.std()) - 0.05) < 0.002


def test_unknown_task_and_bad_sizes():
    with pytest.raises(SiloError, match="unknown task"):
        get_degradation("denoise")
    with pytest.raises(SiloError, match="divisible by 64"):
        get_degradation("sr8").check_size(96)
    with pytest.raises(SiloError):
        add_noise(torch.zeros(1), -1.0, np.random.default_rng(0))
