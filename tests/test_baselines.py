"""Decoder-in-the-loop baselines: reduce to DDPM without guidance, differ with it."""

import pytest
import torch

from silo_rt.baselines import BaselineWeights, DecoderGuidedStep, restore_baseline
from silo_rt.errors import SiloError
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.sampler import SamplingOptions, restore


def test_zero_weights_equal_unguided_silo(tiny_prior):
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    opts = SamplingOptions("sr4", steps=4, eta=0.0)
    operator = build_operator(OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")).eval()
    unguided = restore(tiny_prior, operator.requires_grad_(False), y, opts)
    for method in ("ldps", "gml-dps", "psld"):
        out = restore_baseline(tiny_prior, method, y, opts, BaselineWeights(0.0, 0.0))
        torch.testing.assert_close(out, unguided, rtol=1e-4, atol=1e-4)


def test_methods_differ_and_stay_finite(tiny_prior):
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    opts = SamplingOptions("ip", steps=3)
    outs = {m: restore_baseline(tiny_prior, m, y, opts, BaselineWeights(1.0, 1.0))
            for m in ("ldps", "gml-dps", "psld")}
    assert all(torch.isfinite(o).all() for o in outs.values())
    assert not torch.allclose(outs["ldps"], outs["gml-dps"])
    assert not torch.allclose(outs["gml-dps"], outs["psld"])


def test_psld_needs_a_linear_degradation(tiny_prior):
    with pytest.raises(SiloError, match="linear"):
        DecoderGuidedStep(tiny_prior, "jpeg", "psld", BaselineWeights())
