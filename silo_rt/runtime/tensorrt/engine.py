"""One TensorRT plan loaded to run: its engine, execution context, IO buffers and CUDA graphs.

Lifetimes follow TensorRT's ``demo/Diffusion``: an :class:`Engine` owns its deserialized
engine, its execution context (on an activation block it is given, shared by engines that
run one after another), one device buffer per IO tensor and the CUDA graphs captured from
it; :meth:`Engine.close` frees all of it, the context before its engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import SiloError
from . import api, cuda_device
from .device_memory import Cleanup, DeviceBuffer, cuda_ok


class Engine:
    """One plan: its engine, execution context, IO buffers and captured CUDA graphs.

    Args:
        trt: the TensorRT module; runtime: a ``trt.Runtime``; path: the ``.plan`` file.
    """

    def __init__(self, trt, runtime, path: Path):
        self._trt, self._cudart = trt, cuda_device.cudart()
        self.name = path.stem
        data = path.read_bytes()
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise SiloError(f"TensorRT cannot load {path}: "
                            f"{api.explain_invalid_plan(trt, runtime, data)}")
        self.context = None
        self.buffers: dict[str, DeviceBuffer] = {}
        self.tensors: dict[str, tuple[tuple, np.dtype, bool]] = {}  # shape, dtype, is input
        self._graphs: list = []  # (cudaGraph_t, cudaGraphExec_t)
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            self.tensors[name] = (shape, dtype, is_input)

    @property
    def device_memory(self) -> int:
        return api.engine_device_memory(self.engine)

    @property
    def outputs(self) -> list[str]:
        return [n for n, (_, _, is_input) in self.tensors.items() if not is_input]

    def activate(self, activations: DeviceBuffer) -> None:
        """Create the context on the shared activation block and one buffer per IO tensor."""
        strategy = self._trt.ExecutionContextAllocationStrategy.USER_MANAGED
        self.context = self.engine.create_execution_context(strategy)
        if self.context is None:
            raise SiloError(f"TensorRT could not create an execution context for {self.name}")
        api.set_context_memory(self.context, activations.ptr, activations.nbytes)
        for name, (shape, dtype, _) in self.tensors.items():
            self.buffers[name] = DeviceBuffer(int(np.prod(shape, dtype=np.int64))
                                              * dtype.itemsize)
            self.bind(name, self.buffers[name].ptr)

    def bind(self, name: str, ptr: int) -> None:
        if not self.context.set_tensor_address(name, ptr):
            raise SiloError(f"TensorRT refused the address of {self.name}.{name}")

    def execute(self, stream) -> None:
        if not self.context.execute_async_v3(stream):
            raise SiloError(f"TensorRT failed to run {self.name}")

    def capture(self, stream):
        """Warm up with the current addresses, then capture one execution; returns the
        instantiated graph (owned by this engine)."""
        cudart = self._cudart
        self.execute(stream)  # first run: lazy initialisation must not land in the graph
        capturable = getattr(self.context, "is_stream_capturable", None)
        if capturable is not None and not capturable(stream):
            raise SiloError(f"TensorRT says {self.name} cannot be captured in a CUDA graph "
                            "on this stream")
        cuda_ok(cudart.cudaStreamBeginCapture(
            stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
            "cudaStreamBeginCapture")
        launched = self.context.execute_async_v3(stream)
        graph = cuda_ok(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        if not launched:
            cuda_ok(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
            raise SiloError(f"TensorRT failed to run {self.name} during CUDA-graph capture")
        try:
            executable = cuda_ok(cudart.cudaGraphInstantiate(graph, 0),
                                 "cudaGraphInstantiate")
        except SiloError:
            cuda_ok(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
            raise
        self._graphs.append((graph, executable))
        return executable

    def close(self, cleanup: Cleanup | None = None) -> None:
        """Destroy the graphs, free the buffers, release context and engine (everything,
        also after a failing call; the first failure is raised, or kept in ``cleanup``)."""
        own = cleanup is None
        cleanup = cleanup or Cleanup()
        cudart = self._cudart
        while self._graphs:
            graph, executable = self._graphs.pop()
            cleanup.call(lambda e=executable: cuda_ok(cudart.cudaGraphExecDestroy(e),
                                                      "cudaGraphExecDestroy"))
            cleanup.call(lambda g=graph: cuda_ok(cudart.cudaGraphDestroy(g),
                                                 "cudaGraphDestroy"))
        for buffer in self.buffers.values():
            cleanup.call(buffer.free)
        self.buffers.clear()
        self.context = None  # the context goes before its engine
        self.engine = None
        if own:
            cleanup.raise_first(f"freeing TensorRT engine {self.name} failed")
