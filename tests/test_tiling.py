"""The tiling plan (:mod:`silo_rt.tiling`) and the tiled loop (:mod:`silo_rt.tiled`) against
closed forms: coverage, a partition of unity, exact crops, padding, and a loop whose result
is known without tiles."""

import numpy as np
import pytest

from silo_rt.errors import SiloError
from silo_rt.noise import NoiseSource
from silo_rt.tiled import TiledRestoration
from silo_rt.tiling import Padding, TilePlan, axis_weights, plan_for, tile_starts


@pytest.mark.parametrize(("length", "tile", "overlap"),
                         [(8, 8, 2), (9, 8, 2), (15, 8, 2), (20, 8, 0), (64, 8, 4), (100, 64, 2)])
def test_tiles_cover_the_axis_with_the_last_flush_and_at_least_the_overlap(length, tile,
                                                                           overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile
    assert starts == sorted(set(starts))
    for a, b in zip(starts, starts[1:]):
        assert a + tile - b >= overlap  # neighbours share at least the overlap
        assert b - a <= tile - overlap  # and never leave a gap
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all()


def test_an_overlap_as_large_as_the_tile_is_refused():
    with pytest.raises(SiloError, match="overlap"):
        tile_starts(20, 8, 8)
    with pytest.raises(SiloError, match="pad it first"):
        tile_starts(7, 8, 2)


@pytest.mark.parametrize("factor", [1, 4, 8])
@pytest.mark.parametrize(("height", "width", "overlap"), [(15, 20, 2), (8, 30, 0), (17, 9, 3)])
def test_weights_are_a_partition_of_unity_so_a_constant_field_stays_constant(height, width,
                                                                             overlap, factor):
    plan = TilePlan(height, width, 8, overlap)
    blender = plan.blender((2, 3), factor)
    rng = np.random.default_rng(0)
    field = rng.standard_normal((2, 3, height * factor, width * factor)).astype(np.float32)
    for k, tile in enumerate(plan.tiles):
        blender.add(k, plan.crop(field, tile, factor))
    # every tile carries the field's own values: blending must give the field back
    np.testing.assert_allclose(blender.result(), field, rtol=1e-5, atol=1e-6)
    # two neighbours' weights sum to one across their shared band (no division needed)
    if len(plan.cols) == 2 and len(plan.rows) == 1:
        np.testing.assert_allclose(blender.norm, 1.0, atol=1e-6)


def test_the_crossfade_is_raised_cosine_and_falls_towards_the_inner_border():
    w = axis_weights([0, 6], 0, 8)  # shares columns 6, 7 with the next tile
    np.testing.assert_allclose(w[:6], 1.0)
    np.testing.assert_allclose(w[6:], np.cos(0.5 * np.pi * np.array([0.5, 1.5]) / 2) ** 2,
                               rtol=1e-6)
    nxt = axis_weights([0, 6], 1, 8)
    np.testing.assert_allclose(w[6:] + nxt[:2], 1.0, rtol=1e-6)
    assert (np.diff(w[5:]) < 0).all()


def test_a_single_tile_comes_back_exactly():
    plan = TilePlan(8, 8, 8, 2)
    blender = plan.blender((1, 4))
    values = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    blender.add(0, values)
    np.testing.assert_array_equal(blender.result(), values)


def test_padding_reaches_the_latent_grid_and_one_tile_and_crops_back():
    pad = Padding(height=30, width=41, scale=4, tile_px=64, vae_scale=8)
    assert pad.image_shape == (120, 164)
    assert pad.padded_image_shape == (120, 168) and pad.latent_shape == (15, 21)
    y = np.arange(30 * 41, dtype=np.float32).reshape(1, 1, 30, 41)
    padded = pad.pad_measurement(y)
    assert padded.shape == (1, 1, 30, 42)
    np.testing.assert_array_equal(padded[..., :41], y)
    np.testing.assert_array_equal(padded[..., 41], y[..., 40])  # mirrored, edge repeated
    assert pad.crop_image(np.zeros((1, 3, 120, 168))).shape == (1, 3, 120, 164)
    small = Padding(height=5, width=3, scale=1, tile_px=64)
    assert small.padded_image_shape == (64, 64)  # smaller than a tile: padded up to one
    assert small.pad_measurement(np.ones((1, 3, 5, 3))).shape == (1, 3, 64, 64)


def test_a_plan_refuses_a_tile_off_the_latent_grid():
    with pytest.raises(SiloError, match="multiple of 8"):
        plan_for(30, 40, 4, 60)


class LinearTiles:
    """A stand-in model whose tiled result has a closed form: encode is the identity on a
    4-channel measurement-sized latent (scale 8: one measurement pixel per latent pixel),
    a step is ``z ← a·z + b·w + c·n``, decode repeats each latent pixel 8×8 (channel 0 of
    3). Every operation is pointwise, so tiling with any overlap must equal the untiled
    arithmetic on the full field."""

    tile_px, scale, vae_scale, latent_channels = 64, 8, 8, 4
    init_noise_sigma = 1.0

    def __init__(self, batch, steps=3):
        self.batch = batch
        self.timesteps = np.arange(steps)[::-1]
        self.calls = []

    def encode(self, y, noise):
        assert y.shape == (self.batch, 3, 8, 8)
        return np.concatenate([y, y[:, :1]], axis=1) + 0.1 * noise

    def step(self, index, z, w, noise):
        self.calls.append(z.shape[0])
        return 0.9 * z + 0.05 * w + 0.01 * (index + 1) * noise, 1.0

    def decode(self, z):
        return z[:, :3].repeat(8, axis=-1).repeat(8, axis=-2)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("overlap", [0, 2, 5])
def test_a_pointwise_model_tiled_equals_the_untiled_closed_form(batch, overlap):
    y = np.random.default_rng(2).uniform(-1, 1, (2, 3, 13, 21)).astype(np.float32)
    model = LinearTiles(batch)
    tiled = TiledRestoration(model, y, overlap)
    assert tiled.plan.height == 13 and tiled.plan.width == 21
    steps = 3
    x = tiled.run(NoiseSource(4))
    assert x.shape == (2, 3, 13 * 8, 21 * 8)
    assert all(size == batch for size in model.calls)  # every call is a full batch

    noise = NoiseSource(4)
    shape = (2, 4, 13, 21)
    w = np.concatenate([y, y[:, :1]], axis=1) + 0.1 * noise.encoder_noise(shape)
    z = noise.initial_latent(shape)
    for i, n in enumerate(noise.step_noise(steps, shape)):
        z = 0.9 * z + 0.05 * w + 0.01 * (i + 1) * n
    expected = z[:, :3].repeat(8, axis=-1).repeat(8, axis=-2)
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_a_latent_pixel_smaller_than_a_measurement_pixel_is_refused():
    model = LinearTiles(1)
    model.scale, model.vae_scale = 8, 4  # sr8 on a 4x VAE: tiles would split pixels
    with pytest.raises(SiloError, match="whole measurement pixels"):
        TiledRestoration(model, np.zeros((1, 3, 16, 16), np.float32))
