"""NVIDIA's own ONNX parser and ahead-of-time builder (TensorRT-RTX, no GPU needed) accept
every graph silo-rt exports, and the rewrite that cleans older bundles changes nothing.

What is covered, and why that is every graph: the step graph's structure depends on the
operator kind, CFG and precision, not on the task (the task only picks the operator's
weights and the encoder); the VAE encoder depends on the task (SR upsampling, the ±4 clamp);
the decoder on nothing. So the steps are needed for {cnn, readout} × {CFG off, on} ×
{fp32, fp16}: ``tests/test_export.py`` checks the bundles it exports (cnn without CFG,
readout with CFG; both precisions, with ``unet_h`` and the decoder), this module the other two
pairs and the encoder of every task. The two embedded demo bundles are checked as shipped.
"""


import importlib.util

import numpy as np
import onnx
import pytest
import torch
from conftest import TOLERANCES
from onnx import TensorProto, helper, numpy_helper

from silo_rt.bundle_format import load_manifest
from silo_rt.degradations import get_degradation, task_names
from silo_rt.demo import DEMO_TASKS, demo_bundle
from silo_rt.export.bundle import ExportOptions, example_inputs, half_precision_step
from silo_rt.export.onnx_writer import export_forward, export_step
from silo_rt.export.parser_clean import make_parser_clean
from silo_rt.latents import MeasurementEncoder
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.runtime import step_io
from silo_rt.runtime.tensorrt.check import check_bundle_with_tensorrt, check_onnx_with_tensorrt
from silo_rt.runtime.tensorrt.fp32_tail import fp32_tail
from silo_rt.sampler import SamplingOptions
from silo_rt.step import GuidedStep

# Each test that needs NVIDIA's parser asks for it (installed by the dev extra,
# `silo-rt[trt-check]`); the rewrite's ONNX Runtime equivalence runs without it.
needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="needs TensorRT-RTX (pip install 'silo-rt[trt-check]')")

STEP_PAIRS = [("cnn", 2.5), ("readout", 1.0)]  # the others: tests/test_export.py


def _assert_accepted(verdict):
    assert verdict.ok is True, f"{verdict.graph}: {verdict.stage}: {verdict.message}"


@needs_rtx
@pytest.mark.parametrize("task", DEMO_TASKS)
def test_the_shipped_demo_bundles_parse_and_build(task):
    bundle = demo_bundle(task)
    verdicts = check_bundle_with_tensorrt(bundle, load_manifest(bundle).graph_files)
    assert {v.graph for v in verdicts} >= {"vae_encoder", "vae_decoder", "step"}
    for verdict in verdicts:
        _assert_accepted(verdict)


@pytest.fixture(scope="module")
def step_graphs(tiny_prior, tmp_path_factory):
    """The step of the (kind, CFG) pairs test_export.py does not export, fp32 and fp16."""
    folder = tmp_path_factory.mktemp("steps")
    paths = {}
    for arch, cfg in STEP_PAIRS:
        torch.manual_seed(0)
        config = OperatorConfig.for_prior(tiny_prior, arch, "sr8")
        operator = build_operator(config).eval().requires_grad_(False)
        options = SamplingOptions("sr8", steps=4, cfg_scale=cfg, prompt="a photo")
        context = tiny_prior.encode_prompt(options.prompt, cfg)
        ex = example_inputs(tiny_prior, ExportOptions(options, 64), context)
        names = step_io.STEP_IO.input_names(cfg > 1.0)
        inputs = [ex[n] for n in names]
        for precision, step in (
                ("fp32", GuidedStep(tiny_prior, operator, cfg)),
                ("fp16", half_precision_step(tiny_prior, operator, cfg))):
            path = folder / f"{arch}-cfg{cfg}-{precision}.onnx"
            export_step(step, inputs, names, step_io.STEP_OUTPUTS, path)
            paths[(arch, cfg, precision)] = path
    return paths


