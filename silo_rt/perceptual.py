"""Perceptual scores of a set of restorations (FID, KID; LPIPS per image), as the paper
reports them, when the networks they need are on this machine.

FID and KID compare the distribution of a network's features over the restorations with
the one over the ground truth (torchmetrics' implementations; Inception-v3 features through
``torch-fidelity``). LPIPS compares each restoration with its ground truth through AlexNet
features. Nothing is downloaded: the Inception weights are looked for in ``weights_dir`` and
in the torch hub cache, and each metric whose network is missing is reported unavailable,
with why, in one line. The paper's FID/KID use 1,000 images; on a few dozen they are noisy.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .records import recorded_path

INCEPTION_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
"""The file ``torch-fidelity`` loads for its Inception-v3 feature extractor."""


def _hub_checkpoints() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception(weights_dir: Path | None) -> Path | None:
    """The Inception-v3 weights file in ``weights_dir`` or the torch hub cache, or None."""
    for folder in ([Path(weights_dir)] if weights_dir else []) + [_hub_checkpoints()]:
        if (folder / INCEPTION_WEIGHTS).is_file():
            return folder / INCEPTION_WEIGHTS
    return None


def inception_features(weights_dir: Path | None):
    """torch-fidelity's Inception-v3 (2048 features) from local weights, or ``(None, why)``."""
    path = find_inception(weights_dir)
    if path is None:
        where = f"{weights_dir} nor " if weights_dir else "no --metrics-weights; not in "
        # the line goes into reports: the hub folder without the machine's home directory
        return None, f"{INCEPTION_WEIGHTS} not found ({where}{recorded_path(_hub_checkpoints())})"
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        return None, "torch-fidelity is not installed (pip install torch-fidelity)"
    import torch

    class Inception(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                   feature_extractor_weights_path=str(path))

        def forward(self, x):
            return self.net(x)[0]

    return Inception().eval(), None


def distribution_scores(truth: list[np.ndarray], restored: dict[str, list[np.ndarray]],
                        feature, kid_subset: int = 50) -> dict[str, dict[str, float]]:
    """``{method: {"fid": …, "kid": …}}`` of each method's restorations against the ground
    truth, with ``feature`` (an ``nn.Module``: ``(N, 3, H, W)`` float in [0, 1] → ``(N, D)``).

    Images are ``(1, 3, H, W)`` float32 in [-1, 1]. KID uses subsets of
    ``min(kid_subset, N)`` images.
    """
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    def batch(images):
        return torch.from_numpy((np.concatenate(images) + 1.0) / 2.0).clamp(0, 1)

    real = batch(truth)
    scores = {}
    for method, images in restored.items():
        fake = batch(images)
        fid = FrechetInceptionDistance(feature=feature, normalize=True)
        with warnings.catch_warnings():  # "KID keeps every feature": a few hundred here
            warnings.simplefilter("ignore", UserWarning)
            kid = KernelInceptionDistance(feature=feature, normalize=True,
                                          subset_size=min(kid_subset, len(images)))
        for metric in (fid, kid):
            metric.update(real, real=True)
            metric.update(fake, real=False)
        scores[method] = {"fid": float(fid.compute()), "kid": float(kid.compute()[0])}
    return scores


def perceptual_report(truth, restored, weights_dir: Path | None = None) -> dict:
    """FID and KID per method when the Inception weights are here; else
    ``{"unavailable": why}``. Never downloads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torchmetrics  # noqa: F401
    except ImportError:
        return {"unavailable": "FID/KID: torchmetrics is not installed "
                               "(pip install 'silo-rt[demo]')"}
    feature, why = inception_features(weights_dir)
    if feature is None:
        return {"unavailable": f"FID/KID: {why}"}
    return distribution_scores(truth, restored, feature)
