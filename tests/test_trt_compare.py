"""polygraphy's engine-vs-ONNX Runtime comparison (silo_rt.runtime.trt_compare): the first
disagreeing tensor in graph order, one line where it cannot run, and, where polygraphy is
installed, its ONNX Runtime self-check on the demo decoder (every tensor marked)."""

import sys

import pytest
from fake_gpu import install

from silo_rt.demo import demo_bundle
from silo_rt.runtime.trt_compare import compare_bundle, compare_graph, first_mismatch, main


def test_the_first_mismatch_is_the_earliest_in_graph_order():
    order = ["conv", "norm", "silu", "out"]
    assert first_mismatch(order, {"out": False, "norm": False, "conv": True}) == "norm"
    assert first_mismatch(order, {"silu": True, "out": True}) is None
    assert first_mismatch(order, {"fused_away": False}) is None  # not in the ONNX graph


def test_without_polygraphy_every_graph_says_why_in_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "polygraphy", None)
    verdicts = compare_bundle(demo_bundle("sr4"), log=print)
    assert [v.graph for v in verdicts] == ["vae_encoder", "vae_decoder", "step"]
    assert all(v.ok is None and "pip install polygraphy" in v.message for v in verdicts)
    assert main(["--demo", "sr4"]) == 0  # nothing disagreed; the lines say why
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "step: not compared: polygraphy is not installed (pip install polygraphy)"


def test_polygraphy_needs_full_tensorrt_and_a_gpu(monkeypatch):
    pytest.importorskip("polygraphy")
    from fake_gpu import FakeCudart, fake_tensorrt

    decoder = demo_bundle("sr4") / "vae_decoder.onnx"
    install(monkeypatch, trt=fake_tensorrt("tensorrt_rtx"))
    assert "not TensorRT-RTX" in compare_graph(decoder).message
    install(monkeypatch, cudart=FakeCudart(capabilities=()))
    assert "no CUDA GPU is visible" in compare_graph(decoder).message


def test_onnx_runtime_self_check_marks_every_tensor():
    pytest.importorskip("polygraphy")
    verdict = compare_graph(demo_bundle("sr4") / "vae_decoder.onnx", against="onnxrt")
    assert verdict.ok is True and verdict.outputs_compared > 100, verdict.line()
