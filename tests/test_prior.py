"""Prior loading: diffusers' from_pretrained on a folder the test writes itself."""

import pytest
import torch

from silo_rt.errors import SiloError
from silo_rt.prior import load_prior


def test_from_pretrained_folder_reproduces_the_in_memory_model(tiny_prior, tmp_path):
    tiny_prior.save_pretrained(tmp_path / "model")
    loaded = load_prior(str(tmp_path / "model"))
    assert loaded.fingerprint() == tiny_prior.fingerprint()
    z = torch.randn(tiny_prior.latent_shape(64), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([321])
    ctx_a, ctx_b = tiny_prior.encode_prompt("a face"), loaded.encode_prompt("a face")
    torch.testing.assert_close(ctx_a, ctx_b)
    with torch.no_grad():
        torch.testing.assert_close(loaded.unet(z, t, ctx_b).sample,
                                   tiny_prior.unet(z, t, ctx_a).sample)
        x = torch.rand(1, 3, 64, 64) * 2 - 1
        torch.testing.assert_close(loaded.vae.encode(x).latent_dist.mean,
                                   tiny_prior.vae.encode(x).latent_dist.mean)
        torch.testing.assert_close(loaded.vae.decode(z).sample, tiny_prior.vae.decode(z).sample)
    assert loaded.scheduler.config.num_train_timesteps == 1000


def test_random_priors_are_deterministic(tiny_prior):
    assert load_prior("tiny").fingerprint() == tiny_prior.fingerprint()


def test_sizes_of_tiny(tiny_prior):
    assert tiny_prior.vae_scale == 8
    assert tiny_prior.latent_shape(64) == (1, 4, 8, 8)
    assert tiny_prior.sigma_embedding(0.02).shape == (1, tiny_prior.embedding_dim)


def test_bad_model_names(tmp_path):
    with pytest.raises(SiloError, match="neither a folder"):
        load_prior("not-a-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SiloError, match="cannot load model"):
        load_prior(str(tmp_path / "empty"))
