"""Demo data and prior training (`demo-data`, `train-prior`), evaluation helpers."""

import json

import numpy as np
import pytest
from PIL import Image

from silo_rt.cli import main
from silo_rt.errors import SiloError


def test_demo_data_keeps_evaluation_images_out_of_training(tmp_path):
    from silo_rt.demo.data import HELDOUT_IMAGES, TILE, TRAIN_IMAGES, prepare_demo_data

    counts = prepare_demo_data(tmp_path / "d")
    train = sorted((tmp_path / "d" / "train").iterdir())
    heldout = sorted((tmp_path / "d" / "heldout").iterdir())
    assert counts == {"train": len(train), "heldout": len(heldout)}
    assert len(train) > 500 and len(heldout) >= 8
    assert not set(TRAIN_IMAGES) & set(HELDOUT_IMAGES)
    assert {p.name.rsplit("_s", 1)[0] for p in train} == set(TRAIN_IMAGES)
    assert {p.name.rsplit("_", 1)[0] for p in heldout} == set(HELDOUT_IMAGES)
    assert Image.open(train[0]).size == (TILE, TILE)
    assert all(Image.open(p).size == (64, 64) for p in heldout)
    assert "BSD-3-Clause" in (tmp_path / "d" / "SOURCES.md").read_text()
    with pytest.raises(SiloError, match="not empty"):
        prepare_demo_data(tmp_path / "d")


def _log_steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line]


def test_train_prior_vae_then_unet_with_resume(image_folder, tmp_path):
    import torch

    from silo_rt.prior import load_prior

    out = tmp_path / "prior"
    common = ["--data", image_folder, "--out", out, "--architecture", "tiny",
              "--batch-size", "4", "--checkpoint-every", "2"]
    with pytest.raises(SystemExit) as exc:  # the UNet needs a trained VAE first
        main([str(a) for a in ["train-prior", "unet", *common, "--steps", "2"]])
    assert exc.value.code == 2
    main([str(a) for a in ["train-prior", "vae", *common, "--steps", "3"]])
    main([str(a) for a in ["train-prior", "unet", *common, "--steps", "2"]])
    main([str(a) for a in ["train-prior", "unet", *common, "--steps", "4", "--resume"]])

    before = load_prior(str(out))
    main([str(a) for a in ["train-prior", "decoder", *common, "--steps", "2"]])
    after = load_prior(str(out))
    # Decoder fine-tuning keeps the latent space: same encoder, same fingerprint (operators
    # trained on this prior stay valid), a changed decoder.
    assert after.fingerprint() == before.fingerprint()
    for a, b in zip(after.vae.encoder.parameters(), before.vae.encoder.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(after.vae.decoder.conv_out.weight, before.vae.decoder.conv_out.weight)
    state = out / ".train-state-unet"
    assert (state / "ema.safetensors").is_file()
    assert not list(state.glob("custom_checkpoint*"))  # nothing unpickled on resume
    record = json.loads((out / "training.json").read_text())
    assert record["vae"]["steps"] == 3 and record["unet"]["steps"] == 4
    assert _log_steps(out / "vae.loss.jsonl") == [1, 2, 3]
    assert _log_steps(out / "unet.loss.jsonl") == [1, 2, 3, 4]  # resumed, not restarted
    prior = load_prior(str(out))  # a diffusers folder like any other
    assert prior.scaling_factor == pytest.approx(record["vae"]["scaling_factor"])
    # The scaling factor whitens the training latents (SD's recipe): std ≈ 1 after scaling.
    from silo_rt.training import ImageFolder

    images = torch.stack([ImageFolder(image_folder, 64)[i] for i in range(6)])
    with torch.no_grad():
        z = prior.vae.encode(images).latent_dist.sample() * prior.scaling_factor
    assert 0.7 < float(z.std()) < 1.4


def test_biharmonic_baseline_fills_a_linear_ramp_exactly():
    from silo_rt.degradations import box_mask, get_degradation

    ramp = np.linspace(-0.8, 0.8, 64, dtype=np.float32)
    x = np.broadcast_to(ramp[None, None, None, :] * np.array([1, 0.5, -1], np.float32)[
        None, :, None, None], (1, 3, 64, 64)).copy()
    y = x * box_mask(64).numpy()
    filled = get_degradation("ip").baseline(y, 64)
    assert np.abs(filled - x).max() < 1e-3  # linear functions are biharmonic


def test_bicubic_baseline_and_metrics():
    from silo_rt.degradations import get_degradation
    from silo_rt.evaluation import sharpness, ssim

    flat = np.full((1, 3, 16, 16), 0.25, np.float32)
    up = get_degradation("sr4").baseline(flat, 64)
    assert up.shape == (1, 3, 64, 64) and np.allclose(up, 0.25, atol=1e-5)
    g = np.random.default_rng(0)
    x = g.uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    assert ssim(x, x) == pytest.approx(1.0) and sharpness(x, x) == pytest.approx(1.0)
    blurred = (x + np.roll(x, 1, -1) + np.roll(x, 1, -2) + np.roll(x, (1, 1), (-1, -2))) / 4
    assert sharpness(blurred, x) < 0.7 and ssim(blurred, x) < 0.9
