"""The TensorRT backend: a bundle's engines on one stream, the step loop replayed from CUDA
graphs captured once.

:class:`TrtGraphs` owns the stream, the activation block its engines share (they run one
after another) and the engines (:mod:`.engine`); ``close()`` (or leaving a ``with`` block)
frees all of it. Missing plans for this machine are built first (:mod:`.build`).

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

from ...bundle_format import Manifest
from ...errors import SiloError
from .. import step_io
from ..finite import check_losses
from . import api, cuda_device
from .build import build_engines
from .device_memory import Cleanup, DeviceBuffer, cuda_ok
from .engine import Engine
from .keys import (
    EngineBuildConfig,
    check_plan_entry,
    current_key,
    engine_sources,
    verify_engine_files,
)
from .plan_store import PlanStore


class TrtGraphs:
    """A bundle's engines, loaded (built first if this machine has none) and ready to run.

    Args:
        bundle, manifest: the verified bundle.
        precision: ``fp32`` or ``fp16`` (fp16 needs the bundle's ``step_fp16`` graph).
        build_config: used when engines must be built.
        log: progress lines (engine builds).
    """

    @classmethod
    def open(cls, bundle: Path, manifest: Manifest, *, precision: str | None = None,
             threads: int | None = None, providers: list[str] | None = None,
             memory: str = "fast", log=lambda line: None) -> TrtGraphs:
        """The registry's way in (:attr:`silo_rt.backends.Backend.opens`; ``memory`` is
        always ``fast``, the row's only mode): fp16 where the
        bundle has its ``step_fp16`` graph, unless ``precision`` says."""
        from .keys import default_precision

        return cls(bundle, manifest, precision or default_precision(manifest.graphs), log=log)

    @property
    def label(self) -> str:
        return f"trt ({self.key.describe()})"

    def __init__(self, bundle: Path, manifest: Manifest, precision: str = "fp16",
                 build_config: EngineBuildConfig | None = None, log=lambda line: None):
        trt, self.flavor = api.import_tensorrt()
        self._trt, self._cudart = trt, cuda_device.cudart()
        engine_sources(manifest.graphs, precision)  # refuse a missing step_fp16 before building
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
            self.stream = cuda_ok(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
            runtime = trt.Runtime(api.trt_logger(trt))
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
        cleanup = Cleanup()
        cudart = self._cudart
        if self.stream is not None:
            cleanup.call(lambda: cuda_ok(cudart.cudaStreamSynchronize(self.stream),
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
            cleanup.call(lambda: cuda_ok(cudart.cudaStreamDestroy(stream),
                                         "cudaStreamDestroy"))
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
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        cuda_ok(self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, self.stream),
                "cudaMemcpyAsync (device to device)")

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
            step = self.engines[step_io.STEP]
            z_t = step.buffers[step_io.Z_T]
            self._z_other = DeviceBuffer(z_t.nbytes)
            graphs = []
            for src, dst in ((z_t.ptr, self._z_other.ptr), (self._z_other.ptr, z_t.ptr)):
                step.bind(step_io.Z_T, src)
                step.bind(step_io.Z_PREV, dst)
                graphs.append(step.capture(self.stream))
            step.bind(step_io.Z_T, z_t.ptr)
            step.bind(step_io.Z_PREV, step.buffers[step_io.Z_PREV].ptr)
            self._step_graphs = graphs
        return self._step_graphs

    def run_steps(self, z, w, context, timesteps, coefficients, noise, eta, sigma_y,
                  cfg_scale=None, callback=None, want_latents=False) -> np.ndarray:
        """T fused steps replayed from CUDA graphs; same contract as the ORT backend's.

        ``callback`` is called after the loop (the host does not wait per step), with each
        step's loss and no latent.
        """
        step, stream = self.engines[step_io.STEP], self.stream
        buf = step.buffers
        steps = len(timesteps)
        z_t, loss = buf[step_io.Z_T], buf[step_io.LOSS]
        latent_bytes = z_t.nbytes
        graphs = self._capture_step_graphs()  # before any upload: warm-up writes z buffers
        self._ensure_tables(steps, latent_bytes)
        tables = self._tables
        tables["timesteps"].upload(np.asarray(timesteps, np.float32), stream)
        tables["coefficients"].upload(np.asarray(coefficients, np.float32), stream)
        tables["noise"].upload(np.asarray(noise, np.float32), stream)
        for name, array in step_io.step_constants(w, context, eta, sigma_y, cfg_scale).items():
            buf[name].upload(array, stream)
        z_t.upload(np.asarray(z, np.float32), stream)
        per_step = [(buf[step_io.TIMESTEP].ptr, tables["timesteps"].ptr, 4),
                    (buf[step_io.COEFFICIENTS].ptr, tables["coefficients"].ptr, 20),
                    (buf[step_io.NOISE].ptr, tables["noise"].ptr, latent_bytes)]
        for i in range(steps):
            for dst, table, nbytes in per_step:
                self._d2d(dst, table + nbytes * i, nbytes)
            cuda_ok(self._cudart.cudaGraphLaunch(graphs[i % 2], stream), "cudaGraphLaunch")
            self._d2d(tables["losses"].ptr + 4 * i, loss.ptr, 4)
        final = (self._z_other if steps % 2 else z_t).ptr
        result = z_t.download(np.shape(z), np.float32, stream, ptr=final)
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
