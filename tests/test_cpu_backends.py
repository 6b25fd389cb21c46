"""The CPU bundle backends on the embedded demo: ONNX Runtime's step loop, and OpenVINO
against ONNX Runtime (fp32 parity, the gradient included; bf16 as an approximation)."""

import json

import numpy as np
import pytest
from conftest import END_TO_END_RELATIVE

from silo_rt.bundle_format import load_manifest
from silo_rt.demo import demo_bundle
from silo_rt.runtime.ort_backend import OrtGraphs

STEPS = 6


def _rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def demo():
    """``(bundle, manifest, inputs of a STEPS-step run)`` of the demo's sr4 bundle."""
    bundle = demo_bundle("sr4")
    manifest = load_manifest(bundle)
    rng = np.random.default_rng(3)
    shape = tuple(manifest.latent_shape)
    inputs = dict(
        z=rng.standard_normal(shape).astype(np.float32),
        w=rng.standard_normal(shape).astype(np.float32),
        context=np.load(bundle / "context.npy").astype(np.float32),
        timesteps=np.asarray(manifest.schedule.timesteps[200:200 + STEPS]),
        coefficients=np.asarray(manifest.schedule.coefficients[200:200 + STEPS], np.float32),
        noise=rng.standard_normal((STEPS, *shape)).astype(np.float32),
        eta=0.5, sigma_y=0.02)
    return bundle, manifest, inputs


@pytest.fixture(scope="module")
def ort_graphs(demo):
    bundle, manifest, _ = demo
    return OrtGraphs(bundle, manifest, threads=1)


def _steps(graphs, inputs, eta=None, steps=STEPS):
    run = dict(inputs, eta=inputs["eta"] if eta is None else eta)
    return graphs.run_steps(run["z"], run["w"], run["context"], run["timesteps"][:steps],
                            run["coefficients"][:steps], run["noise"][:steps], run["eta"],
                            run["sigma_y"])


def test_ort_steps_leave_the_start_latent_alone_and_return_their_own_array(demo, ort_graphs):
    _, _, inputs = demo
    z_before = inputs["z"].copy()
    first = _steps(ort_graphs, inputs)
    assert np.array_equal(inputs["z"], z_before)  # the ping-pong once wrote into the caller's z
    kept = first.copy()
    second = _steps(ort_graphs, inputs, steps=3)  # reuses the memory a view would point into
    assert np.array_equal(first, kept)
    assert not np.array_equal(second, first)
    assert np.array_equal(_steps(ort_graphs, inputs), first)  # and z unchanged: same result


def test_ort_step_loop_matches_single_graph_calls(demo, ort_graphs):
    """``run_steps`` (bound buffers, ping-pong) against plain ``run`` calls chained here."""
    _, _, inputs = demo
    z = inputs["z"]
    for i in range(STEPS):
        z = ort_graphs.run("step", z_t=z, timestep=inputs["timesteps"][i:i + 1],
                           coefficients=inputs["coefficients"][i], noise=inputs["noise"][i],
                           w=inputs["w"], eta=np.array([inputs["eta"]]),
                           context=inputs["context"],
                           sigma_y=np.array([inputs["sigma_y"]]))[0]
    assert _rel(_steps(ort_graphs, inputs), z) < 1e-6


@pytest.fixture(scope="module")
def ov():
    return pytest.importorskip("openvino", reason="the openvino extra is not installed")


@pytest.fixture(scope="module")
def ov_graphs(demo, ov):
    from silo_rt.runtime.openvino_backend import OpenVinoGraphs

    bundle, manifest, _ = demo
    return OpenVinoGraphs(bundle, manifest, threads=1)


def test_openvino_steps_match_onnx_runtime_gradient_included(demo, ort_graphs, ov_graphs):
    """The whole step and its gradient part (the difference the guidance makes, η vs 0),
    which the weight-sharing fault broke while leaving the rest within 1 %."""
    _, _, inputs = demo
    ours, theirs = _steps(ov_graphs, inputs), _steps(ort_graphs, inputs)
    assert _rel(ours, theirs) < 1e-5
    guidance = theirs - _steps(ort_graphs, inputs, eta=0.0, steps=STEPS)
    assert np.linalg.norm(guidance) > 1e-3 * np.linalg.norm(theirs)  # a real gradient part
    assert _rel(ours - _steps(ov_graphs, inputs, eta=0.0), guidance) < 1e-4
    assert ov_graphs.unshared["step"] > 0


