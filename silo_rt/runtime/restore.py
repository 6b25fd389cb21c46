"""Algorithm 1 from a bundle, with no PyTorch: encode once, T fused steps, decode once."""

from __future__ import annotations

import math
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from ..backends import AUTO, BACKENDS, RUNNER_BACKENDS, GraphBackend, StepCallback
from ..bundle_format import MAX_ETA, MAX_STEPS, bundle_path, load_manifest
from ..errors import SiloError
from ..noise import NoiseSource
from ..resize import recorded_resizer
from ..schedule import DEFAULT_SAMPLER, check_sampler
from ..tiling import DEFAULT_OVERLAP
from . import step_io


def tensorrt_available() -> bool:
    """Whether TensorRT and a CUDA GPU are usable here."""
    from .tensorrt.keys import tensorrt_unavailable_reason

    return tensorrt_unavailable_reason() is None


def _tensorrt_for_auto(log) -> bool:
    """Whether ``auto`` takes TensorRT; where TensorRT and cuda-python are installed but
    cannot be used (no GPU, a driver too old for this cuda-python, ...) says why in one line
    to ``log`` (TensorRT alone, as the GPU-less graph check installs it, says nothing)."""
    from .tensorrt.api import TENSORRT_MODULES
    from .tensorrt.keys import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if (reason is not None and find_spec("cuda") is not None
            and any(find_spec(m) for m in TENSORRT_MODULES)):
        log(f"auto: TensorRT is installed but not used: {reason}")
    return reason is None


def check_overrides(eta: float | None, sigma_y: float | None) -> None:
    """Refuse an ``eta`` outside [0, MAX_ETA] or a ``sigma_y`` outside [0, 1) (NaN too)."""
    if eta is not None and not (math.isfinite(eta) and 0.0 <= eta <= MAX_ETA):
        raise SiloError(f"eta must be a finite number in [0, {MAX_ETA:g}], got {eta}")
    if sigma_y is not None and not (math.isfinite(sigma_y) and 0.0 <= sigma_y < 1.0):
        raise SiloError(f"sigma_y must be in [0, 1) (the [-1, 1] image range), got {sigma_y}")


