"""The SR measurement models of :mod:`silo_rt.resize` against independent formulations.

DPS's resizer (with which the SILO authors made their SR measurements) is checked against a
strided convolution of the symmetrically padded image with the antialiased Keys kernel, written
here from its definition; PyTorch's antialiased bicubic against ``F.interpolate`` itself.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TOLERANCES

from silo_rt.degradations import get_degradation
from silo_rt.errors import SiloError
from silo_rt.resize import (
    bicubic_aa_matrix,
    downsampling_matrix,
    dps_resize_matrix,
    pseudo_inverse,
)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic, a = -0.5, in its MATLAB ``imresize`` form (|x|³, |x|² polynomials)."""
    ax = np.abs(x)
    return ((1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
            + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def _dps_by_convolution(image: np.ndarray, factor: int) -> np.ndarray:
    """Downsample ``(H, W)`` by an integer (even) ``factor`` as DPS's resizer defines it.

    Output pixel ``i`` covers input pixels ``f·i … f·i + f − 1``; its centre is the input
    coordinate ``c = f·i + (f − 1)/2``. The antialiased kernel is ``cubic(d / f)`` (support
    ``|d| < 2f``), so the taps with non-zero weight are ``f·i + d`` for
    ``d = −3f/2 … 5f/2 − 1`` (4f taps), weighted ``cubic((d − (f − 1)/2) / f)``, normalised.
    Beyond the borders the image is mirrored with its edge sample repeated (``symmetric``).
    Padding by ``3f/2`` on each side makes that a stride-``f`` valid convolution.
    """
    f = factor
    assert f % 2 == 0
    d = np.arange(-3 * f // 2, 5 * f // 2)
    h = _cubic((d - (f - 1) / 2) / f)
    h = h / h.sum()
    pad = 3 * f // 2
    padded = np.pad(image, pad, mode="symmetric")
    x = torch.from_numpy(padded)[None, None]
    kernel = torch.from_numpy(np.outer(h, h))[None, None]
    # conv2d correlates: out[i] = Σ_k padded[f·i + k]·h[k], and padded[f·i + k] = x[f·i + k − pad]
    out = F.conv2d(x, kernel, stride=f)[0, 0].numpy()
    assert out.shape == (image.shape[0] // f, image.shape[1] // f)
    return out


@pytest.mark.parametrize("factor,size", [(2, 16), (2, 64), (4, 16), (4, 64), (8, 16), (8, 64),
                                         (8, 512)])
def test_dps_matrix_is_a_symmetric_padded_strided_convolution(factor, size):
    rng = np.random.default_rng(factor * 1000 + size)
    image = rng.uniform(-1, 1, (size, size))
    r = dps_resize_matrix(size, size // factor)
    assert r.shape == (size // factor, size)
    np.testing.assert_allclose(r @ image @ r.T, _dps_by_convolution(image, factor),
                               rtol=0, atol=TOLERANCES["float32"]["atol"])
    # and exactly (the same sums in another order), not just to 1e-5
    np.testing.assert_allclose(r @ image @ r.T, _dps_by_convolution(image, factor),
                               **TOLERANCES["float64-matrix"])


def test_dps_border_rows_fold_the_kernel_back_symmetrically():
    # ×4 on 16 samples, first output: taps −6 … 9 fold to 5,4,3,2,1,0 | 0 … 9
    f, n = 4, 16
    d = np.arange(-6, 10)
    h = _cubic((d - 1.5) / f)
    h = h / h.sum()
    row = np.zeros(n)
    np.add.at(row, np.where(d < 0, -1 - d, d), h)
    np.testing.assert_allclose(dps_resize_matrix(n, n // f)[0], row, atol=1e-15)


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("size", [64, 512])
def test_rows_sum_to_one_and_interiors_agree(factor, size):
    dps = dps_resize_matrix(size, size // factor)
    torch_bicubic = bicubic_aa_matrix(size, size // factor)
    np.testing.assert_allclose(dps.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(torch_bicubic.sum(axis=1), 1.0, atol=1e-12)
    out = size // factor
    # rows at least 3 samples from each border: same taps, same weights
    np.testing.assert_allclose(dps[3:out - 3], torch_bicubic[3:out - 3],
                               **TOLERANCES["float64-matrix"])
    # ... and they do differ at the borders (symmetric folding vs truncation)
    assert np.abs(dps[0] - torch_bicubic[0]).max() > 1e-3
    assert np.abs(dps[-1] - torch_bicubic[-1]).max() > 1e-3


def test_the_two_models_differ_by_a_few_percent_at_x8():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (512, 512))
    dps, tb = dps_resize_matrix(512, 64), bicubic_aa_matrix(512, 64)
    a, b = dps @ x @ dps.T, tb @ x @ tb.T
    relative = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert 0.01 < relative < 0.10  # ≈ 6 % on uniform noise (only the 2 border rows differ)


def test_the_matrices_are_cached_read_only():
    r = dps_resize_matrix(64, 8)
    assert r is dps_resize_matrix(64, 8) and not r.flags.writeable
    with pytest.raises(ValueError):
        r[0, 0] = 1.0


@pytest.mark.parametrize("resizer", ["dps", "torch-bicubic"])
def test_pseudo_inverse_is_a_right_inverse(resizer):
    r = downsampling_matrix(resizer, 64, 8)
    np.testing.assert_allclose(r @ pseudo_inverse(resizer, 64, 8), np.eye(8), atol=1e-10)


@pytest.mark.parametrize("task,factor", [("sr4", 4), ("sr8", 8)])
def test_sr_degradations_are_the_named_matrices(task, factor):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(factor))
    r = torch.from_numpy(dps_resize_matrix(64, 64 // factor).copy()).float()
    dps = get_degradation(task, "dps")
    torch.testing.assert_close(dps(x), r @ x @ r.T, **TOLERANCES["float32-pixels"])
    torch.testing.assert_close(get_degradation(task)(x), dps(x), rtol=0, atol=0)  # default
    expected = F.interpolate(x, size=(64 // factor,) * 2, mode="bicubic", antialias=True,
                             align_corners=False)
    torch.testing.assert_close(get_degradation(task, "torch-bicubic")(x), expected, rtol=0,
                               atol=1e-6)


@pytest.mark.parametrize("resizer", ["dps", "torch-bicubic"])
@pytest.mark.parametrize("factor", [4, 8])
def test_encoder_input_is_torchs_antialiased_bicubic_upsampling(resizer, factor):
    # the authors upsample y with torchvision's resize(BICUBIC, antialias=True) before encoding,
    # whatever the measurement model
    y = torch.randn(1, 3, 64 // factor, 64 // factor,
                    generator=torch.Generator().manual_seed(factor))
    up = get_degradation(f"sr{factor}", resizer).encoder_input(y, 64)
    expected = F.interpolate(y, size=(64, 64), mode="bicubic", antialias=True,
                             align_corners=False)
    assert up.shape == (1, 3, 64, 64)
    torch.testing.assert_close(up, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("task", ["sr4", "sr8"])
def test_keep_measured_imposes_the_dps_measurement(task):
    rng = np.random.default_rng(5)
    truth, guess = (rng.uniform(-0.4, 0.4, (1, 3, 64, 64)).astype(np.float32)
                    for _ in range(2))
    degrade = get_degradation(task, "dps")
    y = degrade(torch.from_numpy(truth)).numpy()

    kept = get_degradation(task, "dps").keep_measured(y, guess)
    assert np.abs(degrade(torch.from_numpy(kept)).numpy() - y).max() < 1e-5
    default_kept = get_degradation(task).keep_measured(y, guess)
    assert np.abs(degrade(torch.from_numpy(default_kept)).numpy()
                  - y).max() < 1e-5  # dps is the default

    wrong = get_degradation(task, "torch-bicubic").keep_measured(y, guess)
    assert np.abs(degrade(torch.from_numpy(wrong)).numpy() - y).max() > 1e-3
    # which is right for a torch-bicubic measurement
    legacy = get_degradation(task, "torch-bicubic")
    y_legacy = legacy(torch.from_numpy(truth)).numpy()
    kept_legacy = get_degradation(task, "torch-bicubic").keep_measured(y_legacy, guess)
    assert np.abs(legacy(torch.from_numpy(kept_legacy)).numpy() - y_legacy).max() < 1e-5


def test_unknown_resizers_are_refused():
    from silo_rt.operators import OperatorConfig

    with pytest.raises(SiloError, match="unknown SR resizer 'lanczos'"):
        get_degradation("sr4", "lanczos")
    with pytest.raises(SiloError, match="unknown SR resizer"):
        downsampling_matrix("bicubic", 64, 16)
    x = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(SiloError, match="unknown SR resizer"):
        get_degradation("sr4", "pil").keep_measured(x[..., :16, :16], x)
    with pytest.raises(SiloError, match="unknown SR resizer"):
        OperatorConfig("cnn", "sr4", 64, 4, 8, 128, resizer="matlab")


def test_sr_degradation_raises_no_warning():
    """The cached read-only matrices must reach torch without its "non-writable NumPy array"
    UserWarning (torch warns once per process, so this runs in a fresh interpreter)."""
    import subprocess
    import sys

    code = ("import torch; from silo_rt.degradations import get_degradation; "
            "get_degradation('sr4')(torch.zeros(1, 3, 64, 64))")
    done = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1]
