"""Stand-ins for TensorRT and cuda-python, for the control flow of the GPU path on a CPU.

They follow the signatures of TensorRT 10.8-11.1's pybind and cuda-bindings 13.5 as
``../shared/reference/export-and-gpu-facts.md`` records them (``(error, *values)`` tuples,
``execute_async_v3(stream)``, ``set_device_memory(ptr, size)``...), compute nothing, and
record what was called, so tests can check precision choice, plan storage, build locks,
best-effort cleanup, logger reuse, timing caches and device binding. Error codes are ints
(0 = success) where cuda-python returns enum members; the code under test only uses
``int(err)``.
"""

from __future__ import annotations

import itertools
import sys
import types
from types import SimpleNamespace

import numpy as np


class FakeCudart:
    """cuda-python's runtime module: devices, memory, streams, graphs; failures on demand.

    Args:
        capabilities: compute capability ``(major, minor)`` of each visible GPU.
        fail: ``{function name: error code}`` returned instead of success.
    """

    def __init__(self, capabilities=((8, 9),), fail=None, driver=12040):
        self.capabilities = list(capabilities)
        self.fail = dict(fail or {})
        self.driver = driver
        self.calls: list[tuple] = []
        self.allocated: dict[int, int] = {}
        self.current = 0
        self._ids = itertools.count(0x1000, 0x1000)
        self.cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1,
                                              cudaMemcpyDeviceToHost=2,
                                              cudaMemcpyDeviceToDevice=3)
        self.cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeGlobal=0)

    def _result(self, name, *values, args=()):
        self.calls.append((name, *args))
        err = self.fail.get(name, 0)
        return (err, *values) if values else (err,)

    def cudaGetDeviceCount(self):
        return self._result("cudaGetDeviceCount", len(self.capabilities))

    def cudaSetDevice(self, index):
        self.current = index
        return self._result("cudaSetDevice", args=(index,))

    def cudaGetDeviceProperties(self, index):
        major, minor = self.capabilities[index]
        return self._result("cudaGetDeviceProperties", SimpleNamespace(major=major, minor=minor),
                            args=(index,))

    def cudaDriverGetVersion(self):
        return self._result("cudaDriverGetVersion", self.driver)

    def cudaMalloc(self, nbytes):
        ptr = next(self._ids)
        if self.fail.get("cudaMalloc", 0) == 0:
            self.allocated[ptr] = nbytes
        return self._result("cudaMalloc", ptr, args=(nbytes,))

    def cudaFree(self, ptr):
        result = self._result("cudaFree", args=(ptr,))
        if result[0] == 0:
            self.allocated.pop(ptr, None)
        return result

    def cudaStreamCreate(self):
        return self._result("cudaStreamCreate", next(self._ids))

    def cudaStreamSynchronize(self, stream):
        return self._result("cudaStreamSynchronize", args=(stream,))

    def cudaStreamDestroy(self, stream):
        return self._result("cudaStreamDestroy", args=(stream,))

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        return self._result("cudaMemcpyAsync", args=(kind,))


class FakeLogger:
    WARNING, ERROR = 2, 1
    created = 0

    def __init__(self, severity):
        type(self).created += 1
        self.severity = severity


class FakeTimingCache:
    def __init__(self, data: bytes, device: bytes):
        self.device = data or device  # an empty cache takes the building device

    def serialize(self):
        return self.device


class FakeBuilderConfig:
    def __init__(self, device: bytes):
        self.device, self.flags, self.timing = device, set(), None
        self.builder_optimization_level = 3

    def set_flag(self, flag):
        self.flags.add(flag)

    def clear_flag(self, flag):
        self.flags.discard(flag)

    def set_memory_pool_limit(self, pool, size):
        pass

    def create_timing_cache(self, data: bytes):
        return FakeTimingCache(data, self.device)

    def set_timing_cache(self, cache, ignore_mismatch):
        """TensorRT refuses another device's cache unless told to ignore the mismatch."""
        if cache.device != self.device and not ignore_mismatch:
            return False
        self.timing = cache
        return True


class FakeNetwork:
    num_layers = 0


class FakeEngine:
    """One input ``x`` and one output ``y`` of 4 float32 each."""

    tensors = {"x": ((1, 4), "INPUT"), "y": ((1, 4), "OUTPUT")}
    num_io_tensors = 2
    device_memory_size_v2 = 256

    def __init__(self, trt):
        self.trt = trt

    def get_tensor_name(self, i):
        return list(self.tensors)[i]

    def get_tensor_shape(self, name):
        return self.tensors[name][0]

    def get_tensor_dtype(self, name):
        return "FLOAT"

    def get_tensor_mode(self, name):
        return getattr(self.trt.TensorIOMode, self.tensors[name][1])

    def create_execution_context(self, strategy):
        return SimpleNamespace(set_device_memory=lambda ptr, n: None,
                               set_tensor_address=lambda name, ptr: True,
                               execute_async_v3=lambda stream: True)


def fake_tensorrt(name: str = "tensorrt", version: str = "10.13.0", device: bytes = b"sm89",
                  builder_error: Exception | None = None):
    """A module standing in for ``tensorrt`` (or ``tensorrt_rtx``): parse, build, load.

    ``builder_error``: raised by ``Builder()``, as full TensorRT does without a GPU.
    ``module.built`` lists the ``(config, plan)`` of each build, ``module.runtimes`` the
    loggers runtimes were given.
    """
    trt = types.ModuleType(name)
    trt.__version__ = version
    trt.built, trt.runtimes = [], []
    trt.Logger = type("Logger", (FakeLogger,), {"created": 0})
    trt.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=0)
    trt.BuilderFlag = SimpleNamespace(TF32="TF32", REQUIRE_USER_ALLOCATION="RUA")
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.ExecutionContextAllocationStrategy = SimpleNamespace(USER_MANAGED="USER_MANAGED")
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.nptype = lambda dtype: np.float32

    class Builder:
        def __init__(self, logger):
            if builder_error is not None:
                raise builder_error
            self.logger = logger

        def create_network(self, flags):
            return FakeNetwork()

        def create_builder_config(self):
            return FakeBuilderConfig(device)

        def build_serialized_network(self, network, config):
            plan = b"plan for " + device
            trt.built.append((config, plan))
            return plan

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.logger = logger

        def parse_from_file(self, path):
            return True

    class Runtime:
        def __init__(self, logger):
            trt.runtimes.append(logger)

        def deserialize_cuda_engine(self, data):
            return FakeEngine(trt)

    trt.Builder, trt.OnnxParser, trt.Runtime = Builder, OnnxParser, Runtime
    return trt


def install(monkeypatch, trt=None, cudart=None, cuda_major=None, trt_cuda_major=None):
    """Make ``import tensorrt`` give ``trt`` (hiding a real TensorRT-RTX) and the GPU path
    use ``cudart``; returns ``(trt, cudart)``."""
    from silo_rt.runtime.tensorrt import api, cuda_device

    trt = trt or fake_tensorrt()
    cudart = cudart or FakeCudart()
    monkeypatch.setitem(sys.modules, trt.__name__, trt)
    other = "tensorrt_rtx" if trt.__name__ == "tensorrt" else "tensorrt"
    monkeypatch.setitem(sys.modules, other, None)  # `import` raises ImportError
    monkeypatch.setattr(cuda_device, "cudart", lambda: cudart)
    monkeypatch.setattr(cuda_device, "bindings_major", lambda: cuda_major)
    monkeypatch.setattr(cuda_device, "tensorrt_cuda_major", lambda: trt_cuda_major)
    monkeypatch.setattr(api, "_LOGGERS", {})
    return trt, cudart
