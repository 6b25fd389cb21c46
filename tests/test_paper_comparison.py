"""`silo-rt evaluate --methods`: SILO and the decoder-in-the-loop baselines on one prior.

The demo prior ships only as ONNX; it is rebuilt in PyTorch from its bundles, and that
rebuild is checked against the bundle's own graphs before anything is compared with it.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_run import run
from conftest import TOLERANCES

from silo_rt.baselines import BaselineWeights, restore_baseline
from silo_rt.degradations import make_measurement
from silo_rt.demo import demo_bundle
from silo_rt.errors import SiloError
from silo_rt.evaluation import evaluate_bundle, parse_methods, quantise
from silo_rt.images import psnr, read_image
from silo_rt.latents import LatentDecoder, MeasurementEncoder
from silo_rt.resample import ReSampleSettings, restore_resample
from silo_rt.runtime import BundleRunner
from silo_rt.sampler import SamplingOptions

EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.fixture(scope="module")
def rebuilt_ip():
    from silo_rt.demo.torch_prior import rebuild_demo

    prior, operator, config = rebuild_demo("ip")
    return prior, operator, config


@pytest.mark.slow  # the rebuild exports a step graph: about 2.5 minutes with the next test
def test_the_rebuilt_demo_computes_what_its_bundle_does(rebuilt_ip):
    from silo_rt.demo.torch_prior import check_against_bundle

    prior, operator, config = rebuilt_ip
    assert config.task == "ip" and prior.scaling_factor != pytest.approx(0.18215)
    assert check_against_bundle(prior, operator, "ip") < 1e-5  # the fused guided step
    runner = BundleRunner(demo_bundle("ip"), threads=2)
    g = np.random.default_rng(0)
    y = g.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    n = g.standard_normal((1, 4, 16, 16)).astype(np.float32)
    with torch.no_grad():
        w = MeasurementEncoder(prior, "ip", 64)(torch.from_numpy(y), torch.from_numpy(n))
        x = LatentDecoder(prior)(torch.from_numpy(n))
    np.testing.assert_allclose(w.numpy(), runner.graphs.run("vae_encoder", measurement=y,
                                                            noise=n)[0], **TOLERANCES["float32"])
    np.testing.assert_allclose(x.numpy(), runner.graphs.run("vae_decoder", z0=n)[0],
                               **TOLERANCES["float32"])


@pytest.mark.slow
def test_the_baseline_rows_use_the_same_prior_and_seeds(rebuilt_ip, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(EXAMPLES / "cat.png", images / "a.png")
    prior, operator, _ = rebuilt_ip
    weights = BaselineWeights(0.5, 0.05)
    report = evaluate_bundle(demo_bundle("ip"), images, tmp_path, steps=4, threads=2, seed=3,
                             methods=("silo-torch", "ldps"), reference=(prior, operator),
                             baseline_weights=weights)
    row = report["per_image"][0]
    # SILO through PyTorch on the rebuilt prior = SILO from the bundle (same noise, seed 3)
    assert row["silo-torch"]["psnr"] == pytest.approx(row["silo"]["psnr"], abs=1e-3)
    # the LDPS row is an LDPS restoration with the same seed, steps and measurement
    x = read_image(images / "a.png")
    y = quantise(make_measurement(x, "ip", 0.02, 0))
    ldps = restore_baseline(prior, "ldps", torch.from_numpy(y),
                            SamplingOptions(task="ip", steps=4, seed=3), weights)
    assert row["ldps"]["psnr"] == pytest.approx(psnr(ldps.detach().numpy(), x), abs=1e-4)
    assert report["methods"] == ["silo", "silo_keep_measured", "baseline", "silo-torch",
                                 "ldps"]
    assert report["baseline_weights"] == {"omega": 0.5, "gamma": 0.05}
    assert all(report["mean"][m]["seconds"] > 0 for m in ("silo", "silo-torch", "ldps"))


def test_methods_are_parsed_and_checked():
    assert parse_methods("silo") == ()
    assert parse_methods("silo,psld,ldps") == ("silo-torch", "ldps", "psld")
    assert parse_methods("resample,silo") == ("silo-torch", "resample")
    with pytest.raises(SiloError, match=r"unknown method\(s\) \['dps'\]"):
        parse_methods("silo,dps")


def test_baselines_for_a_bundle_need_its_prior(tmp_path, capsys):
    code, _, err = run(["evaluate", "--bundle", demo_bundle("sr4"), "--data", EXAMPLES,
                        "--out", tmp_path, "--methods", "ldps", "--model", "tiny"], capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: --methods beyond")


def test_the_resample_row_is_a_resample_restoration_with_its_iterations(tiny_prior, tmp_path):
    """The row's metrics are ReSample's on the same measurement and seed, and it counts its
    hard-consistency steps and optimiser iterations (the demo bundle with the ``tiny``
    prior as the reference: both restore 64×64 images; 2 steps, so only the final step)."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(EXAMPLES / "cat.png", images / "a.png")
    settings = ReSampleSettings(latent_iterations=3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        report = evaluate_bundle(demo_bundle("sr4"), images, tmp_path, steps=2, threads=1,
                                 seed=3, methods=("resample",), reference=(tiny_prior, None),
                                 resample_settings=settings)
        x = read_image(images / "a.png")
        y = quantise(make_measurement(x, "sr4", 0.02, 0))
        direct, _ = restore_resample(tiny_prior, torch.from_numpy(y),
                                     SamplingOptions(task="sr4", steps=2, seed=3), settings)
    finally:
        torch.set_num_threads(threads)
    row = report["per_image"][0]["resample"]
    assert row["psnr"] == pytest.approx(psnr(direct.numpy(), x), abs=1e-4)
    assert (row["consistency_steps"], row["pixel_iterations"], row["latent_iterations"]) == (
        1, 0, 3)
    assert report["mean"]["resample"]["latent_iterations"] == 3
    assert report["methods"][-1] == "resample" and row["seconds"] > 0 and "cpsnr" in row
    assert report["resample_settings"]["latent_iterations"] == 3
    assert report["baseline_weights"] is None  # no decoder-in-the-loop baseline ran
    assert report["resample_settings"]["gamma"] == 40.0
    # grid columns: measurement, bicubic, SILO, SILO kept, ReSample, ground truth
    assert Image.open(tmp_path / "sr4-grid.png").width == 6 * (64 * 3 + 2)


def test_resample_options_are_checked(tmp_path, capsys):
    code, _, err = run(["evaluate", "--task", "sr4", "--data", EXAMPLES, "--out", tmp_path,
                        "--methods", "resample", "--resample-gamma", "nan"], capsys)
    assert code == 2 and "--resample-gamma" in err and "not a finite number" in err