@needs_rtx
@pytest.mark.parametrize(("arch", "cfg"), STEP_PAIRS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_step_graph_parses_and_builds(step_graphs, arch, cfg, precision):
    path = step_graphs[(arch, cfg, precision)]
    tail = fp32_tail(onnx.load(str(path))) if precision == "fp16" else frozenset()
    _assert_accepted(check_onnx_with_tensorrt(path, fp32_nodes=tail))


def test_the_fp16_step_is_strongly_typed_with_an_fp32_tail(step_graphs):
    """fp16 convolutions and matrix products, fp32 inputs and outputs, explicit Casts."""
    model = onnx.load(str(step_graphs[("cnn", 2.5, "fp16")]))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    assert {types[i.name] for i in model.graph.input} == {TensorProto.FLOAT}
    assert {types[o.name] for o in model.graph.output} == {TensorProto.FLOAT}
    conv_types = {types.get(n.output[0]) for n in model.graph.node if n.op_type == "Conv"}
    assert conv_types == {TensorProto.FLOAT16}
    assert sum(n.op_type == "Cast" for n in model.graph.node) >= 4
    tail = fp32_tail(model)
    assert tail and all(types.get(o) == TensorProto.FLOAT
                        for n in model.graph.node if n.name in tail for o in n.output)


@needs_rtx
@pytest.mark.parametrize("task", list(task_names()))
def test_every_encoder_parses_and_builds(tiny_prior, tmp_path, task):
    side = 64 // get_degradation(task).scale
    path = tmp_path / f"vae_encoder-{task}.onnx"
    io = step_io.GRAPHS[step_io.VAE_ENCODER]
    export_forward(MeasurementEncoder(tiny_prior, task, 64),
                   [torch.zeros(1, 3, side, side), torch.zeros(1, 4, 8, 8)],
                   io.input_names(), io.output_names, path)
    assert not any(n.op_type == "Resize" for n in onnx.load(str(path)).graph.node)
    _assert_accepted(check_onnx_with_tensorrt(path))


def _old_style_graph() -> onnx.ModelProto:
    """What bundles exported before the change contained: an antialiased cubic upsampling
    and a LayerNormalization whose mean / inverse std are read by later nodes."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Resize", ["x", "", "", "sizes"], ["up"], mode="cubic",
                         antialias=1, cubic_coeff_a=-0.5, exclude_outside=1,
                         coordinate_transformation_mode="half_pixel", name="upsample"),
        helper.make_node("LayerNormalization", ["up", "gamma", "beta"],
                         ["y", "mean", "inv_std"], axis=-3, epsilon=1e-5, name="norm"),
        helper.make_node("Mul", ["y", "inv_std"], ["scaled"], name="use_inv_std"),
        helper.make_node("Add", ["scaled", "mean"], ["out"], name="use_mean"),
    ]
    initializers = [
        numpy_helper.from_array(np.array([1, 3, 16, 16], np.int64), "sizes"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, (3, 16, 16)).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.normal(0, 0.1, (3, 16, 16)).astype(np.float32), "beta"),
    ]
    graph = helper.make_graph(
        nodes, "old", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 16, 16])],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _cleaned() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    old = _old_style_graph()
    new = onnx.ModelProto()
    new.CopyFrom(old)
    assert len(make_parser_clean(new)) == 2
    return old, new


def test_cleaning_an_old_graph_keeps_its_result(tmp_path):
    """No TensorRT needed: the rewrite is exact in ONNX Runtime and passes the static
    parser rules."""
    import onnxruntime as ort

    old, new = _cleaned()
    onnx.checker.check_model(new, full_check=True)
    assert not any(n.op_type == "Resize" for n in new.graph.node)
    assert all(len(n.output) == 1 for n in new.graph.node if n.op_type == "LayerNormalization")
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    before = ort.InferenceSession(old.SerializeToString()).run(None, {"x": x})[0]
    after = ort.InferenceSession(new.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, **TOLERANCES["float32"])
    # and the upsampling is what PyTorch computes
    torch_up = torch.nn.functional.interpolate(torch.from_numpy(x), size=(16, 16),
                                               mode="bicubic", antialias=True)
    up = ort.InferenceSession(helper.make_model(
        helper.make_graph([old.graph.node[0]], "up", list(old.graph.input),
                          [helper.make_tensor_value_info("up", TensorProto.FLOAT,
                                                         [1, 3, 16, 16])],
                          [old.graph.initializer[0]]),
        opset_imports=[helper.make_opsetid("", 18)]).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(up, torch_up.numpy(), **TOLERANCES["float32"])
    from silo_rt.runtime.tensorrt.parser_rules import parser_rule_violations

    assert len(parser_rule_violations(old)) == 2 and parser_rule_violations(new) == []


@needs_rtx
def test_the_cleaned_graph_satisfies_nvidias_parser(tmp_path):
    old, new = _cleaned()
    for model, name in ((old, "old.onnx"), (new, "new.onnx")):
        onnx.save(model, str(tmp_path / name))
    assert check_onnx_with_tensorrt(tmp_path / "old.onnx", build=False).ok is False
    _assert_accepted(check_onnx_with_tensorrt(tmp_path / "new.onnx"))
