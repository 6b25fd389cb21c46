"""The GPU path's control flow on a CPU, with stand-ins for TensorRT and cuda-python
(``tests/fake_gpu.py``): which precision ``auto`` builds, where plans go, one builder at a
time, one GPU per process, best-effort cleanup, one TensorRT logger, a timing cache per GPU,
why a GPU is not used, and ONNX Runtime's CUDA provider under ``auto``. None of this runs a
kernel; ``pytest -m gpu`` (tests/test_gpu.py) does, on a GPU."""

import json
import shutil
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_gpu import FakeCudart, fake_tensorrt, install

from silo_rt.bundle_format import load_manifest, sha256_file
from silo_rt.demo import demo_bundle
from silo_rt.errors import SiloError
from silo_rt.runtime.tensorrt import api, backend, cuda_device, plan_store
from silo_rt.runtime.tensorrt.build import attach_timing_cache, build_engines, timing_cache_name
from silo_rt.runtime.tensorrt.check import check_onnx_with_tensorrt
from silo_rt.runtime.tensorrt.keys import (
    EngineBuildConfig,
    EngineKey,
    current_key,
    default_precision,
    verify_engine_files,
)


@pytest.fixture
def bundle(tmp_path):
    """A writable copy of the demo's sr4 bundle (fp32 export: no ``step_fp16``)."""
    path = tmp_path / "sr4"
    shutil.copytree(demo_bundle("sr4"), path)
    return path


def _runner(bundle, backend="auto", log=None):
    from silo_rt.runtime import BundleRunner

    return BundleRunner(bundle, backend=backend, log=log or (lambda line: None))


# ------------------------------------------------------------------ 1. auto's precision, plans


def test_auto_takes_tensorrt_in_the_precision_the_bundle_has(bundle, monkeypatch):
    trt, _ = install(monkeypatch)
    runner = _runner(bundle)
    try:
        assert runner.backend == "trt" and runner.graphs.key.precision == "fp32"
        assert runner.label.startswith("trt (tensorrt 10.13.0, compute capability 8.9, fp32")
    finally:
        runner.graphs.close()
    assert len(trt.built) == 3  # encoder, decoder, fp32 step
    assert default_precision({"step": {}, "step_fp16": {}}) == "fp16"
    assert default_precision({"step": {}}) == "fp32"


def test_a_read_only_bundle_gets_its_plans_in_the_user_cache(bundle, monkeypatch, tmp_path):
    trt, _ = install(monkeypatch)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(plan_store, "bundle_writable", lambda path: False)
    manifest_bytes = (bundle / "manifest.json").read_bytes()
    lines = []
    for _ in range(2):  # the second runner loads what the first built
        _runner(bundle, backend="trt", log=lines.append).graphs.close()
    sha = sha256_file(bundle / "manifest.json")[:16]
    folder = tmp_path / "cache" / "silo-rt" / "engines" / sha / "tensorrt-10.13.0-sm89-fp32"
    assert sorted(p.name for p in folder.iterdir()) == [
        "entry.json", "step.plan", "vae_decoder.plan", "vae_encoder.plan"]
    assert json.loads((folder / "entry.json").read_text())["key"]["precision"] == "fp32"
    assert len(trt.built) == 3
    assert (bundle / "manifest.json").read_bytes() == manifest_bytes
    assert not (bundle / "tensorrt").exists()
    assert any("is read-only: plans go to" in line for line in lines)


def test_a_bundle_that_cannot_take_plans_is_detected(tmp_path):
    (tmp_path / "tensorrt").write_text("a file where the plan folder would be")
    assert plan_store.bundle_writable(tmp_path) is False
    assert plan_store.bundle_writable(tmp_path / "missing") is False
    (tmp_path / "ok").mkdir()
    assert plan_store.bundle_writable(tmp_path / "ok") is True
    assert not list((tmp_path / "ok" / "tensorrt").iterdir())  # the probe leaves nothing


# ------------------------------------------------------------ 6. one builder, one GPU per rank


def test_builders_started_together_build_once(bundle, monkeypatch):
    trt, _ = install(monkeypatch)
    build = trt.Builder.build_serialized_network

    def slow_build(self, network, config):
        time.sleep(0.05)
        return build(self, network, config)

    monkeypatch.setattr(trt.Builder, "build_serialized_network", slow_build)
    manifest = load_manifest(bundle, verify=False)
    entries, errors = [], []

    def builder():
        try:
            entries.append(build_engines(bundle, manifest, EngineBuildConfig("fp32"))[1])
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=builder) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(trt.built) == 3  # one set of plans, not three
    assert entries[0] == entries[1] == entries[2]
    assert list(load_manifest(bundle, verify=False).engines) == ["tensorrt-10.13.0-sm89-fp32"]


