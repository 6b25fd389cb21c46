"""The latent diffusion prior: a Stable-Diffusion-1.x model (UNet, VAE, text encoder,
tokenizer, DDPM scheduler) loaded with diffusers' own loaders, or built with random weights.

``load_prior(spec)`` accepts:

* a local diffusers folder or a hub id (``from_pretrained`` of each component);
* ``tiny``: a random-weight toy (64×64 images, 8×8 latents) that runs a whole restoration in
  seconds on a CPU. **Random weights: for tests and benchmarks only.**
* ``small``: SD-1.5's block structure, narrower, 256×256 images (random, for benchmarks);
* ``sd15-random``: the exact SD-1.5 architecture with random weights (for scale tests).

Random priors are built from a fixed seed, so ``tiny`` is the same model in every process.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import SiloError, first_line

RANDOM_PRIORS = ("tiny", "small", "sd15-random")
RANDOM_SEED = 0


@dataclass
class LatentPrior:
    """The frozen components of an SD-1.x latent diffusion model.

    Attributes:
        name: how it was asked for (folder, hub id or built-in name).
        unet: ``UNet2DConditionModel``, ε-prediction.
        vae: ``AutoencoderKL``; latents are ``vae.encode(x).sample() * scaling_factor``.
        text_encoder, tokenizer: CLIP text model and its tokenizer.
        scheduler: ``DDPMScheduler``.
    """

    name: str
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def vae_scale(self) -> int:
        """Image side / latent side (8 for SD-1.x)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def default_image_size(self) -> int:
        return int(self.vae.config.sample_size)

    @property
    def embedding_dim(self) -> int:
        """Width of the UNet's timestep embedding (1280 for SD-1.5)."""
        return int(self.unet.time_embedding.linear_2.out_features)

    @property
    def is_random(self) -> bool:
        return self.name in RANDOM_PRIORS

    def latent_shape(self, image_size: int, batch: int = 1) -> tuple[int, int, int, int]:
        side = image_size // self.vae_scale
        return (batch, self.latent_channels, side, side)

    def fingerprint(self) -> str:
        """Short hash of the architecture and the first weights of the UNet and VAE.

        Stored in operator checkpoints and bundles to refuse pairing with another prior.
        """
        h = hashlib.sha256()
        for config in (self.unet.config, self.vae.config):
            public = {k: v for k, v in dict(config).items() if not k.startswith("_")}
            h.update(json.dumps(public, sort_keys=True, default=str).encode())
        for p in (self.unet.conv_in.weight, self.vae.encoder.conv_in.weight):
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def timestep_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """The UNet's own frozen embedding of (possibly fractional) timesteps ``t``: (B, E)."""
        t = t.reshape(-1)
        proj = self.unet.time_proj(t).to(self.unet.dtype)
        return self.unet.time_embedding(proj)

    def sigma_embedding(self, sigma_y: torch.Tensor | float) -> torch.Tensor:
        """Embedding of the noise level: ``time_embedding(time_proj(sigma_y / 0.1 * 999))``."""
        s = torch.as_tensor(sigma_y, dtype=torch.float32, device=self.unet.device)
        return self.timestep_embedding(s / 0.1 * 999.0)

    @torch.no_grad()
    def encode_prompt(self, prompt: str, cfg_scale: float = 1.0) -> torch.Tensor:
        """Text context ``(1, L, D)``; ``(2, L, D)`` = [unconditional, prompt] when CFG > 1."""
        prompts = ["", prompt] if cfg_scale > 1.0 else [prompt]
        ids = self.tokenizer(prompts, padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]

    def freeze(self) -> LatentPrior:
        for m in (self.unet, self.vae, self.text_encoder):
            m.eval().requires_grad_(False)
        return self

    def save_pretrained(self, folder: str | Path) -> None:
        """Write a diffusers-layout folder that :func:`load_prior` reads back."""
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet")
        self.vae.save_pretrained(folder / "vae")
        self.text_encoder.save_pretrained(folder / "text_encoder")
        self.tokenizer.save_pretrained(folder / "tokenizer")
        self.scheduler.save_pretrained(folder / "scheduler")


def _byte_level_tokenizer(max_length: int):
    """A CLIP tokenizer with a byte-level vocabulary and no merges (built offline)."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    symbols = list(bytes_to_unicode().values())
    for suffix in ("", "</w>"):
        for s in symbols:
            vocab.setdefault(s + suffix, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def sd_scheduler():
    """SD-1.5's DDPM scheduler configuration."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False,
                         steps_offset=1, prediction_type="epsilon")


@dataclass(frozen=True)
class RandomPriorConfig:
    """The architecture of a random-weight prior (diffusers' and transformers' names).

    Attributes:
        unet_channels: UNet ``block_out_channels``; the last level has no attention.
        unet_layers: UNet ``layers_per_block``.
        attention_head_dim: diffusers' ``attention_head_dim`` (the number of heads for SD).
        cross_attention_dim: width of the text context the UNet attends to.
        unet_norm_groups: GroupNorm groups of the UNet (32 as SD-1.5 unless narrower).
        vae_channels, vae_layers, vae_norm_groups: the VAE's; it downsamples by
            ``2 ** (len(vae_channels) - 1)``.
        image_size: native image side in px.
        text_hidden, text_layers, text_heads, text_max_length: the CLIP text encoder's.
    """

    unet_channels: tuple[int, ...]
    unet_layers: int
    attention_head_dim: int
    cross_attention_dim: int
    vae_channels: tuple[int, ...]
    vae_layers: int
    vae_norm_groups: int
    image_size: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_max_length: int
    unet_norm_groups: int = 32


