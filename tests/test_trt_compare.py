"""polygraphy's engine-vs-ONNX Runtime comparison (silo_rt.runtime.tensorrt.compare): the first
disagreeing tensor in graph order, one line where it cannot run, and, where polygraphy is
installed, its ONNX Runtime self-check on the demo decoder (every tensor marked)."""

import sys

import pytest
from fake_gpu import install

from silo_rt.demo import demo_bundle
from silo_rt.runtime.tensorrt.compare import compare_bundle, compare_graph, first_mismatch, main


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


def test_export_compare_needs_check_trt_and_fails_on_a_disagreeing_engine(tmp_path, capsys,
                                                                        monkeypatch):
    """`export --compare` is refused without `--check trt` (before any work), and the
    comparison step exits 1 naming the first disagreeing tensor; a graph that could not be
    compared here (no GPU) is a line, not a failure."""
    from cli_run import run

    import silo_rt.runtime.tensorrt.compare as trt_compare
    from silo_rt.cli.export import compare_engines
    from silo_rt.errors import SiloError
    from silo_rt.runtime.tensorrt.compare import Comparison

    code, _, err = run(["export", "--model", "tiny", "--task", "sr4", "--compare",
                        "--operator", tmp_path / "op.safetensors",
                        "--out", tmp_path / "b"], capsys)
    assert code == 2 and "--compare does nothing for an export without --check trt" in err
    assert not (tmp_path / "b").exists()

    verdicts = [Comparison("vae_encoder", None, "no CUDA GPU"),
                Comparison("step", False, "3 of 90 tensors differ", "/unet/conv_in/Conv", 90)]
    monkeypatch.setattr(trt_compare, "compare_bundle",
                        lambda bundle, log: [log(v.line()) for v in verdicts] and verdicts)
    with pytest.raises(SiloError, match=r"step \(first at /unet/conv_in/Conv\)") as info:
        compare_engines(tmp_path)
    assert info.value.exit_code == 1
    monkeypatch.setattr(trt_compare, "compare_bundle", lambda bundle, log: verdicts[:1])
    compare_engines(tmp_path)  # not comparable here: no failure
