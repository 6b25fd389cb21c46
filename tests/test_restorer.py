"""The Python entry point :class:`silo_rt.Restorer`: the same numbers as the engines it
wraps (bundle runner, PyTorch reference), samples, tiles, CPSNR, inputs it accepts."""

import numpy as np
import pytest
import torch
from PIL import Image

from silo_rt import Restorer
from silo_rt.demo import demo_bundle
from silo_rt.errors import SiloError
from silo_rt.evaluation import consistency_psnr
from silo_rt.posterior import draw_samples
from silo_rt.runtime import BundleRunner


def _y(height=16, width=16, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (1, 3, height, width)).astype(np.float32)


def test_a_bundle_restorer_gives_the_runners_numbers_and_says_what_it_did():
    y = _y()
    with Restorer.from_bundle(demo_bundle("sr4"), backend="ort", threads=2) as restorer:
        result = restorer(y, steps=6, seed=3, eta=0.4)
    runner = BundleRunner(demo_bundle("sr4"), threads=2)
    expected = runner.restore(y, 3, 0.4, steps=6)
    np.testing.assert_array_equal(result.image, expected)
    assert result.backend.startswith("ort") and result.steps == 6 and result.eta == 0.4
    assert result.tiles == 1 and result.samples is None and result.std is None
    # measured with the SR resizer the bundle's operator was trained against
    assert result.cpsnr == pytest.approx(consistency_psnr("sr4", expected, y, runner.resizer))
    assert result.pil.size == (64, 64) and result.seconds > 0


def test_any_size_and_samples_through_the_restorer():
    y = _y(12, 20, seed=1)  # 80x48 restored by 64 px tiles
    with Restorer.from_bundle(demo_bundle("sr4"), backend="ort", threads=2) as restorer:
        assert restorer.tile_count(y) == 2
        result = restorer(y, steps=3, seed=2, samples=3, eta=0.5)
        runner = restorer.runner
        expected = draw_samples(runner, y, 3, 2, 0.5, None, 3)
    assert result.image.shape == (1, 3, 48, 80) and result.tiles == 2
    np.testing.assert_array_equal(result.samples, expected)
    np.testing.assert_allclose(result.image, expected.mean(axis=0), rtol=1e-6, atol=1e-6)
    assert result.std.shape == (1, 48, 80) and (result.std > 0).mean() > 0.9


def test_inputs_a_path_a_pil_image_and_uint8_pixels_alike(tmp_path):
    pixels = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "y.png")
    with Restorer.from_bundle(demo_bundle("sr4"), backend="ort", threads=2) as restorer:
        results = [restorer(y, steps=2).image
                   for y in (tmp_path / "y.png", Image.fromarray(pixels), pixels)]
        with pytest.raises(SiloError, match="a measurement is"):
            restorer(np.zeros((16, 16)), steps=2)
        with pytest.raises(SiloError, match="samples must be"):
            restorer(pixels, samples=0)
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[1], results[2])


def test_a_model_restorer_runs_the_reference(tiny_prior, tmp_path):
    from silo_rt.operators import OperatorConfig, build_operator, save_operator
    from silo_rt.sampler import SamplingOptions, restore

    torch.manual_seed(0)
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")
    operator = build_operator(config).eval().requires_grad_(False)
    path = save_operator(tmp_path / "op.safetensors", operator, config)
    y = _y()
    restorer = Restorer.from_model("tiny", path)
    result = restorer(y, steps=4, seed=1, eta=0.3)
    options = SamplingOptions("sr4", steps=4, eta=0.3, seed=1)
    expected = restore(restorer._engine.prior, restorer._engine.operator,
                       torch.from_numpy(y), options).numpy()
    np.testing.assert_allclose(result.image, expected, rtol=0, atol=1e-6)
    assert result.backend == "torch" and restorer.task == "sr4"
    wide = restorer(_y(16, 24), steps=2, seed=1)  # 96x64 by the operator's 64 px tiles
    assert wide.image.shape == (1, 3, 64, 96) and wide.tiles == 2
