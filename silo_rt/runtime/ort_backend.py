"""ONNX Runtime execution of a bundle's graphs (CPUExecutionProvider, CUDA when present).

The step loop keeps everything in ONNX Runtime ``OrtValue`` s bound once: the measurement
latent, η, σ_y and the text context never move; ``z`` ping-pongs between two preallocated
buffers; each step's timestep, coefficients and noise are views prepared before the loop, so
a step is four ``bind`` calls and one ``run_with_iobinding``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..backends import MEMORY_MODES, StepCallback
from ..bundle_format import Manifest
from ..errors import SiloError, first_line
from . import step_io
from .finite import check_losses
from .low_memory import low_memory_model

_ENV_ARENA = []  # set once the process-wide CPU arena below is registered


def use_env_arena(ort, options) -> None:
    """Let sessions share one process-wide CPU arena that grows by what is requested.

    The default per-session arena grows to the next power of two: on ``small`` a 256px
    restoration peaked at 1110 MiB with it, 888 MiB with this arena (step time unchanged,
    paired 1.007x; ``benchmarks/README.md``).
    """
    if not _ENV_ARENA:
        try:
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                     ort.OrtMemType.DEFAULT)
            # (max_mem 0 = unlimited, extend strategy 1 = kSameAsRequested, defaults)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
        except Exception:  # an onnxruntime without env allocators: its own arenas, as before
            _ENV_ARENA.append(False)
        else:
            _ENV_ARENA.append(True)
    if _ENV_ARENA[0]:
        options.add_session_config_entry("session.use_env_allocators", "1")


def release_freed_heap() -> None:
    """Give the heap that session creation freed (the parsed model, graph-optimisation
    copies: ~300 MiB for ``small``'s step) back to the OS; glibc keeps it otherwise."""
    import ctypes
    import ctypes.util
    from contextlib import suppress

    with suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def available_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def default_providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always."""
    found = available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in found]


class OrtGraphs:
    """Sessions for a bundle's graphs.

    Args:
        bundle: bundle folder (already verified with
            :func:`~silo_rt.bundle_format.load_manifest`).
        manifest: its :class:`~silo_rt.bundle_format.Manifest`.
        providers: ONNX Runtime execution providers, default :func:`default_providers`.
        threads: intra-op threads (None = ONNX Runtime's default, all cores).
        precision: ``fp32`` runs the ``step`` graph, ``fp16`` the bundle's ``step_fp16``.
        memory: how the step's weights are held (:data:`MEMORY_MODES`; ``low`` on a CPU
            only).
    """

    @classmethod
    def open(cls, bundle: Path, manifest: Manifest, *, precision: str | None = None,
             threads: int | None = None, providers: list[str] | None = None,
             memory: str = "fast", log=lambda line: None) -> OrtGraphs:
        """The registry's way in (:attr:`silo_rt.backends.Backend.opens`)."""
        return cls(bundle, manifest, providers, threads, precision or "fp32", memory)

    @property
    def label(self) -> str:
        low = ", low memory" if self.memory == "low" else ""
        return f"ort ({self.providers[0]}{low})"

    def __init__(self, bundle: Path, manifest: Manifest, providers: list[str] | None = None,
                 threads: int | None = None, precision: str = "fp32", memory: str = "fast"):
        import onnxruntime as ort

        if memory not in MEMORY_MODES:
            raise SiloError(f"memory must be one of {', '.join(MEMORY_MODES)}, not {memory!r}")

        self.manifest = manifest
        self.step_graph = step_io.STEP_GRAPHS.get(precision, step_io.STEP)
        if self.step_graph not in manifest.graphs:
            raise SiloError(f"bundle {Path(bundle).name} has no {precision} step graph; "
                            "export it again with --precision fp16")
        self.providers = providers or default_providers()
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        if memory == "low" and self.device != "cpu":
            raise SiloError("--memory low is for ONNX Runtime on a CPU (this one runs CUDA)")
        self.memory = memory
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if self.device == "cpu":
            use_env_arena(ort, options)
            # Without a memory pattern the arena serves each tensor from the chunks earlier
            # ones freed. With it, each run asks for one block of the planned size, which the
            # arena held beside the chunks it already had in some runs and not others:
            # four single steps of sd15-random peaked at 6.2 or 7.7 GiB (low) and 8.7-8.8 GiB
            # (fast) with it, 6.0 and 8.5 GiB without, steps no slower (benchmarks/memory).
            options.enable_mem_pattern = False
        self._options = options
        self._bundle = Path(bundle)
        self._sessions: dict = {}
        self._runs: set[str] = set()  # graphs that have run once
        self._plain_run = ort.RunOptions()

    def _run_options(self, name: str, last: bool = False):
        """Options for the next run of graph ``name`` (``last``: of a loop of runs).

        After a graph's first run, and after the last step of a loop of runs, the arena
        returns its free chunks to the OS: after the last step, the step's activations
        before the decoder runs (sd15-random: 3 GiB). The first-run shrink dates from
        sessions with a memory pattern, whose block the fragmented arena otherwise held
        beside the first run's chunks (sd15-random's step: +6 GiB); it is kept for what a
        first run allocates once.
        """
        import onnxruntime as ort

        if self.device != "cpu" or (name in self._runs and not last):
            return self._plain_run
        self._runs.add(name)
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        return options

    def session(self, name: str):
        """The (lazily created) ``InferenceSession`` of graph ``name``."""
        import onnxruntime as ort

        if name not in self._sessions:
            path = self.manifest.graph_file(self._bundle, name)
            try:
                source = str(path)
                if self.memory == "low" and name == self.step_graph:
                    source = low_memory_model(path)  # bytes: say where its data is
                    self._options.add_session_config_entry(
                        "session.model_external_initializers_file_folder_path",
                        str(path.parent))
                self._sessions[name] = ort.InferenceSession(source, self._options,
                                                            providers=self.providers)
            except Exception as exc:  # onnxruntime raises its own exception types
                raise SiloError(f"cannot load {path.name}: {first_line(exc)}") from None
            release_freed_heap()
        return self._sessions[name]

    def close(self) -> None:
        """Drop the sessions (their memory goes back to the arena and the heap)."""
        self._sessions.clear()
        self._runs.clear()
        release_freed_heap()

    def run(self, name: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """Run graph ``name`` on numpy inputs (float32)."""
        session = self.session(name)
        return session.run(None, {k: np.ascontiguousarray(v, dtype=np.float32)
                                  for k, v in inputs.items()}, self._run_options(name))

    def _value(self, array):
        from onnxruntime import OrtValue

        return OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array, np.float32),
                                            self.device, 0)

    def _bind_constants(self, binding, w, context, eta, sigma_y, cfg_scale) -> dict:
        """Bind the inputs that stay fixed over a restoration; returns the values to keep."""
        values = {k: self._value(v)
                  for k, v in step_io.step_constants(w, context, eta, sigma_y, cfg_scale).items()}
        for name, v in values.items():
            binding.bind_ortvalue_input(name, v)
        return values

    def single_step(self, z, w, context, timestep, coefficients, noise, eta, sigma_y,
                    cfg_scale=None):
        """A zero-argument callable that runs one step on pre-bound inputs (benchmarks)."""
        session = self.session(self.step_graph)
        binding = session.io_binding()
        values = self._bind_constants(binding, w, context, eta, sigma_y, cfg_scale)
        for name, array in step_io.step_inputs(z, timestep, coefficients, noise).items():
            values[name] = self._value(array)
            binding.bind_ortvalue_input(name, values[name])
        for name in step_io.STEP_OUTPUTS:
            binding.bind_output(name, self.device)

        def run():
            session.run_with_iobinding(binding, self._run_options(self.step_graph))
            return values  # keeps the bound buffers alive as long as the callable

        return run

    def run_steps(self, z: np.ndarray, w: np.ndarray, context: np.ndarray,
                  timesteps: np.ndarray, coefficients: np.ndarray, noise: np.ndarray,
                  eta: float, sigma_y: float, cfg_scale: float | None = None,
                  callback: StepCallback | None = None, want_latents: bool = False
                  ) -> np.ndarray:
        """Run ``len(timesteps)`` fused guided steps from ``z``; returns the final latent.

        Stops with a :class:`SiloError` naming the step at the first NaN/Inf loss.

        Args:
            z, w: ``(B, C, s, s)`` float32 start latent and measurement latent.
            context: text context as in the manifest.
            timesteps: ``(T,)``; coefficients: ``(T, 5)``; noise: ``(T, B, C, s, s)``.
            callback: ``callback(i, timestep, z or None, loss)`` after each step; the latent
                is copied out only when ``want_latents``.
        """
        from onnxruntime import OrtValue

        session = self.session(self.step_graph)
        device = self.device
        value = self._value
        steps = len(timesteps)
        ts = np.asarray(timesteps, np.float32).reshape(steps, 1)
        per_step = [(value(ts[i]), value(coefficients[i]), value(noise[i]))
                    for i in range(steps)]
        # a copy: the ping-pong writes into the first buffer from step 2 on
        buffers = [value(np.array(z, np.float32)),
                   OrtValue.ortvalue_from_shape_and_type(list(z.shape), np.float32, device, 0)]
        loss = OrtValue.ortvalue_from_shape_and_type([], np.float32, device, 0)
        binding = session.io_binding()
        self._bind_constants(binding, w, context, eta, sigma_y, cfg_scale)
        binding.bind_ortvalue_output(step_io.LOSS, loss)
        losses = np.empty(steps, np.float32)
        for i in range(steps):
            current, following = buffers[i % 2], buffers[(i + 1) % 2]
            t_value, c_value, n_value = per_step[i]
            binding.bind_ortvalue_input(step_io.Z_T, current)
            binding.bind_ortvalue_input(step_io.TIMESTEP, t_value)
            binding.bind_ortvalue_input(step_io.COEFFICIENTS, c_value)
            binding.bind_ortvalue_input(step_io.NOISE, n_value)
            binding.bind_ortvalue_output(step_io.Z_PREV, following)
            session.run_with_iobinding(binding,
                                       self._run_options(self.step_graph, i == steps - 1))
            losses[i] = loss.numpy()
            if not np.isfinite(losses[i]):
                check_losses(losses[: i + 1], timesteps)
            if callback is not None:
                latent = following.numpy().copy() if want_latents else None
                callback(i, int(timesteps[i]), latent, float(losses[i]))
        # .numpy() views memory that is freed with `buffers` on return: copy it out
        return buffers[steps % 2].numpy().copy()
