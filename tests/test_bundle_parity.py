"""Bundle restoration against the PyTorch reference for the tasks ``test_export.py`` leaves
to the slow suite: Gaussian blur (a CNN operator) and JPEG (a readout operator), on ``tiny``.

Same seed, same measurement, same noise: ONNX Runtime's restoration must equal the reference
sampler's within ``END_TO_END_RELATIVE`` (what ``test_export.py`` allows for sr8 and ip).
"""

import functools

import numpy as np
import pytest
import torch
from conftest import END_TO_END_RELATIVE

from silo_rt.degradations import get_degradation
from silo_rt.export import ExportOptions, export_bundle
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.runtime import BundleRunner, read_manifest
from silo_rt.sampler import SamplingOptions, restore


@pytest.mark.parametrize(("arch", "task"), [("cnn", "gb"), ("readout", "jpeg")])
def test_bundle_restoration_matches_the_reference(tiny_prior, tmp_path, monkeypatch, arch,
                                                   task):
    # onnxscript's graph optimiser is 40 % of an export here and does not depend on the task
    # (test_export.py runs it for sr8 and ip); without it both cases fit the default suite.
    monkeypatch.setattr(torch.onnx, "export", functools.partial(torch.onnx.export,
                                                                optimize=False))
    torch.manual_seed(3)
    config = OperatorConfig.for_prior(tiny_prior, arch, task)
    operator = build_operator(config).eval().requires_grad_(False)
    options = SamplingOptions(task, steps=8, seed=5)
    export_bundle(tiny_prior, operator, config, ExportOptions(options, 64, include_unet_h=False),
                  tmp_path / "b")
    manifest = read_manifest(tmp_path / "b")
    side = 64 // get_degradation(task).scale
    assert manifest["task"] == task and manifest["measurement_shape"] == [1, 3, side, side]

    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    y = get_degradation(task)(torch.from_numpy(x)).numpy()  # a measurement of the task
    ours = BundleRunner(tmp_path / "b").restore(y, seed=5)
    ref = restore(tiny_prior, operator, torch.from_numpy(y), options).numpy()
    assert ours.shape == ref.shape == (1, 3, 64, 64)
    error = np.linalg.norm(ours - ref) / np.linalg.norm(ref)
    assert error < END_TO_END_RELATIVE, f"{arch}/{task}: {error:.2e}"

    # The comparison is sensitive: another seed's restoration is far from the reference.
    other = BundleRunner(tmp_path / "b").restore(y, seed=6)
    assert np.linalg.norm(other - ref) / np.linalg.norm(ref) > 100 * END_TO_END_RELATIVE
