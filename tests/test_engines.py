"""The GPU path's CPU-checkable parts: engine keys, build configuration, the FP32 tail of the
step graph, refusal of plans built elsewhere, backend selection without a GPU, the TensorRT
10/11/RTX API helpers (with stand-in objects), and, where ``tensorrt_rtx`` is installed,
NVIDIA's real ONNX parser and ahead-of-time builder on tiny graphs."""

import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from silo_rt.bundle_format import write_manifest
from silo_rt.errors import SiloError
from silo_rt.runtime.finite import check_losses
from silo_rt.runtime.restore import tensorrt_available
from silo_rt.runtime.tensorrt import api
from silo_rt.runtime.tensorrt.api import (
    check_flavor_supports,
    configure_builder,
    engine_device_memory,
    explain_invalid_plan,
    format_parser_error,
    import_tensorrt,
    rtx_supports,
    set_context_memory,
    uses_timing_cache,
)
from silo_rt.runtime.tensorrt.check import check_bundle_with_tensorrt, check_onnx_with_tensorrt
from silo_rt.runtime.tensorrt.fp32_tail import (
    fp32_tail,
    layer_onnx_node,
    onnx_tail_violations,
    tail_layer_violations,
)
from silo_rt.runtime.tensorrt.keys import (
    EngineBuildConfig,
    EngineKey,
    check_plan_entry,
    engine_sources,
    verify_engine_files,
)
from silo_rt.runtime.tensorrt.parser_rules import PARSER_RESTRICTIONS, parser_rule_violations

H200_FP16 = EngineKey("tensorrt", "10.13.0", "9.0", "fp16")


def test_engine_key_folder_and_description():
    assert H200_FP16.folder == "tensorrt-10.13.0-sm90-fp16"
    assert "compute capability 9.0" in H200_FP16.describe()


def test_build_config_validation_and_vae_precision():
    config = EngineBuildConfig(precision="fp16", fp32_vae=True)
    assert config.graph_precision("vae_decoder") == "fp32"
    assert config.graph_precision("step") == "fp16"
    with pytest.raises(SiloError, match="fp32 VAE graphs"):  # precision lives in the ONNX
        EngineBuildConfig("fp16", fp32_vae=False)
    with pytest.raises(SiloError, match="precision"):
        EngineBuildConfig(precision="int8")
    with pytest.raises(SiloError, match="optimisation level"):
        EngineBuildConfig(optimization_level=9)


def _entry(key, bundle, plans=None):
    return {"key": key.__dict__, "plans": plans or {}}


def test_plans_built_elsewhere_are_refused():
    a100 = EngineKey("tensorrt", "10.13.0", "8.0", "fp16")
    with pytest.raises(SiloError, match="built for tensorrt 10.13.0, compute capability 8.0"):
        check_plan_entry(_entry(a100, None), H200_FP16)
    check_plan_entry(_entry(H200_FP16, None), H200_FP16)  # matching key: accepted


def test_plan_hashes_are_checked(tmp_path):
    plan = tmp_path / "tensorrt" / H200_FP16.folder / "step.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"serialized engine")
    from silo_rt.bundle_format import sha256_file

    entry = _entry(H200_FP16, tmp_path, {"step": {"file": str(plan.relative_to(tmp_path)),
                                                  "sha256": sha256_file(plan)}})
    assert verify_engine_files(tmp_path, entry) == {"step": plan}
    plan.write_bytes(b"tampered")
    with pytest.raises(SiloError, match="sha256"):
        verify_engine_files(tmp_path, entry)
    # The one writer of the format keeps the engine entry (in a real bundle's manifest).
    import shutil

    from silo_rt.demo import demo_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle("sr4"), bundle)
    plan_copy = bundle / entry["plans"]["step"]["file"]
    plan_copy.parent.mkdir(parents=True)
    shutil.copy(plan, plan_copy)
    entry["plans"]["step"]["sha256"] = sha256_file(plan_copy)
    full = json.loads((bundle / "manifest.json").read_text())
    full["engines"] = {H200_FP16.folder: entry}
    write_manifest(bundle, full)
    assert json.loads((bundle / "manifest.json").read_text()) == full


def test_fp32_tail_stops_at_heavy_ops():
    """z_prev = a·z + conv(z) … : the tail is the elementwise end, never the convolution."""
    nodes = [
        helper.make_node("Conv", ["z", "wt"], ["c"], name="conv"),
        helper.make_node("Mul", ["c", "k"], ["m"], name="scale"),
        helper.make_node("Clip", ["m", "lo", "hi"], ["g"], name="clamp"),
        helper.make_node("Sub", ["z", "g"], ["z_prev"], name="update"),
        helper.make_node("ReduceL2", ["m"], ["loss"], name="norm", keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("z_prev", TensorProto.FLOAT, [1, 1, 4, 4]),
         helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])])
    assert fp32_tail(helper.make_model(graph)) == {"scale", "clamp", "update", "norm"}