def test_openvino_unshares_weights_a_convolution_and_its_transpose_read(ov):
    """A graph where one weight feeds a strided Conv and the ConvTranspose of its gradient:
    after the rewrite, both outputs equal ONNX Runtime's."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from silo_rt.runtime.openvino_backend import unshare_transposed_conv_weights

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    conv = dict(strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["down"], **conv),
         helper.make_node("ConvTranspose", ["g", "w"], ["up"], output_padding=[1, 1], **conv)],
        "shared", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8]),
                   helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 8, 4, 4])],
        [helper.make_tensor_value_info("down", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("up", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32),
             "g": rng.standard_normal((1, 8, 4, 4)).astype(np.float32)}
    expected = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    core = ov.Core()
    ov_model = core.read_model(model=model.SerializeToString())
    assert unshare_transposed_conv_weights(ov_model) == 1
    compiled = core.compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(feeds)
    for name, want in zip(("down", "up"), expected):
        assert _rel(result[name], want) < 1e-5


def test_openvino_restoration_matches_onnx_runtime(demo, ov):
    from silo_rt.runtime import BundleRunner

    bundle, manifest, _ = demo
    y = np.random.default_rng(1).uniform(-1, 1, manifest.measurement_shape).astype(np.float32)
    ours = BundleRunner(bundle, backend="openvino", threads=1).restore(y, seed=2, steps=12)
    theirs = BundleRunner(bundle, backend="ort", threads=1).restore(y, seed=2, steps=12)
    assert _rel(ours, theirs) < END_TO_END_RELATIVE


def test_openvino_bf16_is_close_but_not_parity(demo, ort_graphs, ov):
    from silo_rt.runtime.openvino_backend import OpenVinoGraphs, cpu_has_native_bf16

    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16 (OpenVINO would run fp32)")
    bundle, manifest, inputs = demo
    bf16 = OpenVinoGraphs(bundle, manifest, threads=1, precision="bf16")
    error = _rel(_steps(bf16, inputs), _steps(ort_graphs, inputs))
    assert 1e-6 < error < 2e-2  # bfloat16 arithmetic: visibly not fp32, still the same step


def test_openvino_refuses_an_unknown_precision(demo, ov):
    from silo_rt.errors import SiloError
    from silo_rt.runtime.openvino_backend import OpenVinoGraphs

    bundle, manifest, _ = demo
    with pytest.raises(SiloError, match="fp32 or bf16"):
        OpenVinoGraphs(bundle, manifest, precision="fp16")


def test_auto_checks_openvino_once_and_caches_the_verdict(demo, ov, tmp_path, monkeypatch):
    from silo_rt.runtime import BundleRunner, backend_choice

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SILO_RT_AUTO_CPU")  # conftest pins auto; this tests the choice
    bundle, _, _ = demo
    first = BundleRunner(bundle, backend="auto", threads=1)
    assert first.backend in ("ort", "openvino")
    assert first.label.startswith(f"auto: {first.backend} (checked ")
    record = json.loads(backend_choice.cache_file().read_text())
    (verdict,) = record.values()
    assert verdict["parity"] and verdict["z_rel"] < backend_choice.Z_TOLERANCE

    def no_second_check(*args):
        raise AssertionError("checked again despite the cached verdict")

    monkeypatch.setattr(backend_choice, "check_candidate", no_second_check)
    again = BundleRunner(bundle, backend="auto", threads=1)
    assert (again.backend, again.label) == (first.backend, first.label)


def test_auto_keeps_onnx_runtime_when_the_candidate_disagrees(demo, ov, tmp_path,
                                                              monkeypatch):
    """A candidate whose step is 1e-3 off (as a wrong gradient would make it) is refused
    however fast it is, and the refusal is cached and said."""
    from silo_rt.runtime import BundleRunner
    from silo_rt.runtime.openvino_backend import OpenVinoGraphs

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SILO_RT_AUTO_CPU")
    exact = OpenVinoGraphs.run

    def slightly_wrong(self, name, **inputs):
        outputs = exact(self, name, **inputs)
        if name == "step":
            outputs[0] = outputs[0] * np.float32(1.001)
        return outputs

    monkeypatch.setattr(OpenVinoGraphs, "run", slightly_wrong)
    bundle, _, _ = demo
    for _ in range(2):  # checked, then read from the cache
        runner = BundleRunner(bundle, backend="auto", threads=1)
        assert runner.backend == "ort"
        assert "openvino disagrees with ONNX Runtime" in runner.label
        assert isinstance(runner.graphs, OrtGraphs)


def test_auto_without_openvino_says_so(demo, monkeypatch):
    from silo_rt.runtime import BundleRunner, openvino_backend

    monkeypatch.setattr(openvino_backend, "openvino_available", lambda: False)
    monkeypatch.delenv("SILO_RT_AUTO_CPU")
    runner = BundleRunner(demo[0], backend="auto", threads=1)
    assert (runner.backend, runner.label) == ("ort", "auto: ort (OpenVINO is not installed)")


@pytest.mark.parametrize("backend, precision, message", [
    ("ort", "bf16", "not bf16"), ("trt", "bf16", "not bf16"), ("openvino", "fp16", "fp32 or bf16")])
def test_runner_refuses_a_precision_its_backend_lacks(demo, backend, precision, message):
    from silo_rt.errors import SiloError
    from silo_rt.runtime import BundleRunner

    if backend == "openvino":
        pytest.importorskip("openvino")
    with pytest.raises(SiloError, match=message):
        BundleRunner(demo[0], backend=backend, precision=precision)


def test_restore_cli_runs_openvino_and_refuses_bf16_elsewhere(tmp_path, capsys, ov):
    from cli_run import run

    from silo_rt.images import read_image

    measurement = demo_measurement(tmp_path)
    out = tmp_path / "x.png"
    code, stdout, err = run(["restore", measurement, "--backend", "openvino", "--steps", 3,
                             "--out", out], capsys)
    assert code == 0, err
    assert "backend openvino (fp32)" in stdout and read_image(out).shape == (1, 3, 64, 64)
    refused = tmp_path / "refused.png"
    code, _, err = run(["restore", measurement, "--backend", "ort", "--precision", "bf16",
                        "--steps", 3, "--out", refused], capsys)
    assert code == 2 and "not bf16 (bf16: --backend openvino)" in err
    assert err.strip().splitlines()[-1].startswith("error: ONNX Runtime runs")
    assert "Traceback" not in err and not refused.exists()


def demo_measurement(folder):
    """A 16x16 sr4 measurement for the demo bundle, written as a PNG."""
    from silo_rt.images import write_image

    path = folder / "y.png"
    write_image(path, np.random.default_rng(4).uniform(-1, 1, (1, 3, 16, 16)))
    return path


def test_openvino_bf16_is_refused_where_the_cpu_lacks_it(demo, ov, monkeypatch):
    from silo_rt.errors import SiloError
    from silo_rt.runtime import openvino_backend

    monkeypatch.setattr(openvino_backend, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(SiloError, match="no native bf16"):
        openvino_backend.OpenVinoGraphs(demo[0], demo[1], precision="bf16")


def test_auto_can_be_pinned(demo, ov, monkeypatch):
    from silo_rt.errors import SiloError
    from silo_rt.runtime import BundleRunner

    monkeypatch.setenv("SILO_RT_AUTO_CPU", "openvino")
    runner = BundleRunner(demo[0], backend="auto", threads=1)
    assert (runner.backend, runner.label) == ("openvino",
                                              "auto: openvino (SILO_RT_AUTO_CPU=openvino)")
    monkeypatch.setenv("SILO_RT_AUTO_CPU", "fastest")
    with pytest.raises(SiloError, match="SILO_RT_AUTO_CPU=fastest: choose ort or openvino"):
        BundleRunner(demo[0], backend="auto")