class BundleRunner:
    """A loaded, verified bundle ready to restore measurements.

    Args:
        bundle: the bundle folder written by ``silo-rt export``.
        backend: ``ort`` (ONNX Runtime), ``openvino`` (CPU), ``trt`` (TensorRT, CUDA
            graphs) or ``auto``: TensorRT when usable, else ONNX Runtime with CUDA when
            present, else the fastest CPU backend that agrees with ONNX Runtime on this
            bundle (:mod:`.backend_choice`; :attr:`label` says which and why).
        providers, threads: passed to the ONNX Runtime / OpenVINO graphs.
        precision: ``fp16``, ``fp32`` or ``bf16`` step (None: fp32, or with TensorRT fp16
            where the bundle has its ``step_fp16`` graph); fp16 needs a bundle exported
            with ``--precision fp16``, bf16 OpenVINO.
        verify: check every file's sha256 against the manifest first.
        memory: ``fast`` or ``low`` (ONNX Runtime on a CPU: the step's weights held once,
            steps slower; :data:`~silo_rt.backends.MEMORY_MODES`). With ``auto``,
            ``fast`` may still run ONNX Runtime ``low`` where only that fits
            (:mod:`.backend_choice`).
        log: progress lines (e.g. TensorRT engine builds on first use).
    """

    def __init__(self, bundle: str | Path, backend: str = "ort",
                 providers: list[str] | None = None, threads: int | None = None,
                 precision: str | None = None, verify: bool = True, memory: str = "fast",
                 log=lambda line: None):
        if backend not in (AUTO, *RUNNER_BACKENDS):
            raise SiloError(f"unknown backend {backend!r}; a bundle runs with "
                            f"{', '.join((AUTO, *RUNNER_BACKENDS))}")
        self.path = Path(bundle)
        self.manifest = load_manifest(self.path, verify=verify)
        if backend == AUTO and memory == "low":  # the one backend with that mode
            backend = "ort"
        if backend == AUTO and _tensorrt_for_auto(log):
            backend = "trt"
        elif backend == AUTO and precision in ("fp16", "bf16"):  # the one CPU backend for each
            backend = "ort" if precision == "fp16" else "openvino"
        self.graphs: GraphBackend
        if backend == AUTO:
            from .backend_choice import choose_cpu_backend

            backend, self.graphs, why = choose_cpu_backend(self.path, self.manifest, threads,
                                                           providers, log)
            self.label = f"auto: {why}"
        else:
            self.graphs = BACKENDS[backend].open(self.path, self.manifest,
                                                 precision=precision, threads=threads,
                                                 providers=providers, memory=memory, log=log)
            self.label = self.graphs.label
        self.backend = backend
        self.context = self._load_context()

    def _load_context(self) -> np.ndarray:
        """The text embedding ``(B', L, D)`` float32, of the shape the manifest declares."""
        spec = self.manifest.context
        path = bundle_path(self.path, spec.file, "context.file")
        try:
            context = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise SiloError(f"cannot read the bundle's context {path}: {exc}") from None
        if list(context.shape) != spec.shape or context.dtype.kind != "f":
            raise SiloError(f"bundle context {path} is {context.dtype} {list(context.shape)}, "
                            f"the manifest says float {spec.shape}")
        return context.astype(np.float32)

    @property
    def task(self) -> str:
        return self.manifest.task

    @property
    def resizer(self) -> str:
        """The SR measurement model the bundle's operator was trained against."""
        return recorded_resizer(self.manifest.operator)

    @property
    def degradation(self):
        """The bundle's task (:class:`~silo_rt.degradations.Degradation`), with its resizer."""
        from ..degradations import get_degradation

        return get_degradation(self.task, self.resizer)

    @property
    def image_size(self) -> int:
        """The side of the images the bundle restores (pixels)."""
        return self.manifest.image_size

    @property
    def steps(self) -> int:
        """The step count the bundle was exported with (the default)."""
        return self.manifest.steps

    def schedule(self, steps: int | None = None,
                 sampler: str = DEFAULT_SAMPLER) -> tuple[np.ndarray, np.ndarray]:
        """``(timesteps, coefficients)`` for ``steps`` steps (default: the exported ones) of
        ``sampler`` (``ddpm``, the exported update, or ``ddim``; :mod:`silo_rt.schedule`).

        Other step counts and samplers are computed from the training ``alphas_cumprod``
        the bundle stores (bundles without it run only their exported DDPM schedule).
        """
        record = self.manifest.schedule
        check_sampler(sampler)
        if steps is not None and not 1 <= steps <= MAX_STEPS:
            raise SiloError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
        if (steps is None or steps == self.steps) and sampler == DEFAULT_SAMPLER:
            return (np.asarray(record.timesteps, np.int64),
                    np.asarray(record.coefficients, np.float32))
        if record.alphas_cumprod is None:
            raise SiloError(f"bundle {self.path} was exported for {self.steps} DDPM steps and "
                            f"cannot change its schedule (asked: {steps or self.steps} "
                            f"{sampler} steps); export again with --steps")
        from ..schedule import from_alphas

        schedule = from_alphas(record.alphas_cumprod, steps or self.steps,
                               record.steps_offset, sampler)
        return schedule.timesteps, schedule.coefficients

    @property
    def tuning_path(self) -> Path:
        """Where ``silo-rt tune`` records η for this bundle (:mod:`silo_rt.step_budget`)."""
        from ..step_budget import TUNING_FILE

        return self.path / TUNING_FILE

    def tuning(self):
        """The bundle's :class:`~silo_rt.step_budget.TuningRecord`, or None when there is
        none or it was made for another bundle
        (:func:`~silo_rt.bundle_format.bundle_identity`: TensorRT plans do not count)."""
        from ..bundle_format import bundle_identity
        from ..step_budget import TuningRecord

        if not self.tuning_path.exists():
            return None
        record = TuningRecord.load(self.tuning_path)
        if record.bundle_sha256 != bundle_identity(self.path):
            return None
        return record

    def eta_choice(self, eta: float | None = None, steps: int | None = None,
                   sampler: str = DEFAULT_SAMPLER):
        """The η for ``steps`` steps of ``sampler`` (:func:`silo_rt.step_budget.choose_eta`:
        given, else tuned, else the bundle's own at its step count, else the rule), with
        the reason, as an :class:`~silo_rt.step_budget.EtaChoice`."""
        from ..step_budget import choose_eta

        return choose_eta(eta, steps or self.steps, sampler, base_eta=self.manifest.eta,
                          base_steps=self.steps, base_name="the bundle's eta",
                          tuning=self.tuning(), tuning_name=str(self.tuning_path))

    def is_whole(self, y: np.ndarray) -> bool:
        """Whether ``y`` is exactly the bundle's measurement batch (restored untiled)."""
        return tuple(y.shape) == tuple(self.manifest.measurement_shape)

    def check_measurement(self, y: np.ndarray) -> None:
        """Raise :class:`SiloError` unless ``y`` ``(N, 3, h, w)`` can be restored: the
        bundle's own measurement shape, or any size and batch by tiles (tasks whose
        degradation acts the same everywhere; not ``ip``)."""
        if y.ndim != 4 or y.shape[1] != 3 or min(y.shape) < 1:
            raise SiloError(f"a measurement is (N, 3, h, w) with pixels, got {list(y.shape)}")
        if not self.is_whole(y):
            side = self.manifest.measurement_shape[-1]
            self.degradation.check_tileable(
                f"bundle {self.path.name} is for {side}x{side} measurements, this one is "
                f"{y.shape[-1]}x{y.shape[-2]}")

    def tiling(self, y: np.ndarray, overlap: int | None = DEFAULT_OVERLAP, steps: int | None = None,
               sampler: str = DEFAULT_SAMPLER, eta: float | None = None,
               sigma_y: float | None = None):
        """The :class:`~silo_rt.tiled.TiledRestoration` that restores ``y`` by tiles, or
        None when ``y`` is the bundle's own shape (restored in one piece, as exported)."""
        self.check_measurement(y)
        if self.is_whole(y):
            return None
        from ..tiled import TiledRestoration
        from .bundle_tiles import BundleTileModel

        m = self.manifest
        timesteps, coefficients = self.schedule(steps, sampler)
        model = BundleTileModel(self.graphs, m, self.degradation.scale, self.context,
                                timesteps, coefficients, m.eta if eta is None else eta,
                                m.sigma_y if sigma_y is None else sigma_y,
                                m.cfg_scale if m.cfg_scale > 1.0 else None)
        return TiledRestoration(model, y, overlap)

    def restore(self, y: np.ndarray, seed: int = 0, eta: float | None = None,
                sigma_y: float | None = None, callback: StepCallback | None = None,
                steps: int | None = None, keep_measured: bool = False,
                sampler: str = DEFAULT_SAMPLER, overlap: int | None = DEFAULT_OVERLAP,
                log=lambda line: None) -> np.ndarray:
        """Restore ``y`` ``(N, 3, h, w)`` float32 in [-1, 1]; returns ``(N, 3, h·s, w·s)``
        (``s`` the task's scale).

        The bundle's own measurement shape runs as exported; any other size or batch runs
        by tiles of the bundle's size (:mod:`silo_rt.tiled`, ``overlap`` latent pixels,
        described in one line to ``log``).
        ``eta``/``sigma_y``/``steps`` default to the values the bundle was exported with
        (a caller choosing η for another step count: :mod:`silo_rt.step_budget`);
        ``sampler``: ``ddpm`` (the paper's update) or ``ddim`` (deterministic).
        ``keep_measured`` (``ip``, ``sr4``, ``sr8``): make the result agree exactly with ``y``
        (:meth:`~silo_rt.degradations.Degradation.keep_measured`: ``ip`` copies the observed
        pixels, ``sr`` replaces the part the low-resolution image determines).
        """
        if keep_measured:
            self.degradation.check_imposable()
        check_overrides(eta, sigma_y)
        tiled = self.tiling(y, overlap, steps, sampler, eta, sigma_y)
        if tiled is None:
            x = self._restore_whole(y, seed, eta, sigma_y, callback, steps, sampler)
        else:
            log(f"tiles: {tiled.describe()}")
            x = tiled.run(NoiseSource(seed), callback)
        return self.degradation.keep_measured(y, x) if keep_measured else x

    def _restore_whole(self, y, seed, eta, sigma_y, callback, steps, sampler) -> np.ndarray:
        """Algorithm 1 on the bundle's own shape: encode, all steps in one call, decode."""
        m = self.manifest
        noise = NoiseSource(seed)
        latent_shape = tuple(m.latent_shape)
        w = self.graphs.run(step_io.VAE_ENCODER,
                            **step_io.encoder_inputs(y, noise.encoder_noise(latent_shape)))[0]
        z = noise.initial_latent(latent_shape) * np.float32(m.init_noise_sigma)
        timesteps, coefficients = self.schedule(steps, sampler)
        step_noise = noise.step_noise(len(timesteps), latent_shape)
        cfg = m.cfg_scale if m.cfg_scale > 1.0 else None
        z0 = self.graphs.run_steps(z, w, self.context, timesteps, coefficients, step_noise,
                                   m.eta if eta is None else eta,
                                   m.sigma_y if sigma_y is None else sigma_y, cfg, callback)
        return self.graphs.run(step_io.VAE_DECODER, **step_io.decoder_inputs(z0))[0]