RANDOM_CONFIGS = {
    "tiny": RandomPriorConfig(
        unet_channels=(32, 64), unet_layers=1, attention_head_dim=8, cross_attention_dim=32,
        unet_norm_groups=8, vae_channels=(16, 32, 32, 32), vae_layers=1, vae_norm_groups=8,
        image_size=64, text_hidden=32, text_layers=2, text_heads=4, text_max_length=16),
    # small: SD-1.5's blocks, narrower. Two heads keep head sizes (32-128) near SD-1.5's
    # (40-160); eight 8-wide heads would let attention maps dominate the step far more than
    # they do in SD-1.5.
    "small": RandomPriorConfig(
        unet_channels=(64, 128, 256, 256), unet_layers=2, attention_head_dim=2,
        cross_attention_dim=256, vae_channels=(32, 64, 128, 128), vae_layers=2,
        vae_norm_groups=16, image_size=256, text_hidden=256, text_layers=2, text_heads=4,
        text_max_length=77),
    "sd15-random": RandomPriorConfig(
        unet_channels=(320, 640, 1280, 1280), unet_layers=2, attention_head_dim=8,
        cross_attention_dim=768, vae_channels=(128, 256, 512, 512), vae_layers=2,
        vae_norm_groups=32, image_size=512, text_hidden=768, text_layers=12, text_heads=12,
        text_max_length=77),
    # demo: the architecture of the embedded demo prior (trained by `silo-rt train-prior`):
    # 64×64 images, a VAE that downsamples 4× (16×16×4 latents), a 1.5M-parameter UNet.
    "demo": RandomPriorConfig(
        unet_channels=(32, 64, 64), unet_layers=1, attention_head_dim=2,
        cross_attention_dim=32, unet_norm_groups=16, vae_channels=(32, 64, 64), vae_layers=1,
        vae_norm_groups=16, image_size=64, text_hidden=32, text_layers=2, text_heads=4,
        text_max_length=16),
}


def build_random_prior(name: str) -> LatentPrior:
    """A prior with random weights (fixed seed). Labelled: for tests and benchmarks only.

    ``name`` is one of :data:`RANDOM_PRIORS`, or ``demo``: the untrained starting point of
    the demo prior's training.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    c = RANDOM_CONFIGS[name]
    levels = len(c.unet_channels)
    down = ["CrossAttnDownBlock2D"] * (levels - 1) + ["DownBlock2D"]
    up = ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * (levels - 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        unet = UNet2DConditionModel(
            sample_size=c.image_size // 2 ** (len(c.vae_channels) - 1), in_channels=4,
            out_channels=4, block_out_channels=c.unet_channels, layers_per_block=c.unet_layers,
            down_block_types=tuple(down), up_block_types=tuple(up),
            cross_attention_dim=c.cross_attention_dim, attention_head_dim=c.attention_head_dim,
            norm_num_groups=c.unet_norm_groups)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, sample_size=c.image_size,
            block_out_channels=c.vae_channels, layers_per_block=c.vae_layers,
            norm_num_groups=c.vae_norm_groups,
            down_block_types=("DownEncoderBlock2D",) * len(c.vae_channels),
            up_block_types=("UpDecoderBlock2D",) * len(c.vae_channels))
        text_encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=c.text_hidden, intermediate_size=4 * c.text_hidden,
            num_attention_heads=c.text_heads, num_hidden_layers=c.text_layers,
            vocab_size=49408 if name == "sd15-random" else 514,
            max_position_embeddings=c.text_max_length, projection_dim=c.text_hidden,
            bos_token_id=0, eos_token_id=1, pad_token_id=1))
    return LatentPrior(name, unet, vae, text_encoder, _byte_level_tokenizer(c.text_max_length),
                       sd_scheduler()).freeze()


def load_pretrained_prior(name_or_path: str) -> LatentPrior:
    """Load each component with ``from_pretrained`` from a diffusers folder or a hub id."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        unet = UNet2DConditionModel.from_pretrained(name_or_path, subfolder="unet")
        vae = AutoencoderKL.from_pretrained(name_or_path, subfolder="vae")
        text_encoder = CLIPTextModel.from_pretrained(name_or_path, subfolder="text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(name_or_path, subfolder="tokenizer")
        scheduler = DDPMScheduler.from_pretrained(name_or_path, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        raise SiloError(f"cannot load model {name_or_path!r}: {first_line(exc)}") from None
    return LatentPrior(str(name_or_path), unet, vae, text_encoder, tokenizer,
                       scheduler).freeze()


def load_prior(spec: str) -> LatentPrior:
    """A prior by built-in name (``tiny``, ``small``, ``sd15-random``), folder or hub id."""
    if spec in RANDOM_PRIORS:
        return build_random_prior(spec)
    if not Path(spec).exists() and spec.count("/") != 1:
        raise SiloError(f"model {spec!r} is neither a folder, a hub id (org/name), nor one of "
                        f"{', '.join(RANDOM_PRIORS)}")
    return load_pretrained_prior(spec)
