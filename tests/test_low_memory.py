"""``--memory low`` (#26): ONNX Runtime holds each of the step's weights once, as stored,
instead of folding and prepacking a copy per layout, and restores what ``fast`` restores.

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
from silo_rt.runtime.ort_backend import WEIGHT_MIN_ELEMENTS, OrtGraphs, with_weights_as_inputs
from silo_rt.runtime.step_io import STEP


@pytest.fixture(scope="module")
def demo():
    bundle = demo_bundle("sr4")
    return bundle, load_manifest(bundle)


def _initializer_bytes(model: onnx.ModelProto) -> dict[str, int]:
    return {t.name: onnx.numpy_helper.to_array(t).nbytes for t in model.graph.initializer}


def test_the_weights_listed_as_inputs_are_exactly_the_large_float_initializers(demo):
    bundle, manifest = demo
    path = manifest.graph_file(bundle, STEP)
    original = onnx.load(str(path))
    listed = onnx.load_from_string(with_weights_as_inputs(path))
    inputs = {i.name for i in listed.graph.input} - {i.name for i in original.graph.input}
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    expected = {t.name for t in original.graph.initializer
                if t.data_type in floats and np.prod(t.dims) >= WEIGHT_MIN_ELEMENTS}
    assert inputs == expected and len(expected) > 10
    assert [n.name for n in listed.graph.node] == [n.name for n in original.graph.node]


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
