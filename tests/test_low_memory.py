"""``--memory low`` (#26): ONNX Runtime holds the step's weights of few rows once, as
stored, instead of folding and prepacking a copy per layout, reads them as stored in the
convolutions' input gradients, and restores what ``fast`` restores.

Run on the embedded sr4 demo bundle, whose weights are stored in float16: ``fast`` folds
them to float32 copies (and transposed ones for the backward), ``low`` keeps them float16.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from cli_run import run
from PIL import Image

from silo_rt.bundle_format import load_manifest
from silo_rt.demo import demo_bundle
from silo_rt.runtime import BundleRunner
from silo_rt.runtime.low_memory import (
    WEIGHT_MAX_ROWS,
    WEIGHT_MIN_ELEMENTS,
    conv_gradients_as_transposed,
    held_as_stored,
    low_memory_model,
    weight_rows,
)
from silo_rt.runtime.ort_backend import OrtGraphs
from silo_rt.runtime.step_io import STEP


@pytest.fixture(scope="module")
def demo():
    bundle = demo_bundle("sr4")
    return bundle, load_manifest(bundle)


def _initializer_bytes(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer}


def test_the_weights_listed_as_inputs_are_the_large_float_initializers_of_few_rows(demo):
    bundle, manifest = demo
    path = manifest.graph_file(bundle, STEP)
    original = onnx.load(str(path))
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    large = {t.name for t in original.graph.initializer
             if t.data_type in floats and np.prod(t.dims) >= WEIGHT_MIN_ELEMENTS}
    rows = weight_rows(original)
    top = max(r for r in rows.values() if r)
    assert top <= WEIGHT_MAX_ROWS  # the demo's latents are small: every weight is held
    for max_rows in (WEIGHT_MAX_ROWS, top // 4):
        listed = onnx.load_from_string(low_memory_model(path, max_rows=max_rows))
        inputs = {i.name for i in listed.graph.input} - {i.name for i in original.graph.input}
        expected = {name for name in large if (rows[name] or 0) <= max_rows}
        assert inputs == expected and len(expected) > 10
    assert len(expected) < len(large)  # the top level's weights stay folded at top // 4
    # each held convolution's input gradient now reads its weight as stored
    ops = [n.op_type for n in listed.graph.node]
    assert ops.count("ConvTranspose") > [n.op_type for n in original.graph.node].count(
        "ConvTranspose")


def _matrix_graph() -> onnx.ModelProto:
    """Convolutions at 16×16 and 8×8, a float16 weight cast for a matrix product over 64
    tokens, a Gemm on one row and a bias no matrix op reads."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name, shape, dtype=np.float32):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Conv", ["a", "w2"], ["b"], pads=[1, 1, 1, 1], strides=[2, 2],
                         kernel_shape=[3, 3]),
        helper.make_node("Reshape", ["b", "shape"], ["c"]),
        helper.make_node("Transpose", ["c"], ["d"], perm=[0, 2, 1]),
        helper.make_node("Cast", ["w3"], ["w3f"], to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["d", "w3f"], ["e"]),
        helper.make_node("ReduceMean", ["e", "axis"], ["f"], keepdims=0),
        helper.make_node("Gemm", ["f", "w4"], ["g"]),
        helper.make_node("Add", ["g", "w5"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "matrices", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [weight("w1", (8, 3, 3, 3)), weight("w2", (8, 8, 3, 3)),
         weight("w3", (8, 16), np.float16), weight("w4", (16, 4)), weight("w5", (4,)),
         numpy_helper.from_array(np.array([1, 8, 64], np.int64), "shape"),
         numpy_helper.from_array(np.array([1], np.int64), "axis")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_weight_rows_counts_the_output_rows_each_weight_is_applied_to():
    model = _matrix_graph()
    assert weight_rows(model) == {"w1": 256, "w2": 64, "w3": 64, "w4": 1, "w5": None}
    assert held_as_stored(model, min_elements=1, max_rows=64) == {"w2", "w3", "w4", "w5"}
    assert held_as_stored(model, min_elements=200, max_rows=None) == {"w1", "w2"}


def _flipped_input_gradient(weight: np.ndarray, grad_shape, padding: int, dilation: int):
    """The graph the exporter writes for a stride-1 convolution's input gradient: ``g``
    convolved with ``weight`` flipped in both spatial axes, its channel axes swapped."""
    from onnx import TensorProto, helper, numpy_helper

    reach = dilation * (weight.shape[2] - 1)
    out_channels, in_channels = weight.shape[:2]
    size = grad_shape[2] - 2 * (reach - padding) + reach
    nodes = [
        helper.make_node("Slice", ["w", "starts", "ends", "axes", "steps"], ["flipped"]),
        helper.make_node("Transpose", ["flipped"], ["swapped"], perm=[1, 0, 2, 3]),
        helper.make_node("Conv", ["g", "swapped"], ["dx"], pads=[reach - padding] * 4,
                         dilations=[dilation] * 2, kernel_shape=list(weight.shape[2:])),
    ]
    const = numpy_helper.from_array
    graph = helper.make_graph(
        nodes, "input_gradient", [helper.make_tensor_value_info("g", TensorProto.FLOAT,
                                                                list(grad_shape))],
        [helper.make_tensor_value_info("dx", TensorProto.FLOAT,
                                       [1, in_channels, size, size])],
        [const(weight, "w"), const(np.array([-1, -1], np.int64), "starts"),
         const(np.full(2, np.iinfo(np.int64).min, np.int64), "ends"),
         const(np.array([2, 3], np.int64), "axes"), const(np.array([-1, -1], np.int64),
                                                           "steps")])
    assert out_channels == grad_shape[1]
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("kernel, padding, dilation", [(3, 1, 1), (1, 0, 1), (3, 2, 2),
                                                       (5, 1, 1)])
def test_a_held_convolutions_input_gradient_reads_its_weight_as_stored(kernel, padding,
                                                                       dilation):
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(kernel + padding)
    weight = rng.standard_normal((6, 4, kernel, kernel)).astype(np.float32)
    g = rng.standard_normal((1, 6, 9, 9)).astype(np.float32)
    model = _flipped_input_gradient(weight, g.shape, padding, dilation)
    assert conv_gradients_as_transposed(model, set()) == 0  # only held weights' gradients
    assert conv_gradients_as_transposed(model, {"w"}) == 1
    assert [n.op_type for n in model.graph.node] == ["ConvTranspose"]
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    (dx,) = session.run(None, {"g": g})
    size = dx.shape[-1]
    expected = torch.nn.grad.conv2d_input((1, 4, size, size), torch.from_numpy(weight),
                                          torch.from_numpy(g), padding=padding,
                                          dilation=dilation).numpy()
    assert size + 2 * padding - dilation * (kernel - 1) == g.shape[-1]
    np.testing.assert_allclose(dx, expected, rtol=1e-5, atol=1e-5)


def _optimized_initializers(bundle, manifest, memory, tmp_path) -> dict[str, int]:
    """The step's initializers after ONNX Runtime's graph optimisations, as the runtime
    configures them for ``memory``."""
    graphs = OrtGraphs(bundle, manifest, ["CPUExecutionProvider"], 1, memory=memory)
    out = tmp_path / f"{memory}.onnx"
    graphs._options.optimized_model_filepath = str(out)
    graphs.session(STEP)
    graphs.close()
    return _initializer_bytes(onnx.load(str(out)))


def test_low_memory_keeps_each_weight_once_as_stored(demo, tmp_path):
    bundle, manifest = demo
    stored = _initializer_bytes(onnx.load(str(manifest.graph_file(bundle, STEP))))
    fast = _optimized_initializers(bundle, manifest, "fast", tmp_path)
    low = _optimized_initializers(bundle, manifest, "low", tmp_path)
    big = {name for name, size in stored.items() if size >= 2 * WEIGHT_MIN_ELEMENTS}
    # fast: the float16 weights are folded away into new (float32, re-laid-out) constants
    assert not big & set(fast) and sum(fast.values()) > 2 * sum(stored.values())
    # low: every large weight is still there, float16; only constants below
    # WEIGHT_MIN_ELEMENTS were folded (to float32, channels padded to blocks: at most 2x)
    assert big <= set(low) and all(low[name] == stored[name] for name in big)
    derived = [size for name, size in low.items() if name not in stored]
    largest = 2 * 4 * WEIGHT_MIN_ELEMENTS
    assert derived and max(derived) <= largest < 2 * 2 * max(stored.values())


def test_low_memory_restores_what_fast_restores(demo):
    bundle, manifest = demo
    y = np.random.default_rng(3).uniform(-1, 1, manifest.measurement_shape).astype(np.float32)
    results = {}
    for memory in ("fast", "low"):
        runner = BundleRunner(bundle, backend="ort", threads=1, memory=memory)
        assert ("low memory" in runner.label) == (memory == "low")
        results[memory] = runner.restore(y, seed=1, steps=4)
    fast, low = results["fast"], results["low"]
    assert np.linalg.norm(low - fast) <= 1e-5 * np.linalg.norm(fast)
    other = BundleRunner(bundle, backend="ort", threads=1).restore(y, seed=2, steps=4)
    assert np.linalg.norm(other - fast) > 100 * np.linalg.norm(low - fast)


@pytest.mark.parametrize("backend, fragment", [
    ("openvino", "--memory low is not a mode of OpenVINO (ONNX Runtime only)"),
    ("torch", "--memory cannot be used with --backend torch"),
])
def test_low_memory_elsewhere_is_one_line(backend, fragment, demo, tmp_path, capsys):
    if backend == "openvino":
        pytest.importorskip("openvino")
    bundle, manifest = demo
    side = manifest.measurement_shape[-1]
    Image.new("RGB", (side, side), (90, 120, 150)).save(tmp_path / "y.png")
    where = ["--bundle", bundle] if backend != "torch" else ["--model", "x", "--operator",
                                                             tmp_path / "x.pt", "--task",
                                                             "sr4"]
    code, _, err = run(["restore", tmp_path / "y.png", *where, "--backend", backend,
                        "--memory", "low", "--out", tmp_path / "x.png"], capsys)
    assert code != 0 and fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