def test_each_process_binds_to_its_local_rank_gpu(bundle, monkeypatch):
    _, cudart = install(monkeypatch, cudart=FakeCudart(capabilities=((8, 9), (8, 6))))
    monkeypatch.setenv("LOCAL_RANK", "1")
    runner = _runner(bundle, backend="trt")
    runner.graphs.close()
    assert runner.graphs.device == 1 and ("cudaSetDevice", 1) in cudart.calls
    assert runner.graphs.key.compute_capability == "8.6"  # the key reads that GPU
    assert cuda_device.device_index(1, {"LOCAL_RANK": "3"}) == 0  # one visible GPU each
    assert cuda_device.device_index(4, {}) == 0
    with pytest.raises(SiloError, match="LOCAL_RANK"):
        cuda_device.device_index(2, {"LOCAL_RANK": "x"})


# ----------------------------------------------------------------- 7. best-effort cleanup


def test_close_frees_everything_and_raises_once(bundle, monkeypatch):
    _, cudart = install(monkeypatch)
    graphs = _runner(bundle, backend="trt").graphs
    buffers = len(cudart.allocated)
    assert buffers == 7  # x and y of three engines, the shared activation block
    cudart.fail["cudaFree"] = 700  # cudaErrorIllegalAddress: sticky, every call fails
    with pytest.raises(SiloError, match=r"cudaFree failed: 700 \(and 6 more\)"):
        graphs.close()
    assert sum(call[0] == "cudaFree" for call in cudart.calls) == buffers  # all tried
    assert any(call[0] == "cudaStreamDestroy" for call in cudart.calls)
    graphs.close()  # idempotent: nothing left to free


def test_a_load_failure_is_not_replaced_by_the_cleanup_after_it(bundle, monkeypatch):
    trt, cudart = install(monkeypatch)
    cudart.fail["cudaStreamDestroy"] = 1

    def refuse(self, data):
        raise SiloError("TensorRT cannot load step.plan: version mismatch")

    monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", refuse)
    with pytest.raises(SiloError, match="cannot load step.plan"):
        _runner(bundle, backend="trt")


# --------------------------------------------------------- 14. one logger, closed at exit


def test_one_tensorrt_logger_per_process(bundle, monkeypatch):
    trt, _ = install(monkeypatch)
    for _ in range(2):
        _runner(bundle, backend="trt").graphs.close()
    assert trt.Logger.created == 1
    assert trt.runtimes[0] is trt.runtimes[1]


def test_a_runner_never_closed_is_closed_at_exit(bundle, monkeypatch):
    _, cudart = install(monkeypatch)
    hooks = []
    monkeypatch.setattr(backend, "atexit", SimpleNamespace(
        register=hooks.append, unregister=hooks.remove))
    graphs = _runner(bundle, backend="trt").graphs
    assert len(hooks) == 1
    hooks[0]()  # what the interpreter does at exit
    assert graphs.stream is None and not cudart.allocated and hooks == []
    closed = _runner(bundle, backend="trt").graphs
    assert len(hooks) == 1
    closed.close()
    assert hooks == []  # close() unregisters its hook


# ---------------------------------------------------------- 8. a timing cache per GPU


def test_timing_cache_is_keyed_by_gpu_and_never_reused_across_gpus(tmp_path):
    h200 = EngineKey("tensorrt", "10.13.0", "9.0", "fp16")
    l40s = EngineKey("tensorrt", "10.13.0", "8.9", "fp16")
    assert timing_cache_name(h200) != timing_cache_name(l40s)
    assert "sm90" in timing_cache_name(h200)
    from fake_gpu import FakeBuilderConfig

    stored = tmp_path / "timing.cache"
    stored.write_bytes(b"sm89")  # another GPU's timings under this name
    cache = attach_timing_cache(config := FakeBuilderConfig(b"sm90"), stored)
    assert cache.device == b"sm90" and config.timing is cache  # a fresh cache, not sm89's


# ----------------------------------------------------- 4. CUDA majors, and why no GPU is used


def test_cuda_majors_must_match_and_an_old_driver_is_explained(bundle, monkeypatch):
    assert cuda_device.tensorrt_cuda_major(["tensorrt-cu12", "tensorrt_cu12_libs"]) == 12
    assert cuda_device.tensorrt_cuda_major(["tensorrt_rtx_cu13", "numpy"]) == 13
    assert cuda_device.tensorrt_cuda_major(["numpy"]) is None
    with pytest.raises(SiloError, match=r"built for CUDA 12 but cuda-python is 13.x"):
        cuda_device.check_cuda_pairing(12, 13)
    install(monkeypatch, cudart=FakeCudart(fail={"cudaGetDeviceCount": 35}), cuda_major=13)
    with pytest.raises(SiloError, match=r"cuda-python 13.x needs an NVIDIA driver >= 580.65 "
                                        r"but the driver supports CUDA 12.4"):
        current_key("fp32")
    install(monkeypatch, cuda_major=13, trt_cuda_major=12)
    with pytest.raises(SiloError, match="pip install 'cuda-python>=12,<13'"):
        current_key("fp32")


