"""The Readout-Guidance latent operator: a head on the UNet's up-block features.

Each captured feature map is resized to the latent size, given the σ_y map as one extra
channel, and passed through its own bottleneck block (conditioned on the timestep embedding);
the blocks' outputs are mixed with softmax-normalised learned weights and a small head maps
them to the predicted measurement latent.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

TIME_INPUTS = ("unet", "none")
"""What the head's per-layer time projection receives: ``unet``, the UNet's timestep
embedding (the paper's H_θ(ẑ0, t)); ``none``, nothing (the projection is skipped), which is
how the authors' sampling code runs their released readout operators on SD-1.5."""


def group_norm(channels: int) -> nn.GroupNorm:
    """32 groups, as the authors' head (``num_norm_groups=32``); narrower layers of the small
    test priors, which 32 does not divide, use the largest divisor of 32 that fits."""
    return nn.GroupNorm(math.gcd(32, channels), channels)


class BottleneckBlock(nn.Module):
    """1×1 → (+ time) → 3×3 → 1×1 bottleneck with a 1×1 shortcut; no conv biases."""

    def __init__(self, in_channels: int, width: int, out_channels: int, embedding_dim: int):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(in_channels, width, 1, bias=False),
                                    group_norm(width), nn.ReLU())
        self.time = nn.Sequential(nn.Linear(embedding_dim, width), nn.ReLU())
        self.mix = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False),
                                 group_norm(width), nn.ReLU())
        self.expand = nn.Sequential(nn.Conv2d(width, out_channels, 1, bias=False),
                                    group_norm(out_channels))
        self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                      group_norm(out_channels))

    def forward(self, x, temb=None):
        """``x``: (B, C_in, s, s); ``temb``: (B, E), or None to skip the time projection."""
        h = self.reduce(x)
        if temb is not None:
            h = h + self.time(temb)[:, :, None, None]
        return F.relu(self.expand(self.mix(h)) + self.shortcut(x))


class ReadoutOperator(nn.Module):
    """H_θ(features, t, σ_y) → ``(B, C, s, s)`` predicted measurement latent.

    Args:
        feature_channels: channels of each up-block feature map (SD-1.5: 1280×6, 640×3, 320×3).
        latent_channels: C of the output (4).
        latent_size: s, latent side.
        embedding_dim: width of the timestep / σ_y embeddings (1280 for SD-1.5).
        hidden: per-layer output width (384 for SD-1.5); the bottleneck is ``hidden // 4``.
        time_input: ``unet`` or ``none`` (see :data:`TIME_INPUTS`).
    """

    uses_features = True
    """It reads the UNet's up-block features (a :class:`~.features.UpBlockFeatureTap`)."""

    def __init__(self, feature_channels: list[int], latent_channels: int, latent_size: int,
                 embedding_dim: int, hidden: int = 384, time_input: str = "unet"):
        super().__init__()
        if time_input not in TIME_INPUTS:
            raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")
        self.latent_size = latent_size
        self.uses_timestep = time_input == "unet"  # the paper's; the authors' files: none
        self.sigma_map = nn.Linear(embedding_dim, latent_size * latent_size)
        self.sigma_norm = nn.LayerNorm([1, latent_size, latent_size])
        self.blocks = nn.ModuleList(
            BottleneckBlock(c + 1, hidden // 4, hidden, embedding_dim) for c in feature_channels)
        self.layer_weights = nn.Parameter(torch.ones(len(feature_channels)))
        self.head = nn.Sequential(
            nn.Conv2d(hidden + 1, 128, 3, padding=1), nn.SiLU(),
            nn.Conv2d(128, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, latent_channels, 1))

    def forward(self, z0, sigma_emb, temb, features):
        """``features``: list of (B, C_i, h_i, w_i); ``temb``, ``sigma_emb``: (B or 1, E).

        ``z0`` is unused (the features carry the latent); it keeps one signature for both
        operator kinds. ``temb`` is ignored unless :attr:`uses_timestep`.
        """
        s = self.latent_size
        b = features[0].shape[0]
        smap = self.sigma_norm(self.sigma_map(sigma_emb).reshape(-1, 1, s, s)).expand(b, 1, s, s)
        temb = temb.expand(b, -1) if self.uses_timestep else None
        weights = torch.softmax(self.layer_weights, dim=0)
        mixed = 0
        for i, (block, feat) in enumerate(zip(self.blocks, features)):
            if feat.shape[-1] != s:
                feat = F.interpolate(feat, size=(s, s), mode="bilinear", align_corners=False)
            mixed = mixed + weights[i] * block(torch.cat([feat, smap], dim=1), temb)
        return self.head(torch.cat([mixed, smap], dim=1))
