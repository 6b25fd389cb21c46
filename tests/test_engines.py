"""The GPU path's CPU-checkable parts: engine keys, build configuration, the FP32 tail of the
step graph, refusal of plans built elsewhere, and backend selection without a GPU."""

import json
import subprocess
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from silo_rt.errors import SiloError
from silo_rt.runtime.engines import (
    EngineBuildConfig,
    EngineKey,
    check_plan_entry,
    fp32_tail,
    import_tensorrt,
    select_engines,
    verify_engine_files,
    write_manifest,
)
from silo_rt.runtime.finite import check_losses
from silo_rt.runtime.restore import tensorrt_available

H200_FP16 = EngineKey("tensorrt", "10.13.0", "9.0", "fp16")


def test_engine_key_folder_and_description():
    assert H200_FP16.folder == "tensorrt-10.13.0-sm90-fp16"
    assert "compute capability 9.0" in H200_FP16.describe()


def test_build_config_validation_and_vae_precision():
    config = EngineBuildConfig(precision="fp16", fp32_vae=True)
    assert config.graph_precision("vae_decoder") == "fp32"
    assert config.graph_precision("step") == "fp16"
    assert EngineBuildConfig("fp16", fp32_vae=False).graph_precision("vae_encoder") == "fp16"
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


def test_selection_by_key_and_plan_hashes(tmp_path):
    plan = tmp_path / "engines" / H200_FP16.folder / "step.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"serialized engine")
    from silo_rt.runtime.manifest import sha256_file

    entry = _entry(H200_FP16, tmp_path, {"step": {"file": str(plan.relative_to(tmp_path)),
                                                  "sha256": sha256_file(plan)}})
    manifest = {"engines": {H200_FP16.folder: entry}}
    assert select_engines(manifest, H200_FP16) is entry
    assert select_engines(manifest, EngineKey("tensorrt", "10.13.0", "9.0", "fp32")) is None
    assert verify_engine_files(tmp_path, entry) == {"step": plan}
    plan.write_bytes(b"tampered")
    with pytest.raises(SiloError, match="sha256"):
        verify_engine_files(tmp_path, entry)
    write_manifest(tmp_path, manifest)
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest


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


def test_without_tensorrt_the_runtime_says_so():
    try:
        import_tensorrt()
    except SiloError as exc:
        assert "TensorRT is not installed" in str(exc)
        assert tensorrt_available() is False
    else:
        pytest.skip("TensorRT is installed here")


def test_gpu_check_script_parses():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr
