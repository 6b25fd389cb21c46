"""What the embedded demo's bundles use: half-precision weight storage (`export --weights
fp16`, a lossless rewrite), no unet_h graph, and restoring with another step count than the
exported one (schedule rebuilt from the stored alphas_cumprod, numpy only)."""

import numpy as np
import onnx
import pytest
import torch
from conftest import END_TO_END_RELATIVE
from onnx import TensorProto, helper, numpy_helper

from silo_rt.export import ExportOptions, export_bundle
from silo_rt.export.half_weights import round_module_to_fp16, store_exact_fp16_initializers
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.prior import sd_scheduler
from silo_rt.runtime import BundleRunner, read_manifest
from silo_rt.sampler import SamplingOptions, restore
from silo_rt.schedule import alphas_record, from_alphas, from_scheduler


def _two_conv_model(path, exact_weight, inexact_weight):
    channels = exact_weight.shape[0]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 5, 5])
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [x], [y],
                              [numpy_helper.from_array(exact_weight, "w1"),
                               numpy_helper.from_array(inexact_weight, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_fp16_storage_is_lossless_and_only_touches_exact_tensors(tmp_path):
    import onnxruntime as ort

    g = np.random.default_rng(0)
    exact = g.standard_normal((2, 2, 3, 3)).astype(np.float16).astype(np.float32)
    inexact = g.standard_normal((2, 2, 3, 3)).astype(np.float32)
    assert not np.array_equal(inexact.astype(np.float16).astype(np.float32), inexact)
    path = tmp_path / "m.onnx"
    _two_conv_model(path, exact, inexact)
    x = g.standard_normal((1, 2, 5, 5)).astype(np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    size_before = path.stat().st_size

    converted, saved, files = store_exact_fp16_initializers(path)

    assert (converted, saved, files) == (1, exact.size * 2, [path])
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    types = {i.name: i.data_type for i in model.graph.initializer}
    assert types == {"w1__fp16": TensorProto.FLOAT16, "w2": TensorProto.FLOAT}
    after = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)  # bit for bit
    assert path.stat().st_size < size_before


def test_fp16_storage_rewrites_graphs_with_external_data(tmp_path):
    """Graphs over 1.5 GB keep their weights in external files: those are converted too
    (a bundle exported with --weights fp16 must not keep fp32 weights anywhere)."""
    import onnxruntime as ort

    g = np.random.default_rng(1)
    # 8 channels: weights over the 1 KB that external data files hold (smaller stay inline)
    exact = g.standard_normal((8, 8, 3, 3)).astype(np.float16).astype(np.float32)
    inexact = g.standard_normal((8, 8, 3, 3)).astype(np.float32)
    single = tmp_path / "single.onnx"
    _two_conv_model(single, exact, inexact)
    path = tmp_path / "m.onnx"
    onnx.save_model(onnx.load(str(single)), str(path), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.onnx.weights", size_threshold=0)
    x = g.standard_normal((1, 8, 5, 5)).astype(np.float32)
    before = ort.InferenceSession(str(path)).run(None, {"x": x})[0]

    converted, saved, files = store_exact_fp16_initializers(path, external=True)

    assert (converted, saved) == (1, exact.size * 2)
    assert files == [path, tmp_path / "m.onnx.data"] and files[1].is_file()
    assert not (tmp_path / "m.onnx.weights").exists()  # the old data file is gone
    model = onnx.load(str(path))  # with its external data
    assert {i.name: i.data_type for i in model.graph.initializer} == {
        "w1__fp16": TensorProto.FLOAT16, "w2": TensorProto.FLOAT}
    after = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_array_equal(after, before)


def test_fp16_storage_with_external_data_keeps_shape_constants_readable(tmp_path):
    """Small constants (a Reshape's target shape) stay inside the graph file after the
    rewrite, so the full ONNX check (shape inference) can read them: SD-1.5's step, exported
    with --weights fp16, was refused by the exporter's own check before."""
    from silo_rt.export.onnx_writer import check_graph

    weight = np.ones((2, 2, 3, 3), np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 50])
    nodes = [helper.make_node("Conv", ["x", "w"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["h", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "g", [x], [y],
                              [numpy_helper.from_array(weight, "w"),
                               numpy_helper.from_array(np.array([1, 50], np.int64), "shape")])
    path = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
                    str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.weights", size_threshold=64)
    check_graph(path)
    assert store_exact_fp16_initializers(path, external=True)[0] == 1
    check_graph(path)
    inline = onnx.load(str(path), load_external_data=False)
    (shape,) = [t for t in inline.graph.initializer if t.name == "shape"]
    assert shape.raw_data and not shape.external_data


def test_round_module_copies_and_rounds():
    module = torch.nn.Linear(4, 3)
    original = module.weight.detach().clone()
    rounded = round_module_to_fp16(module)
    assert torch.equal(module.weight, original)  # the input is untouched
    assert torch.equal(rounded.weight, original.half().float())
    assert not torch.equal(rounded.weight, original)
    assert round_module_to_fp16(module, copy=False) is module  # what `export` does: in place
    assert torch.equal(module.weight, rounded.weight)


@pytest.fixture(scope="module")
def fp16_bundle(tiny_prior, tmp_path_factory):
    torch.manual_seed(3)
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")
    operator = build_operator(config).eval().requires_grad_(False)
    options = SamplingOptions("sr4", steps=8)
    out = tmp_path_factory.mktemp("fp16") / "bundle"
    export_bundle(tiny_prior, operator, config,
                  ExportOptions(options, 64, include_unet_h=False, weights="fp16"), out)
    return out, operator, config, options


def _rounded(prior):
    import dataclasses

    return dataclasses.replace(prior, unet=round_module_to_fp16(prior.unet),
                               vae=round_module_to_fp16(prior.vae))


def test_fp16_bundle_matches_reference_with_rounded_weights(fp16_bundle, tiny_prior):
    out, operator, config, options = fp16_bundle
    manifest = read_manifest(out)
    assert manifest["weights"] == "fp16"
    assert set(manifest["graphs"]) == {"vae_encoder", "vae_decoder", "step"}
    assert manifest["prior"]["fingerprint"] == tiny_prior.fingerprint()
    step = onnx.load(str(out / "step.onnx"))
    halves = [i for i in step.graph.initializer if i.data_type == TensorProto.FLOAT16]
    unet_params = sum(p.numel() for p in tiny_prior.unet.parameters())
    assert sum(int(np.prod(i.dims)) for i in halves) > unet_params  # UNet + H_θ stored fp16

    y = torch.rand(1, 3, 16, 16) * 2 - 1
    options.seed = 5
    expected = restore(_rounded(tiny_prior), round_module_to_fp16(operator), y,
                       options).numpy()
    got = BundleRunner(out, threads=2).restore(y.numpy(), seed=5)
    err = np.linalg.norm(got - expected) / np.linalg.norm(expected)
    assert err < END_TO_END_RELATIVE
    unrounded = restore(tiny_prior, operator, y, options).numpy()
    # Rounding is a real (small) change: the bundle follows the rounded reference more
    # closely than the unrounded one.
    assert err < np.linalg.norm(got - unrounded) / np.linalg.norm(unrounded)


@pytest.mark.parametrize("steps", [1, 3, 10, 25, 50, 100, 250, 333, 500, 998, 999])
def test_numpy_schedule_equals_diffusers(steps):
    scheduler = sd_scheduler()
    record = alphas_record(scheduler)
    expected = from_scheduler(scheduler, steps)
    got = from_alphas(record["alphas_cumprod"], steps, record["steps_offset"])
    np.testing.assert_array_equal(got.timesteps, expected.timesteps)
    np.testing.assert_array_equal(got.coefficients, expected.coefficients)


def test_numpy_schedule_refuses_impossible_counts():
    from silo_rt.errors import SiloError

    record = alphas_record(sd_scheduler())
    for steps in (0, 1000, 1001):
        with pytest.raises(SiloError, match="steps"):
            from_alphas(record["alphas_cumprod"], steps, record["steps_offset"])


def test_bundle_restores_with_another_step_count(fp16_bundle, tiny_prior):
    out, operator, config, options = fp16_bundle
    runner = BundleRunner(out, threads=2)
    assert runner.steps == 8
    y = torch.rand(1, 3, 16, 16) * 2 - 1
    five = SamplingOptions("sr4", steps=5, seed=2)
    expected = restore(_rounded(tiny_prior), round_module_to_fp16(operator), y,
                       five).numpy()
    got = runner.restore(y.numpy(), seed=2, steps=5)
    assert np.linalg.norm(got - expected) / np.linalg.norm(expected) < 1e-3
    assert not np.allclose(got, runner.restore(y.numpy(), seed=2))  # 8 steps differ


def test_bundle_ddim_matches_reference(fp16_bundle, tiny_prior):
    """``--sampler ddim --steps 20`` through a bundle equals the PyTorch reference, and
    differs from the DDPM update by far more than the parity error."""
    out, operator, config, options = fp16_bundle
    y = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    runner = BundleRunner(out, threads=2)
    got = runner.restore(y.numpy(), seed=4, steps=20, sampler="ddim")
    ddpm = runner.restore(y.numpy(), seed=4, steps=20)
    ddim = SamplingOptions("sr4", steps=20, seed=4, sampler="ddim")
    want = restore(_rounded(tiny_prior), round_module_to_fp16(operator), y, ddim).numpy()
    err = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert err < END_TO_END_RELATIVE
    assert np.linalg.norm(ddpm - want) / np.linalg.norm(want) > 10 * err
