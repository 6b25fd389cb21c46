"""The TensorRT backend: persistent device buffers, one stream, CUDA-graph replay per step.

Memory: every IO tensor gets one persistent device buffer; the engines share one activation
block (they run one after another). The step loop uploads all per-step inputs once, captures
two CUDA graphs of the step engine (z ping-pongs between two buffers, so graph A reads buffer
1 and writes buffer 2, graph B the reverse) and replays them T times; before each replay three
small device-to-device copies load that step's timestep, coefficients and noise. The host
synchronises once, at the end, then checks every step's loss for NaN/Inf.

Needs TensorRT (``tensorrt`` or ``tensorrt_rtx``) and cuda-python; no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SiloError
from .engines import (
    EngineBuildConfig,
    build_engines,
    check_plan_entry,
    current_key,
    import_tensorrt,
    select_engines,
    verify_engine_files,
)
from .finite import check_losses


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


def _ok(result):
    """Unpack a cuda-python ``(error, *values)`` tuple, raising on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise SiloError(f"CUDA error: {err}")
    return values[0] if len(values) == 1 else values


class DeviceBuffer:
    """``nbytes`` of device memory, freed with the object."""

    def __init__(self, nbytes: int):
        self._cudart = _cudart()
        self.nbytes = max(int(nbytes), 4)
        self.ptr = _ok(self._cudart.cudaMalloc(self.nbytes))

    def upload(self, array: np.ndarray, stream) -> None:
        array = np.ascontiguousarray(array)
        _ok(self._cudart.cudaMemcpyAsync(self.ptr, array.ctypes.data, array.nbytes,
                                         self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                         stream))

    def download(self, shape, dtype, stream) -> np.ndarray:
        out = np.empty(shape, dtype)
        _ok(self._cudart.cudaMemcpyAsync(out.ctypes.data, self.ptr, out.nbytes,
                                         self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                         stream))
        _ok(self._cudart.cudaStreamSynchronize(stream))
        return out

    def __del__(self):
        if getattr(self, "ptr", None):
            self._cudart.cudaFree(self.ptr)
            self.ptr = None


