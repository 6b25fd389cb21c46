"""Capturing the UNet up-block features the Readout-Guidance operator reads."""

from __future__ import annotations

import torch


def up_block_resnets(unet) -> list[torch.nn.Module]:
    """Every resnet of the UNet's up-blocks, in execution order (12 for SD-1.5)."""
    return [resnet for block in unet.up_blocks for resnet in block.resnets]


def up_block_feature_channels(unet) -> list[int]:
    """Channels of each captured feature map (SD-1.5: 1280×6, 640×3, 320×3)."""
    return [r.conv2.out_channels for r in up_block_resnets(unet)]


class UpBlockFeatureTap:
    """Context manager: while active, records each up-block resnet's hidden state after
    ``conv2`` (before the residual add) into :attr:`features`, one ``(B, C, h, w)`` tensor
    per resnet, cleared at entry.
    """

    def __init__(self, unet):
        self._convs = [r.conv2 for r in up_block_resnets(unet)]
        self._handles = []
        self.features: list[torch.Tensor] = []

    def __enter__(self) -> UpBlockFeatureTap:
        self.features = []
        self._handles = [c.register_forward_hook(self._record) for c in self._convs]
        return self

    def _record(self, module, args, output):
        self.features.append(output)

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles = []
