"""The TensorRT backend: one object per plan, one stream, CUDA graphs captured once.

Lifetimes follow TensorRT's ``demo/Diffusion``: an :class:`Engine` owns its deserialized
engine, execution context, IO device buffers and the CUDA graphs captured from it;
:class:`TrtGraphs` owns the stream, the activation block the engines share (they run one
after another) and the engines. ``close()`` (or leaving a ``with`` block) frees all of it.

The step loop: z ping-pongs between two buffers, so graph A reads buffer 1 and writes
buffer 2, graph B the reverse. Both graphs are captured on the first ``run_steps`` and
replayed by every later one. The per-step tables (timesteps, coefficients, noise, losses)
live in device buffers sized for the longest schedule seen (reallocated only when a longer
one comes; the graphs never read them directly): before each replay three small
device-to-device copies load that step's entries into the step engine's input buffers. The
host synchronises once, at the end, then checks every step's loss for NaN/Inf.

Every cuda-python status and every ``execute_async_v3`` result is checked. ``close()`` frees
best-effort: after a failing CUDA call it still frees everything else, then raises the first
error once; a failure while loading is raised as itself, not as a failure of the cleanup
after it. A runner never closed is closed at interpreter exit (before CUDA unloads).
Each process binds to its own GPU (``LOCAL_RANK``, :mod:`.cuda_device`). Needs TensorRT
(``tensorrt`` or ``tensorrt_rtx``) and cuda-python; no torch.
"""

from __future__ import annotations

import atexit
import weakref
from contextlib import suppress
from pathlib import Path

import numpy as np

from ..bundle_format import Manifest
from ..errors import SiloError
from . import cuda_device
from .engines import (
    EngineBuildConfig,
    _first,
    _first_line,
    build_engines,
    check_plan_entry,
    current_key,
    engine_device_memory,
    engine_sources,
    explain_invalid_plan,
    import_tensorrt,
    set_context_memory,
    trt_logger,
    verify_engine_files,
)
from .finite import check_losses
from .plan_store import PlanStore


def _cudart():
    return cuda_device.cudart()


class _Cleanup:
    """Runs cleanup calls, goes on after one fails, and raises the first failure once."""

    def __init__(self):
        self.errors: list[BaseException] = []

    def call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.errors.append(exc)

    def raise_first(self, what: str) -> None:
        if self.errors:
            lines = [_first_line(exc) for exc in self.errors]
            raise SiloError(f"{what}: {_first(lines)}") from self.errors[0]


