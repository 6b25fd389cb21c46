"""`silo-rt restore --samples K`: the samples, their mean and std map, the heat map.

On the embedded sr4 demo bundle with 4 steps (a fraction of a second per sample).
"""

from types import SimpleNamespace

import numpy as np
import pytest
from cli_run import run
from conftest import TOLERANCES
from PIL import Image

from silo_rt.images import read_image, to_uint8
from silo_rt.posterior import (
    COLORMAP,
    draw_samples,
    heatmap,
    heatmap_picture,
    sample_paths,
    sample_seed,
    summarise,
)

LEVEL = 2 / 255  # one 8-bit level in [-1, 1] units




@pytest.fixture(scope="module")
def runner():
    from silo_rt.demo import demo_bundle
    from silo_rt.runtime import BundleRunner

    return BundleRunner(demo_bundle("sr4"), threads=1)


@pytest.fixture
def measurement(tmp_path):
    y = tmp_path / "y.png"
    pixels = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(y)
    return y


def test_summarise_is_numpys_mean_and_channel_averaged_std():
    samples = np.random.default_rng(0).uniform(-1, 1, (5, 2, 3, 8, 8)).astype(np.float32)
    mean, std = summarise(samples)
    assert mean.shape == (2, 3, 8, 8) and std.shape == (2, 8, 8)
    np.testing.assert_allclose(mean, samples.mean(axis=0), **TOLERANCES["float32-pixels"])
    np.testing.assert_allclose(std, samples.std(axis=0).mean(axis=1),
                               **TOLERANCES["float32-pixels"])
    assert not summarise(samples[:1])[1].any()  # one sample: no spread


def test_sample_zero_is_the_plain_restoration_and_samples_differ(runner, measurement):
    y = read_image(measurement)
    drawn = draw_samples(runner, y, 3, seed=5, steps=4)
    assert drawn.shape == (3, 1, 3, 64, 64)
    np.testing.assert_array_equal(drawn[0], runner.restore(y, 5, steps=4))
    np.testing.assert_array_equal(drawn[2], runner.restore(y, sample_seed(5, 2), steps=4))
    assert np.abs(drawn[1] - drawn[0]).mean() > 0.01
    assert len({sample_seed(5, i) for i in range(64)}) == 64


def test_cli_writes_samples_mean_and_std_that_match_numpy(runner, measurement, tmp_path,
                                                         capsys):
    """The written samples are the library's, OUT is their mean and the std map is numpy's
    std over them (within 8-bit quantisation); the comparison gains the two panels."""
    out, compare = tmp_path / "x.png", tmp_path / "cmp.png"
    reference = tmp_path / "ref.png"
    Image.new("RGB", (64, 64), (120, 90, 60)).save(reference)
    code, stdout, err = run(["restore", measurement, "--out", out, "--samples", "4", "--seed",
                             "5", "--steps", "4", "--threads", "1", "--compare", compare,
                             "--reference", reference], capsys)
    assert code == 0, err
    files, std_path = sample_paths(out, 4)
    assert [f.name for f in files] == [f"x.sample{i}.png" for i in range(1, 5)]
    drawn = draw_samples(runner, read_image(measurement), 4, seed=5, steps=4)
    mean, std = summarise(drawn)
    written = np.stack([read_image(f) for f in files])
    for sample, path in zip(drawn, files):  # each file is its sample, 8-bit rounded
        assert np.array_equal(np.asarray(Image.open(path)), to_uint8(sample))
    assert np.abs(read_image(out) - mean).max() <= LEVEL / 2 + 1e-6
    back_mean, back_std = summarise(written)  # numpy over the PNGs read back
    assert np.abs(read_image(out) - back_mean).max() <= LEVEL
    assert np.abs(back_std - std).max() <= LEVEL
    assert "spread over 4 samples" in stdout and f"max std {std.max():.4f}" in stdout
    assert "mean of 4" in stdout and "single samples" in stdout
    heat = np.asarray(Image.open(std_path).convert("RGB"))
    assert heat.shape[0] == 256 and heat.shape[1] > 256  # the map enlarged, the bar beside
    np.testing.assert_array_equal(heat[:256:4, :256:4], heatmap(std[0]))
    picture = Image.open(compare)
    assert picture.width > 4 * 256  # measurement, mean, std map, reference


def test_one_sample_has_zero_spread(measurement, tmp_path, capsys):
    out = tmp_path / "x.png"
    code, stdout, err = run(["restore", measurement, "--out", out, "--samples", "1",
                             "--steps", "4", "--threads", "1"], capsys)
    assert code == 0, err
    files, std_path = sample_paths(out, 1)
    assert out.read_bytes() == files[0].read_bytes()
    assert "mean std 0.0000, max std 0.0000" in stdout
    heat = np.asarray(Image.open(std_path).convert("RGB"))
    assert (heat[:256, :256] == COLORMAP[0]).all()  # the colour of zero: nothing varies


class FakeRunner:
    manifest = SimpleNamespace(measurement_shape=[3, 3, 16, 16], batch=3)

    def __init__(self):
        self.seeds = []

    def restore(self, y, seed, eta=None, sigma_y=None, steps=None, keep_measured=False,
                sampler="ddpm"):
        self.seeds.append(seed)
        return np.random.default_rng(seed).uniform(-1, 1, (y.shape[0], 3, 64, 64)).astype(
            np.float32)


def test_a_batched_bundle_draws_a_batch_of_samples_per_call():
    fake = FakeRunner()
    drawn = draw_samples(fake, np.zeros((1, 3, 16, 16), np.float32), 5, seed=2)
    assert drawn.shape == (5, 1, 3, 64, 64)
    assert fake.seeds == [sample_seed(2, 0), sample_seed(2, 1)]
    np.testing.assert_array_equal(drawn[3], FakeRunner().restore(np.zeros((3,)), fake.seeds[1])
                                  [:1])


def test_heatmap_colours_and_scale_bar():
    std = np.linspace(0, 0.5, 64 * 64).reshape(64, 64)
    rgb = heatmap(std)
    assert (rgb[0, 0] == COLORMAP[0]).all() and (rgb[-1, -1] == COLORMAP[255]).all()
    assert (heatmap(std, vmax=1.0)[-1, -1] == COLORMAP[128]).all()
    brightness = COLORMAP.astype(int).sum(axis=1)
    assert brightness[-1] > brightness[128] > brightness[0]
    picture = heatmap_picture(std)
    assert picture.height == 256 and picture.width > 256 + 16


def test_sample_errors_are_one_line_and_write_nothing(measurement, tmp_path, capsys):
    out = tmp_path / "x.png"
    (tmp_path / "x.std.png").mkdir()  # an output that cannot be written
    code, _, err = run(["restore", measurement, "--out", out, "--samples", "2", "--steps", "4"],
                       capsys)
    assert code == 2 and "is a folder" in err and not out.exists()
    assert not list(tmp_path.glob("x.sample*"))
    for bad in ("0", "65"):
        code, _, err = run(["restore", measurement, "--out", out, "--samples", bad], capsys)
        assert code == 2 and "'--samples'" in err
    code, _, err = run(["restore", measurement, "--out", tmp_path / "z.png", "--samples", "2",
                        "--model", "tiny", "--operator", "op.safetensors", "--task", "sr4"],
                       capsys)
    assert code == 2 and "--samples runs a bundle" in err
