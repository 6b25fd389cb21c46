"""Tiled restoration from a bundle (ONNX Runtime) against the tiled PyTorch reference, on
``tiny`` with 64 px tiles, at sizes no bundle was exported for; and an image of exactly the
bundle's size restored by the tile loop gives the untiled result bit for bit."""

import numpy as np
import pytest
import torch
from conftest import END_TO_END_RELATIVE

from silo_rt.degradations import get_degradation
from silo_rt.errors import SiloError
from silo_rt.export import ExportOptions, export_bundle
from silo_rt.noise import NoiseSource
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.reference_tiles import restore_by_tiles
from silo_rt.runtime import BundleRunner
from silo_rt.runtime.bundle_tiles import BundleTileModel
from silo_rt.sampler import SamplingOptions
from silo_rt.tiled import TiledRestoration

TILE = 64
SIZES = [(96, 64), (64, 160), (200, 136)]  # width x height of the restored image
STEPS = 4


_BUNDLES: dict = {}


def _bundle(prior, tmp_path_factory, arch, task, seed=3):
    """``(operator, options, bundle folder)`` for ``arch``/``task``, exported once per
    session (an export is most of these tests' time)."""
    if (arch, task) not in _BUNDLES:
        torch.manual_seed(seed)
        config = OperatorConfig.for_prior(prior, arch, task)
        operator = build_operator(config).eval().requires_grad_(False)
        options = SamplingOptions(task, steps=STEPS, seed=5)
        out = tmp_path_factory.mktemp(f"{arch}-{task}") / "bundle"
        export_bundle(prior, operator, config,
                      ExportOptions(options, TILE, include_unet_h=False), out)
        _BUNDLES[arch, task] = operator, options, out
    return _BUNDLES[arch, task]


def _measurement(task, width, height, seed=1):
    x = np.random.default_rng(seed).uniform(-1, 1, (1, 3, height, width)).astype(np.float32)
    return get_degradation(task)(torch.from_numpy(x)).numpy()


def _check_parity(prior, tmp_path_factory, arch, task, sizes=SIZES):
    operator, options, bundle = _bundle(prior, tmp_path_factory, arch, task)
    runner = BundleRunner(bundle, threads=2)
    for width, height in sizes:
        y = _measurement(task, width, height)
        ours = runner.restore(y, seed=5, overlap=2)
        ref = restore_by_tiles(prior, operator, y, options, TILE, overlap=2)
        assert ours.shape == ref.shape == (1, 3, height, width)
        error = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
        assert error < END_TO_END_RELATIVE, f"{arch}/{task} {width}x{height}: {error:.2e}"
        # sensitive: another seed is far away
        other = runner.restore(y, seed=6, overlap=2)
        assert np.linalg.norm(other - ref) / np.linalg.norm(ref) > 100 * END_TO_END_RELATIVE


def test_tiled_bundle_matches_the_tiled_reference_sr4(tiny_prior, tmp_path_factory):
    _check_parity(tiny_prior, tmp_path_factory, "cnn", "sr4")


def test_tiled_bundle_matches_the_tiled_reference_jpeg_readout(tiny_prior, tmp_path_factory):
    _check_parity(tiny_prior, tmp_path_factory, "readout", "jpeg", sizes=[(200, 136)])


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "task"),
                         [("readout", "sr4"), ("cnn", "sr8"), ("readout", "sr8"),
                          ("cnn", "gb"), ("readout", "gb"), ("cnn", "jpeg")])
def test_tiled_bundle_matches_the_tiled_reference_every_kind(tiny_prior, tmp_path_factory,
                                                             arch, task):
    _check_parity(tiny_prior, tmp_path_factory, arch, task)


def test_the_bundles_own_size_through_the_tile_loop_is_bit_for_bit_the_untiled(
        tiny_prior, tmp_path_factory):
    _, _, bundle = _bundle(tiny_prior, tmp_path_factory, "cnn", "sr4")
    runner = BundleRunner(bundle, threads=2)
    y = _measurement("sr4", TILE, TILE)
    assert runner.tiling(y) is None  # the bundle's own shape runs untiled
    whole = runner.restore(y, seed=5)
    m = runner.manifest
    timesteps, coefficients = runner.schedule()
    model = BundleTileModel(runner.graphs, m, 4, runner.context, timesteps, coefficients,
                            m.eta, m.sigma_y, None)
    looped = TiledRestoration(model, y, overlap=2)
    assert len(looped.plan) == 1
    x = looped.run(NoiseSource(5))
    np.testing.assert_array_equal(x, whole)


def test_tiles_do_not_depend_on_how_they_are_batched(tiny_prior, tmp_path_factory):
    """The reference with 1 tile per call and with 3 (the last call padded) restore the same
    image: every tile's noise is cropped from one field."""
    from silo_rt.reference_tiles import ReferenceTileModel

    operator, options, _ = _bundle(tiny_prior, tmp_path_factory, "cnn", "sr4")
    y = _measurement("sr4", 200, 136)
    results = []
    for batch in (1, 3):
        model = ReferenceTileModel(tiny_prior, operator, options, TILE, batch=batch)
        tiled = TiledRestoration(model, y, overlap=2)
        results.append(tiled.run(NoiseSource(5)))
    error = np.linalg.norm(results[0] - results[1]) / np.linalg.norm(results[0])
    assert error < 1e-5


def test_inpainting_at_another_size_is_refused_in_one_line():
    from silo_rt.demo import demo_bundle

    runner = BundleRunner(demo_bundle("ip"), threads=2)
    y = np.zeros((1, 3, 64, 96), np.float32)
    with pytest.raises(SiloError, match="cannot be restored by tiles .*centred box") as info:
        runner.restore(y)
    assert "\n" not in str(info.value)
