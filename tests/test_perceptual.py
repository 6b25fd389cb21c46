"""FID/KID aggregation (silo_rt.perceptual) with a small feature network the test builds,
against the closed forms; and the one-line "unavailable" when the Inception weights are not
on this machine (nothing is downloaded)."""

import numpy as np
import pytest
import scipy.linalg
import torch

from silo_rt.perceptual import INCEPTION_WEIGHTS, distribution_scores, perceptual_report


class SmallFeatures(torch.nn.Module):
    """(N, 3, H, W) in [0, 1] → (N, 8) (any H, W: torchmetrics probes it with 299×299)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.pool = torch.nn.AdaptiveAvgPool2d(2)
        self.linear = torch.nn.Linear(12, 8)

    def forward(self, x):
        return self.linear(self.pool(x.float()).flatten(1))


def _images(seed, n, shift=0.0):
    g = np.random.default_rng(seed)
    return [np.clip(g.uniform(-1, 1, (1, 3, 16, 16)) * 0.5 + shift, -1, 1).astype(np.float32)
            for _ in range(n)]


def _features(net, images):
    x = torch.from_numpy((np.concatenate(images) + 1) / 2)
    with torch.no_grad():
        return net(x).double().numpy()


def test_fid_is_the_frechet_distance_of_the_features():
    net = SmallFeatures()
    truth, other = _images(0, 40), _images(1, 40, shift=0.3)
    scores = distribution_scores(truth, {"m": other, "same": truth}, net, kid_subset=20)
    a, b = _features(net, truth), _features(net, other)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    assert scores["m"]["fid"] == pytest.approx(expected, rel=1e-3)
    assert abs(scores["same"]["fid"]) < 1e-3 * expected
    # KID: an unbiased MMD, near zero for one distribution and clearly positive for two
    assert scores["m"]["kid"] > 10 * abs(scores["same"]["kid"])


def test_without_the_inception_weights_the_report_says_so_in_one_line(tmp_path):
    report = perceptual_report(_images(0, 2), {"silo": _images(1, 2)}, tmp_path)
    assert list(report) == ["unavailable"]
    line = report["unavailable"]
    assert "\n" not in line and (INCEPTION_WEIGHTS in line or "not installed" in line)