class TrtGraphs:
    """A bundle's engines, loaded (built first if this machine has none) and ready to run.

    Args:
        bundle, manifest: the verified bundle.
        precision: ``fp32`` or ``fp16``.
        build_config: used when engines must be built; default keeps the VAE FP32.
        log: progress lines (engine builds).
    """

    def __init__(self, bundle: Path, manifest: dict, precision: str = "fp16",
                 build_config: EngineBuildConfig | None = None, log=lambda line: None):
        trt, self.flavor = import_tensorrt()
        self._trt = trt
        self._cudart = _cudart()
        key = current_key(precision)
        entry = select_engines(manifest, key)
        if entry is None:
            log(f"no TensorRT engines for {key.describe()} in this bundle: building them")
            entry = build_engines(bundle, manifest,
                                  build_config or EngineBuildConfig(precision=precision), log)
        check_plan_entry(entry, key)
        paths = verify_engine_files(bundle, entry)
        self.key = key
        self.manifest = manifest
        self.stream = _ok(self._cudart.cudaStreamCreate())
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engines = {}
        for graph, path in paths.items():
            engine = runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise SiloError(f"TensorRT could not load {path} (built by another version?)")
            self.engines[graph] = engine
        sizes = [getattr(e, "device_memory_size_v2", None) or e.device_memory_size
                 for e in self.engines.values()]
        self.activations = DeviceBuffer(max(sizes))  # shared: engines run one at a time
        self.contexts, self.buffers, self.shapes = {}, {}, {}
        strategy = trt.ExecutionContextAllocationStrategy.USER_MANAGED
        for graph, engine in self.engines.items():
            context = engine.create_execution_context(strategy)
            if hasattr(context, "set_device_memory"):
                context.set_device_memory(self.activations.ptr, self.activations.nbytes)
            else:
                context.device_memory = self.activations.ptr
            self.contexts[graph] = context
            self.buffers[graph], self.shapes[graph] = {}, {}
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                shape = tuple(engine.get_tensor_shape(name))
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                buffer = DeviceBuffer(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
                context.set_tensor_address(name, buffer.ptr)
                self.buffers[graph][name] = buffer
                self.shapes[graph][name] = (shape, dtype)

    def _is_input(self, graph, name) -> bool:
        return (self.engines[graph].get_tensor_mode(name) == self._trt.TensorIOMode.INPUT)

    def run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """Run one engine on host arrays; returns its outputs as host arrays."""
        for name, array in inputs.items():
            shape, dtype = self.shapes[graph][name]
            self.buffers[graph][name].upload(np.asarray(array, dtype).reshape(shape),
                                             self.stream)
        if not self.contexts[graph].execute_async_v3(self.stream):
            raise SiloError(f"TensorRT failed to run {graph}")
        return [self.buffers[graph][n].download(*self.shapes[graph][n], self.stream)
                for n in self.shapes[graph] if not self._is_input(graph, n)]

    def _d2d(self, dst: int, src: int, nbytes: int) -> None:
        _ok(self._cudart.cudaMemcpyAsync(dst, src, nbytes,
                                         self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                                         self.stream))

    def _capture(self, context) -> object:
        cudart = self._cudart
        _ok(cudart.cudaStreamBeginCapture(
            self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal))
        context.execute_async_v3(self.stream)
        graph = _ok(cudart.cudaStreamEndCapture(self.stream))
        return _ok(cudart.cudaGraphInstantiate(graph, 0))

    def run_steps(self, z, w, context, timesteps, coefficients, noise, eta, sigma_y,
                  cfg_scale=None, callback=None, want_latents=False) -> np.ndarray:
        """T fused steps replayed from CUDA graphs; same contract as the ORT backend's.

        ``callback`` is called after the loop (the host does not wait per step), with each
        step's loss and no latent.
        """
        graph = "step"
        ctx = self.contexts[graph]
        buf, stream = self.buffers[graph], self.stream
        steps = len(timesteps)
        ts = DeviceBuffer(steps * 4)
        ts.upload(np.asarray(timesteps, np.float32), stream)
        cs = DeviceBuffer(steps * 5 * 4)
        cs.upload(np.asarray(coefficients, np.float32), stream)
        ns = DeviceBuffer(noise.nbytes)
        ns.upload(np.asarray(noise, np.float32), stream)
        losses = DeviceBuffer(steps * 4)
        constants = {"w": w, "eta": np.array([eta], np.float32), "context": context,
                     "sigma_y": np.array([sigma_y], np.float32)}
        if cfg_scale is not None:
            constants["cfg_scale"] = np.array([cfg_scale], np.float32)
        for name, array in constants.items():
            buf[name].upload(np.asarray(array, np.float32), stream)
        other = DeviceBuffer(buf["z_t"].nbytes)  # the second half of the z ping-pong
        pair = [(buf["z_t"].ptr, other.ptr), (other.ptr, buf["z_t"].ptr)]
        execs = []
        for src, dst in pair:
            ctx.set_tensor_address("z_t", src)
            ctx.set_tensor_address("z_prev", dst)
            ctx.execute_async_v3(stream)  # warm-up with these addresses before capture
            execs.append(self._capture(ctx))
        buf["z_t"].upload(np.asarray(z, np.float32), stream)
        latent_bytes = buf["z_t"].nbytes
        for i in range(steps):
            self._d2d(buf["timestep"].ptr, ts.ptr + 4 * i, 4)
            self._d2d(buf["coefficients"].ptr, cs.ptr + 20 * i, 20)
            self._d2d(buf["noise"].ptr, ns.ptr + latent_bytes * i, latent_bytes)
            _ok(self._cudart.cudaGraphLaunch(execs[i % 2], stream))
            self._d2d(losses.ptr + 4 * i, buf["loss"].ptr, 4)
        final = pair[(steps - 1) % 2][1]
        result = np.empty(z.shape, np.float32)
        _ok(self._cudart.cudaMemcpyAsync(result.ctypes.data, final, result.nbytes,
                                         self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                         stream))
        loss_values = losses.download((steps,), np.float32, stream)  # synchronises
        for exec_graph in execs:
            self._cudart.cudaGraphExecDestroy(exec_graph)
        ctx.set_tensor_address("z_t", buf["z_t"].ptr)
        ctx.set_tensor_address("z_prev", buf["z_prev"].ptr)
        check_losses(loss_values, timesteps)
        if not np.isfinite(result).all():
            raise SiloError("non-finite value in the final latent")
        if callback is not None:
            for i in range(steps):
                callback(i, int(timesteps[i]), None, float(loss_values[i]))
        return result