def _ok(result, what: str = "CUDA call"):
    """Unpack a cuda-python ``(error, *values)`` tuple, raising on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise SiloError(f"{what} failed: {err}")
    return values[0] if len(values) == 1 else values


class DeviceBuffer:
    """``nbytes`` of device memory; :meth:`free` releases it (checked)."""

    def __init__(self, nbytes: int):
        self._cudart = _cudart()
        self.nbytes = max(int(nbytes), 4)
        self.ptr = _ok(self._cudart.cudaMalloc(self.nbytes), "cudaMalloc")

    def upload(self, array: np.ndarray, stream) -> None:
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise SiloError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte buffer")
        _ok(self._cudart.cudaMemcpyAsync(self.ptr, array.ctypes.data, array.nbytes,
                                         self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                         stream), "cudaMemcpyAsync (upload)")
        # the host array must outlive the copy: synchronise before it can be freed
        _ok(self._cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def download(self, shape, dtype, stream, ptr: int | None = None) -> np.ndarray:
        out = np.empty(shape, dtype)
        _ok(self._cudart.cudaMemcpyAsync(out.ctypes.data, self.ptr if ptr is None else ptr,
                                         out.nbytes,
                                         self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                         stream), "cudaMemcpyAsync (download)")
        _ok(self._cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return out

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, None
            _ok(self._cudart.cudaFree(ptr), "cudaFree")

    def __del__(self):  # a fallback for buffers never closed; errors cannot be raised here
        if getattr(self, "ptr", None):
            self._cudart.cudaFree(self.ptr)
            self.ptr = None


class Engine:
    """One plan: its engine, execution context, IO buffers and captured CUDA graphs.

    Args:
        trt: the TensorRT module; runtime: a ``trt.Runtime``; path: the ``.plan`` file.
    """

    def __init__(self, trt, runtime, path: Path):
        self._trt, self._cudart = trt, _cudart()
        self.name = path.stem
        data = path.read_bytes()
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise SiloError(f"TensorRT cannot load {path}: "
                            f"{explain_invalid_plan(trt, runtime, data)}")
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
        return engine_device_memory(self.engine)

    @property
    def outputs(self) -> list[str]:
        return [n for n, (_, _, is_input) in self.tensors.items() if not is_input]

    def activate(self, activations: DeviceBuffer) -> None:
        """Create the context on the shared activation block and one buffer per IO tensor."""
        strategy = self._trt.ExecutionContextAllocationStrategy.USER_MANAGED
        self.context = self.engine.create_execution_context(strategy)
        if self.context is None:
            raise SiloError(f"TensorRT could not create an execution context for {self.name}")
        set_context_memory(self.context, activations.ptr, activations.nbytes)
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
        _ok(cudart.cudaStreamBeginCapture(
            stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal),
            "cudaStreamBeginCapture")
        launched = self.context.execute_async_v3(stream)
        graph = _ok(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
        if not launched:
            _ok(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
            raise SiloError(f"TensorRT failed to run {self.name} during CUDA-graph capture")
        try:
            executable = _ok(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        except SiloError:
            _ok(cudart.cudaGraphDestroy(graph), "cudaGraphDestroy")
            raise
        self._graphs.append((graph, executable))
        return executable

    def close(self, cleanup: _Cleanup | None = None) -> None:
        """Destroy the graphs, free the buffers, release context and engine (everything,
        also after a failing call; the first failure is raised, or kept in ``cleanup``)."""
        own = cleanup is None
        cleanup = cleanup or _Cleanup()
        cudart = self._cudart
        while self._graphs:
            graph, executable = self._graphs.pop()
            cleanup.call(lambda e=executable: _ok(cudart.cudaGraphExecDestroy(e),
                                                  "cudaGraphExecDestroy"))
            cleanup.call(lambda g=graph: _ok(cudart.cudaGraphDestroy(g), "cudaGraphDestroy"))
        for buffer in self.buffers.values():
            cleanup.call(buffer.free)
        self.buffers.clear()
        self.context = None  # the context goes before its engine
        self.engine = None
        if own:
            cleanup.raise_first(f"freeing TensorRT engine {self.name} failed")


class TrtGraphs:
    """A bundle's engines, loaded (built first if this machine has none) and ready to run.

    Args:
        bundle, manifest: the verified bundle.
        precision: ``fp32`` or ``fp16`` (fp16 needs the bundle's ``step_fp16`` graph).
        build_config: used when engines must be built.
        log: progress lines (engine builds).
    """

    def __init__(self, bundle: Path, manifest: Manifest, precision: str = "fp16",
                 build_config: EngineBuildConfig | None = None, log=lambda line: None):
        trt, self.flavor = import_tensorrt()
        self._trt, self._cudart = trt, _cudart()
        engine_sources(manifest.graphs, precision)  # refuse fp16 without step_fp16 before any build
        self.device = cuda_device.select_device(self._cudart)  # LOCAL_RANK's GPU
        key = current_key(precision, self.device)
        store = PlanStore.for_bundle(bundle)
        entry = store.entry(manifest, key.folder)
        if entry is None:
            log(f"no TensorRT engines for {key.describe()} in this bundle: building them")
            manifest, entry = build_engines(
                bundle, manifest, build_config or EngineBuildConfig(precision=precision), log,
                store, key)
        check_plan_entry(entry, key)
        paths = verify_engine_files(store.root, entry)
        self.key, self.manifest = key, manifest
        self.engines: dict[str, Engine] = {}
        self.stream = self.activations = None
        self._tables: dict[str, DeviceBuffer] = {}
        self._capacity = 0  # steps the tables hold
        self._z_other: DeviceBuffer | None = None
        self._step_graphs: list | None = None
        try:
            self.stream = _ok(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
            runtime = trt.Runtime(trt_logger(trt))
            for graph, path in paths.items():
                self.engines[graph] = Engine(trt, runtime, path)
            self.activations = DeviceBuffer(max(e.device_memory for e in self.engines.values()))
            for engine in self.engines.values():
                engine.activate(self.activations)
        except BaseException:
            with suppress(Exception):  # the load failure is the error to report
                self.close()
            raise
        self._at_exit = _close_at_exit(self)
        atexit.register(self._at_exit)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Free graphs, buffers, contexts, engines and the stream (idempotent).

        Best-effort: a failing call (after a sticky CUDA error, every later one fails too)
        does not stop the rest from being freed; the first failure is raised at the end.
        """
        at_exit = getattr(self, "_at_exit", None)
        if at_exit is not None:
            atexit.unregister(at_exit)
            self._at_exit = None
        cleanup = _Cleanup()
        cudart = self._cudart
        if self.stream is not None:
            cleanup.call(lambda: _ok(cudart.cudaStreamSynchronize(self.stream),
                                     "cudaStreamSynchronize"))
        for engine in self.engines.values():
            engine.close(cleanup)
        self.engines.clear()
        self._step_graphs = None
        for buffer in [*self._tables.values(), self._z_other, self.activations]:
            if buffer is not None:
                cleanup.call(buffer.free)
        self._tables.clear()
        self._capacity, self._z_other, self.activations = 0, None, None
        if self.stream is not None:
            stream, self.stream = self.stream, None
            cleanup.call(lambda: _ok(cudart.cudaStreamDestroy(stream), "cudaStreamDestroy"))
        cleanup.raise_first("freeing the TensorRT runner failed")

    def run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """Run one engine on host arrays; returns its outputs as host arrays."""
        engine = self.engines[graph]
        for name, array in inputs.items():
            shape, dtype, _ = engine.tensors[name]
            engine.buffers[name].upload(np.asarray(array, dtype).reshape(shape), self.stream)
        engine.execute(self.stream)
        return [engine.buffers[n].download(*engine.tensors[n][:2], self.stream)
                for n in engine.outputs]

    def _d2d(self, dst: int, src: int, nbytes: int) -> None:
        _ok(self._cudart.cudaMemcpyAsync(dst, src, nbytes,
                                         self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                         self.stream), "cudaMemcpyAsync (device to device)")

    def _ensure_tables(self, steps: int, latent_bytes: int) -> None:
        """Per-step device tables for ``steps`` steps (grown, never shrunk)."""
        if steps <= self._capacity:
            return
        for buffer in self._tables.values():
            buffer.free()
        self._tables = {"timesteps": DeviceBuffer(steps * 4),
                        "coefficients": DeviceBuffer(steps * 5 * 4),
                        "noise": DeviceBuffer(steps * latent_bytes),
                        "losses": DeviceBuffer(steps * 4)}
        self._capacity = steps

    def _capture_step_graphs(self) -> list:
        """The two ping-pong step graphs, captured on first use and kept for the runner."""
        if self._step_graphs is None:
            step = self.engines["step"]
            z_t = step.buffers["z_t"]
            self._z_other = DeviceBuffer(z_t.nbytes)
            graphs = []
            for src, dst in ((z_t.ptr, self._z_other.ptr), (self._z_other.ptr, z_t.ptr)):
                step.bind("z_t", src)
                step.bind("z_prev", dst)
                graphs.append(step.capture(self.stream))
            step.bind("z_t", z_t.ptr)
            step.bind("z_prev", step.buffers["z_prev"].ptr)
            self._step_graphs = graphs
        return self._step_graphs

    def run_steps(self, z, w, context, timesteps, coefficients, noise, eta, sigma_y,
                  cfg_scale=None, callback=None, want_latents=False) -> np.ndarray:
        """T fused steps replayed from CUDA graphs; same contract as the ORT backend's.

        ``callback`` is called after the loop (the host does not wait per step), with each
        step's loss and no latent.
        """
        step, stream = self.engines["step"], self.stream
        buf = step.buffers
        steps = len(timesteps)
        latent_bytes = buf["z_t"].nbytes
        graphs = self._capture_step_graphs()  # before any upload: warm-up writes z buffers
        self._ensure_tables(steps, latent_bytes)
        tables = self._tables
        tables["timesteps"].upload(np.asarray(timesteps, np.float32), stream)
        tables["coefficients"].upload(np.asarray(coefficients, np.float32), stream)
        tables["noise"].upload(np.asarray(noise, np.float32), stream)
        constants = {"w": w, "eta": np.array([eta], np.float32), "context": context,
                     "sigma_y": np.array([sigma_y], np.float32)}
        if cfg_scale is not None:
            constants["cfg_scale"] = np.array([cfg_scale], np.float32)
        for name, array in constants.items():
            buf[name].upload(np.asarray(array, np.float32), stream)
        buf["z_t"].upload(np.asarray(z, np.float32), stream)
        for i in range(steps):
            self._d2d(buf["timestep"].ptr, tables["timesteps"].ptr + 4 * i, 4)
            self._d2d(buf["coefficients"].ptr, tables["coefficients"].ptr + 20 * i, 20)
            self._d2d(buf["noise"].ptr, tables["noise"].ptr + latent_bytes * i, latent_bytes)
            _ok(self._cudart.cudaGraphLaunch(graphs[i % 2], stream), "cudaGraphLaunch")
            self._d2d(tables["losses"].ptr + 4 * i, buf["loss"].ptr, 4)
        final = (self._z_other if steps % 2 else buf["z_t"]).ptr
        result = buf["z_t"].download(np.shape(z), np.float32, stream, ptr=final)
        loss_values = tables["losses"].download((steps,), np.float32, stream)
        check_losses(loss_values, timesteps)
        if not np.isfinite(result).all():
            raise SiloError("non-finite value in the final latent")
        if callback is not None:
            for i in range(steps):
                callback(i, int(timesteps[i]), None, float(loss_values[i]))
        return result


def _close_at_exit(graphs: TrtGraphs):
    """An ``atexit`` hook closing ``graphs`` if it is still open when the interpreter ends
    (CUDA objects freed during interpreter teardown, after CUDA unloads, fail noisily); it
    holds only a weak reference, so it keeps nothing alive."""
    ref = weakref.ref(graphs)

    def close():
        graphs = ref()
        if graphs is not None:
            try:
                graphs.close()
            except Exception as exc:  # nothing to report to at exit but stderr
                import sys

                print(f"silo-rt: {exc}", file=sys.stderr)

    return close