def test_nan_is_reported_with_its_step():
    check_losses([1.0, 2.0], [999, 998])
    with pytest.raises(SiloError, match="step 2 \\(timestep 997\\)"):
        check_losses([1.0, 2.0, float("nan"), float("inf")], [999, 998, 997, 996])


def test_without_tensorrt_the_runtime_says_so(monkeypatch):
    """Runs everywhere: both TensorRT modules are hidden (the dev extra installs
    TensorRT-RTX, so a test that skipped when TensorRT imports never ran in CI)."""
    import sys

    for module in ("tensorrt", "tensorrt_rtx"):
        monkeypatch.setitem(sys.modules, module, None)  # `import` raises ImportError
    with pytest.raises(SiloError, match="TensorRT is not installed"):
        import_tensorrt()
    assert tensorrt_available() is False


# ------------------------------------------------------------------ engine set and API helpers


def test_fp16_engines_need_the_step_fp16_graph():
    graphs = {"vae_encoder": {}, "vae_decoder": {}, "step": {}}
    assert engine_sources(graphs, "fp32")["step"] == "step"
    with pytest.raises(SiloError, match="re-export it with `--precision fp16`"):
        engine_sources(graphs, "fp16")
    graphs["step_fp16"] = {}
    assert engine_sources(graphs, "fp16") == {
        "vae_encoder": "vae_encoder", "vae_decoder": "vae_decoder", "step": "step_fp16"}
    with pytest.raises(SiloError, match="TensorRT runs a bundle's fp32 or fp16 step, not bf16"):
        engine_sources(graphs, "bf16")


def test_tensorrt_rtx_is_refused_on_unsupported_gpus():
    assert rtx_supports("8.6") and rtx_supports("12.0") and rtx_supports("12.1")
    assert not rtx_supports("9.0") and not rtx_supports("10.0") and not rtx_supports("7.0")
    with pytest.raises(SiloError, match="TensorRT-RTX 1.7.1 does not support compute "
                                        "capability 9.0"):
        check_flavor_supports("tensorrt_rtx", "1.7.1", "9.0")
    check_flavor_supports("tensorrt", "11.0", "9.0")  # full TensorRT: no such table
    check_flavor_supports("tensorrt_rtx", "1.7.1", "8.9")


class FakeConfig:
    def __init__(self):
        self.flags, self.pools = {"TF32"}, {}

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size