def test_auto_says_why_an_installed_tensorrt_is_not_used(bundle, monkeypatch):
    from silo_rt.runtime import restore

    install(monkeypatch, cudart=FakeCudart(fail={"cudaGetDeviceCount": 35}), cuda_major=13)
    monkeypatch.setattr(restore, "find_spec", lambda name: object())
    lines = []
    runner = _runner(bundle, log=lines.append)
    assert runner.backend == "ort"
    assert [line for line in lines if "TensorRT is installed but not used" in line] == [
        lines[0]] and "driver" in lines[0]


# ---------------------------------------------- 13. the GPU-less check prefers TensorRT-RTX


def _conv_relu(tmp_path) -> Path:
    import onnx
    from test_engines import conv_relu

    path = tmp_path / "conv.onnx"
    onnx.save(conv_relu(), path)
    return path


def test_full_tensorrt_without_a_gpu_gives_a_one_line_verdict(tmp_path, monkeypatch):
    gpu_less = fake_tensorrt(builder_error=TypeError(
        "pybind11::init(): factory function returned nullptr"))
    install(monkeypatch, trt=gpu_less)
    verdict = check_onnx_with_tensorrt(_conv_relu(tmp_path))
    assert verdict.ok is None and verdict.stage == "skipped"
    assert "cannot create a builder here" in verdict.message and "\n" not in verdict.message


def test_the_check_prefers_tensorrt_rtx_when_both_are_installed(tmp_path, monkeypatch):
    rtx = pytest.importorskip("tensorrt_rtx")
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", fake_tensorrt(
        builder_error=TypeError("no GPU")))
    monkeypatch.setattr(api, "_LOGGERS", {})
    verdict = check_onnx_with_tensorrt(_conv_relu(tmp_path))
    assert verdict.ok is True and verdict.flavor == "tensorrt_rtx", verdict.line()
    assert verdict.version == rtx.__version__
    assert api.trt_logger(rtx).min_severity == rtx.Logger.WARNING  # quiet only in the check
    assert api.import_tensorrt()[1] == "tensorrt"  # engines for a GPU: full TensorRT


# --------------------------------------------------- 17. ONNX Runtime's CUDA provider in auto


def test_auto_without_tensorrt_uses_onnx_runtimes_cuda_provider(bundle, monkeypatch):
    from silo_rt.runtime import ort_backend, restore

    monkeypatch.setattr(restore, "_tensorrt_for_auto", lambda log: False)
    monkeypatch.setattr(ort_backend, "available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                 "CPUExecutionProvider"])
    for pin in ("ort", "", "openvino"):  # a CPU pin does not keep a GPU machine on the CPU
        monkeypatch.setenv("SILO_RT_AUTO_CPU", pin)
        runner = _runner(bundle)
        assert runner.backend == "ort" and runner.graphs.device == "cuda"
        assert runner.graphs.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        assert runner.label == "auto: ort (CUDAExecutionProvider)"


@pytest.mark.slow  # ~20 s: three real ahead-of-time builds
def test_nvidias_builder_writes_a_read_only_bundles_plans_to_the_cache(bundle, monkeypatch,
                                                                        tmp_path):
    """The whole build path with TensorRT-RTX's real parser and ahead-of-time builder (no
    GPU: the key is given, as a GPU would give it), plans to the user cache, under the lock."""
    rtx = pytest.importorskip("tensorrt_rtx")
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    monkeypatch.setattr(api, "_LOGGERS", {})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(plan_store, "bundle_writable", lambda path: False)
    key = EngineKey("tensorrt_rtx", rtx.__version__, "8.9", "fp32")
    manifest = load_manifest(bundle, verify=False)
    _, entry = build_engines(bundle, manifest, EngineBuildConfig("fp32", optimization_level=0),
                             key=key)
    store = plan_store.PlanStore.for_bundle(bundle)
    assert store.entry(manifest, key.folder) == entry
    paths = verify_engine_files(store.root, entry)
    assert sorted(paths) == ["step", "vae_decoder", "vae_encoder"]
    assert all(path.stat().st_size > 1000 for path in paths.values())
    assert not (bundle / "tensorrt").exists()
