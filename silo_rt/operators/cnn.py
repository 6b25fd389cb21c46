"""The CNN latent operator (time-independent), as in the authors' code.

All convolutions keep the latent map size; LayerNorms normalise over (C, H, W), so an
instance is tied to one latent size.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_block(conv: nn.Module, channels: int, side: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.LayerNorm([channels, side, side]), nn.ReLU())


class CnnOperator(nn.Module):
    """H_θ(ẑ0, σ_y): ``(B, C, s, s)`` latent → ``(B, C, s, s)`` predicted measurement latent.

    Args:
        latent_channels: C (4 for SD-1.x).
        latent_size: s, the latent side (64 for 512×512 SD-1.5 images).
        embedding_dim: width of the σ_y embedding (the UNet's timestep embedding, 1280).
    """

    uses_features = False
    """It reads ẑ0 only, not the UNet's up-block features."""
    uses_timestep = False

    def __init__(self, latent_channels: int, latent_size: int, embedding_dim: int):
        super().__init__()
        s, c = latent_size, latent_channels
        self.latent_size = s
        self.sigma_map = nn.Sequential(nn.Linear(embedding_dim, 32), nn.LeakyReLU(),
                                       nn.Linear(32, s * s))
        widths = [c + 1, 17, 33, 65, 128]
        self.encoder = nn.Sequential(*[
            _conv_block(nn.Conv2d(a, b, 3, padding=1), b, s) for a, b in zip(widths, widths[1:])
        ])
        widths = [128, 64, 32, 16]
        self.decoder = nn.Sequential(*[
            _conv_block(nn.ConvTranspose2d(a, b, 3, padding=1), b, s)
            for a, b in zip(widths, widths[1:])
        ])
        self.skip = _conv_block(nn.Conv2d(128 + 1, 16, 1), 16, s)
        self.process = nn.Sequential(_conv_block(nn.Conv2d(16, 16, 3, padding=1), 16, s),
                                     nn.Conv2d(16, c, 3, padding=1))

    def forward(self, z0: torch.Tensor, sigma_emb: torch.Tensor, temb=None, features=None):
        """``z0``: (B, C, s, s); ``sigma_emb``: (B or 1, E). ``temb``/``features`` unused."""
        b = z0.shape[0]
        s = self.latent_size
        smap = self.sigma_map(sigma_emb).reshape(-1, 1, s, s).expand(b, 1, s, s)
        # In a half-precision operator the cast follows the concatenation, so the gradient
        # w.r.t. z0 leaves the first convolution's adjoint as one cast to z0's dtype.
        inputs = torch.cat([z0, smap.to(z0.dtype)], dim=1).to(smap.dtype)
        encoded = self.encoder(inputs)
        decoded = self.decoder(encoded)
        return self.process(decoded + self.skip(torch.cat([encoded, smap], dim=1)))