def _fake_trt(*flags):
    return SimpleNamespace(BuilderFlag=SimpleNamespace(**{f: f for f in flags}),
                           MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"))


def test_builder_flags_for_tensorrt_10_11_and_rtx():
    trt10 = _fake_trt("TF32", "FP16")  # TensorRT 10: FP16 exists, but is never used
    config = FakeConfig()
    configure_builder(trt10, config, "tensorrt", 0, workspace_gib=1)
    assert config.flags == set()  # TF32 cleared: fp32 engines are fp32
    assert config.builder_optimization_level == 0 and config.pools == {"WORKSPACE": 2**30}
    rtx = _fake_trt("TF32", "REQUIRE_USER_ALLOCATION")
    config = FakeConfig()
    configure_builder(rtx, config, "tensorrt_rtx", 3)
    assert config.flags == {"REQUIRE_USER_ALLOCATION"}  # needed for stream capture
    config = FakeConfig()
    configure_builder(_fake_trt(), config, "tensorrt", 3)  # a TensorRT without TF32 flag
    assert config.flags == {"TF32"}  # untouched: nothing to clear
    assert uses_timing_cache("tensorrt") and not uses_timing_cache("tensorrt_rtx")


def test_device_memory_and_context_memory_across_versions():
    assert engine_device_memory(SimpleNamespace(device_memory_size_v2=7)) == 7  # 10.x, 11
    assert engine_device_memory(SimpleNamespace(device_memory_size_v2=None,
                                                device_memory_size=5)) == 5
    calls = []
    set_context_memory(SimpleNamespace(set_device_memory=lambda p, n: calls.append((p, n))),
                       16, 64)
    assert calls == [(16, 64)]
    old = SimpleNamespace(device_memory=None)
    set_context_memory(old, 32, 64)
    assert old.device_memory == 32


def test_a_plan_that_cannot_load_says_why():
    members = {"VERSION_MISMATCH": 1, "UNSUPPORTED_CC": 2, "OLD_CUDA_DRIVER": 4}
    trt = SimpleNamespace(EngineInvalidityDiagnostics=SimpleNamespace(__members__=members))
    runtime = SimpleNamespace(get_engine_validity=lambda data: (
        SimpleNamespace(name="INVALID"), 3))
    assert explain_invalid_plan(trt, runtime, b"") == (
        "TensorRT says invalid: version mismatch, unsupported cc")
    assert "another TensorRT version" in explain_invalid_plan(trt, SimpleNamespace(), b"")


def test_parser_errors_become_one_line():
    error = SimpleNamespace(node_name=lambda: "down", node_operator=lambda: "Resize",
                            desc=lambda: "Antialiasing is not supported currently.",
                            node=lambda: 3)
    assert format_parser_error(error) == (
        "node 3 down (Resize): Antialiasing is not supported currently.")


# ------------------------------------------------------------------------ the FP32 tail check


def _tensor(name, dtype):
    return SimpleNamespace(name=name, dtype=SimpleNamespace(name=dtype))


def _layer(name, inputs, outputs, metadata=""):
    return SimpleNamespace(name=name, metadata=metadata, num_inputs=len(inputs),
                           get_input=lambda j: inputs[j], num_outputs=len(outputs),
                           get_output=lambda j: outputs[j])


def _network(layers):
    return SimpleNamespace(num_layers=len(layers), get_layer=lambda i: layers[i])


def test_layers_are_matched_to_onnx_nodes_by_metadata_then_name():
    nodes = {"norm", "clamp"}
    assert layer_onnx_node(_layer("x", [], [], "[ONNX Layer: norm]"), nodes) == "norm"
    assert layer_onnx_node(_layer("norm_1", [], []), nodes) == "norm"
    assert layer_onnx_node(_layer("clamp", [], []), nodes) == "clamp"
    assert layer_onnx_node(_layer("norm_x", [], []), nodes) is None
    assert layer_onnx_node(_layer("ONNXTRT_castHelper", [], []), nodes) is None


def test_tail_check_follows_extra_and_helper_layers():
    """ReduceL2 = square, reduce, sqrt; a low-precision one is wrapped in helper casts."""
    conv = _tensor("c", "HALF")
    up, sq, red, root = (_tensor(n, "FLOAT") for n in ("u", "s", "r", "q"))
    good = _network([
        _layer("conv", [], [conv], "[ONNX Layer: conv]"),
        _layer("to_fp32", [conv], [up], "[ONNX Layer: to_fp32]"),
        _layer("norm", [up], [sq]), _layer("norm_0", [sq], [red]),
        _layer("norm_1", [red], [root])])
    assert tail_layer_violations(good, {"to_fp32", "norm"}) == []
    down = _tensor("h", "HALF")
    bad = _network([
        _layer("conv", [], [conv], "[ONNX Layer: conv]"),
        _layer("ONNXTRT_castHelper", [conv], [up]),
        _layer("norm", [up], [sq]), _layer("norm_0", [sq], [red]),
        _layer("norm_1", [red], [root]),
        _layer("ONNXTRT_castHelper_2", [root], [down])])
    assert tail_layer_violations(bad, {"norm"}) == [
        "node norm: TensorRT layer ONNXTRT_castHelper_2 outputs half; the step's tail must "
        "be float32"]
    half_sqrt = _network([_layer("norm_1", [], [_tensor("q", "HALF")])])
    assert tail_layer_violations(half_sqrt, {"norm"})  # only the sqrt is half: still refused


# -------------------------------------------------------------------------- tiny ONNX graphs


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def antialiased_resize():
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="down", mode="cubic",
                            antialias=1)
    return _model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
                  [numpy_helper.from_array(np.array([1, 1, .25, .25], np.float32), "scales")])


def conv_relu():
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
                  [weight])


def fp16_step(tail_in_fp16=False):
    """fp32 in, Cast to fp16, fp16 Conv, then ReduceL2 in fp32 (or, broken, in fp16)."""
    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float16), "w")
    nodes = [helper.make_node("Cast", ["x"], ["xh"], name="to_fp16", to=TensorProto.FLOAT16),
             helper.make_node("Conv", ["xh", "w"], ["ch"], name="conv", pads=[1, 1, 1, 1])]
    if tail_in_fp16:
        nodes += [helper.make_node("ReduceL2", ["ch"], ["lh"], name="norm", keepdims=0),
                  helper.make_node("Cast", ["lh"], ["loss"], name="to_fp32",
                                   to=TensorProto.FLOAT)]
    else:
        nodes += [helper.make_node("Cast", ["ch"], ["c"], name="to_fp32", to=TensorProto.FLOAT),
                  helper.make_node("ReduceL2", ["c"], ["loss"], name="norm", keepdims=0)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])], [weight])


def test_static_parser_rules_cite_their_source():
    lines = parser_rule_violations(antialiased_resize())
    assert len(lines) == 1 and "down (Resize)" in lines[0] and "Antialiasing" in lines[0]
    assert "docs/operators.md" in lines[0]
    norm = helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean", "inv_std"],
                            name="ln")
    model = _model([norm], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    assert "Only the first output" in parser_rule_violations(model)[0]
    assert parser_rule_violations(conv_relu()) == []
    assert all(r.source.startswith("onnx/onnx-tensorrt docs/operators.md")
               for r in PARSER_RESTRICTIONS)


def test_onnx_types_of_the_tail_are_checked_without_tensorrt():
    good, bad = fp16_step(), fp16_step(tail_in_fp16=True)
    assert fp32_tail(good) == {"to_fp32", "norm"} == fp32_tail(bad)
    assert onnx_tail_violations(good, fp32_tail(good)) == []
    assert "node norm (ReduceL2) outputs float16" in onnx_tail_violations(bad, fp32_tail(bad))[0]


def test_without_tensorrt_the_check_is_skipped_after_static_checks(tmp_path, monkeypatch):
    def missing(prefer="tensorrt"):
        raise SiloError("TensorRT is not installed")

    monkeypatch.setattr(api, "import_tensorrt", missing)
    onnx.save(conv_relu(), tmp_path / "g.onnx")
    verdict = check_onnx_with_tensorrt(tmp_path / "g.onnx")
    assert verdict.ok is None and verdict.stage == "skipped"
    assert "static checks passed" in verdict.message
    onnx.save(antialiased_resize(), tmp_path / "r.onnx")
    assert check_onnx_with_tensorrt(tmp_path / "r.onnx").ok is False


# --------------------------------------------------- NVIDIA's parser and builder (no GPU needed)


@pytest.fixture
def rtx():
    return pytest.importorskip("tensorrt_rtx")


def test_tensorrt_refuses_an_antialiased_resize(rtx, tmp_path):
    onnx.save(antialiased_resize(), tmp_path / "resize.onnx")
    for static in (True, False):  # our table, then TensorRT's own parser
        verdict = check_onnx_with_tensorrt(tmp_path / "resize.onnx", static=static)
        assert verdict.ok is False and verdict.stage == "parse"
        assert "antialias" in verdict.message.lower() and "down (Resize)" in verdict.message
        assert "\n" not in verdict.message
    assert verdict.flavor == "tensorrt_rtx" and verdict.version == rtx.__version__


def test_tensorrt_parses_and_builds_a_conv_relu_without_a_gpu(rtx, tmp_path):
    onnx.save(conv_relu(), tmp_path / "conv.onnx")
    verdict = check_onnx_with_tensorrt(tmp_path / "conv.onnx")
    assert verdict.ok is True and verdict.stage == "ok", verdict.line()
    assert verdict.line().startswith("conv: ok: parsed and built")


def test_fp16_step_keeps_its_tail_in_fp32_or_is_refused(rtx, tmp_path):
    onnx.save(fp16_step(), tmp_path / "good.onnx")
    onnx.save(fp16_step(tail_in_fp16=True), tmp_path / "bad.onnx")
    tail = frozenset({"to_fp32", "norm"})
    assert check_onnx_with_tensorrt(tmp_path / "good.onnx", fp32_nodes=tail).ok is True
    for static in (True, False):  # the ONNX types, then TensorRT's layers
        verdict = check_onnx_with_tensorrt(tmp_path / "bad.onnx", fp32_nodes=tail,
                                           static=static)
        assert verdict.ok is False and verdict.stage == "precision", verdict.line()
        assert "node norm" in verdict.message


def test_bundle_check_reports_every_graph(rtx, tmp_path):
    onnx.save(conv_relu(), tmp_path / "vae_decoder.onnx")
    onnx.save(antialiased_resize(), tmp_path / "vae_encoder.onnx")
    onnx.save(fp16_step(tail_in_fp16=True), tmp_path / "step_fp16.onnx")
    files = {name: f"{name}.onnx" for name in ("vae_encoder", "vae_decoder", "step_fp16")}
    lines = []
    verdicts = check_bundle_with_tensorrt(tmp_path, files, log=lines.append)
    assert [(v.graph, v.stage) for v in verdicts] == [
        ("vae_encoder", "parse"), ("vae_decoder", "ok"), ("step_fp16", "precision")]
    assert len(lines) == 3 and lines[1].startswith("vae_decoder: ok")

