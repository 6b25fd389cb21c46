"""The one way to restore from Python: a :class:`Restorer` opened from a bundle or from a
model and an operator, called on a measurement, returning a :class:`Restoration`.

    from silo_rt import Restorer
    from silo_rt.images import read_image

    with Restorer.from_bundle("engines/sr8") as restorer:       # or Restorer.from_model(...)
        result = restorer(read_image("y.png"), steps=100, seed=0)
    result.pil.save("x.png"); print(result.backend, f"{result.seconds:.1f} s", result.cpsnr)

A measurement of any size is restored by tiles of the bundle's (or operator's) size
(:mod:`silo_rt.tiled`; not ``ip``). The bundle path needs no PyTorch; ``from_model`` runs the
PyTorch reference (:mod:`silo_rt.sampler`) on the CPU or a GPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backends import AUTO, StepCallback
from .errors import SiloError
from .schedule import DEFAULT_SAMPLER
from .tiling import DEFAULT_OVERLAP, tiles_per_image


@dataclass(frozen=True)
class Restoration:
    """What a :class:`Restorer` call gives back.

    Attributes:
        image: ``(N, 3, H, W)`` float32 in [-1, 1]; with ``samples > 1`` their mean.
        samples: ``(K, N, 3, H, W)`` float32, the K posterior samples (None for one).
        std: ``(N, H, W)`` float32, each pixel's std over the samples in [-1, 1] units,
            averaged over the channels (None for one sample).
        backend: what ran (e.g. ``ort (CPUExecutionProvider)``, ``torch``).
        seconds: wall time of the call.
        cpsnr: PSNR (dB) of ``A(image)`` against the measurement, for tasks whose operator
            exists in numpy (``sr4``, ``sr8``, ``ip``); None otherwise.
        eta: the consistency scale used; steps: the step count used.
        tiles: tiles per image (1: restored in one piece).
    """

    image: np.ndarray
    samples: np.ndarray | None
    std: np.ndarray | None
    backend: str
    seconds: float
    cpsnr: float | None
    eta: float
    steps: int
    tiles: int

    @property
    def pil(self):
        """The first image as a ``PIL.Image`` (RGB, 8-bit)."""
        return self.pils()[0]

    def pils(self) -> list:
        """Every image of the batch as a ``PIL.Image``."""
        from PIL import Image

        from .images import to_uint8

        return [Image.fromarray(to_uint8(x)) for x in self.image]


def as_measurement(y) -> np.ndarray:
    """``y`` as ``(N, 3, h, w)`` float32 in [-1, 1]: a path, a ``PIL.Image``, an
    ``(h, w, 3)`` uint8 array, or already such an array (``(3, h, w)`` gets a batch axis)."""
    from .images import read_image

    if isinstance(y, (str, Path)):
        return read_image(Path(y))
    if hasattr(y, "convert") and hasattr(y, "size"):  # a PIL image
        y = np.asarray(y.convert("RGB"))
    array = np.asarray(y)
    if array.dtype == np.uint8 and array.ndim == 3 and array.shape[-1] == 3:
        return (array.transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[1] != 3 or array.dtype.kind != "f":
        raise SiloError(f"a measurement is a path, a PIL image, (h, w, 3) uint8 or (N, 3, h, w) "
                        f"float in [-1, 1]; got {array.dtype} {list(array.shape)}")
    return np.ascontiguousarray(array, np.float32)


class Restorer:
    """SILO for one task with one model: open once, restore many measurements.

    Open with :meth:`from_bundle` (an exported bundle: ONNX Runtime, OpenVINO or TensorRT)
    or :meth:`from_model` (the PyTorch reference). Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, engine):
        self._engine = engine

    # -- opening --------------------------------------------------------------------------
    @classmethod
    def from_bundle(cls, path: str | Path, backend: str = AUTO, precision: str | None = None,
                    threads: int | None = None, verify: bool = True, memory: str = "fast",
                    log=lambda line: None) -> Restorer:
        """A restorer on a bundle folder written by ``silo-rt export``.

        ``backend``: ``auto`` (TensorRT when usable, else the faster CPU backend that agrees
        with ONNX Runtime), ``ort``, ``openvino`` or ``trt``; ``precision``: ``fp32``,
        ``fp16`` or ``bf16``; ``memory``: ``fast`` or ``low`` (ONNX Runtime holding most
        of the step's weights once, slightly slower steps; see
        :class:`~silo_rt.runtime.BundleRunner`); ``log`` gets one-line notes (engine builds,
        tiles, the backend choice).
        """
        from .runtime import BundleRunner

        return cls(_BundleEngine(BundleRunner(path, backend=backend, threads=threads,
                                              precision=precision, verify=verify,
                                              memory=memory, log=log),
                                 log))

    @classmethod
    def from_model(cls, model: str, operator: str | Path, task: str | None = None,
                   device: str = "cpu", arch: str | None = None,
                   time_input: str | None = None, prompt: str | None = None,
                   cfg_scale: float = 1.0, log=lambda line: None) -> Restorer:
        """A restorer running the PyTorch reference: ``model`` a diffusers folder, hub id or
        built-in random prior (``tiny``…, tests only); ``operator`` a trained H_θ file
        (``.safetensors``, or the authors' released ``.pt``); ``task`` defaults to the
        operator's; ``device`` ``cpu`` or ``cuda`` (a CUDA graph for the operator's own
        size)."""
        from .operators import load_operator
        from .prior import load_prior

        prior = load_prior(model)
        op, config = load_operator(operator, prior, task, arch, None, time_input)
        return cls(_ReferenceEngine(prior, op, config, device, prompt, cfg_scale, log))

    # -- what it is -----------------------------------------------------------------------
    @property
    def task(self) -> str:
        return self._engine.task

    @property
    def backend(self) -> str:
        """What runs the restorations, in words."""
        return self._engine.label

    @property
    def steps(self) -> int:
        """The default step count (the bundle's, or the operator makers')."""
        return self._engine.default_steps

    @property
    def degradation(self):
        """The task's :class:`~silo_rt.degradations.Degradation` (with its SR resizer)."""
        return self._engine.degradation

    @property
    def runner(self):
        """The :class:`~silo_rt.runtime.BundleRunner` of a bundle restorer (None for the
        reference)."""
        return getattr(self._engine, "runner", None)

    def eta_choice(self, eta: float | None = None, steps: int | None = None,
                   sampler: str = DEFAULT_SAMPLER):
        """The η a call with these settings uses, and why
        (:class:`~silo_rt.step_budget.EtaChoice`)."""
        return self._engine.eta_choice(eta, steps, sampler)

    def tile_count(self, y, overlap: int | None = DEFAULT_OVERLAP) -> int:
        """Tiles per image for ``y`` (1: restored in one piece)."""
        return self._engine.tile_count(as_measurement(y), overlap)

    # -- restoring ------------------------------------------------------------------------
    def __call__(self, y, *, steps: int | None = None, eta: float | None = None,
                 seed: int = 0, samples: int = 1, keep_measured: bool = False,
                 callback: StepCallback | None = None, sampler: str = DEFAULT_SAMPLER,
                 sigma_y: float | None = None, overlap: int | None = DEFAULT_OVERLAP,
                 on_sample=None) -> Restoration:
        """Restore ``y`` (see :func:`as_measurement` for what it may be).

        ``steps``/``eta``/``sigma_y`` default as ``silo-rt restore`` does (η: given, tuned,
        the bundle's, the rule); ``samples`` > 1 draws that many posterior samples (sample
        ``i`` seeded by :func:`~silo_rt.posterior.sample_seed`) and returns their mean,
        the samples and the std map; ``keep_measured`` makes the result agree exactly
        with ``y`` (``ip``, ``sr4``, ``sr8``); ``callback(i, t, z, loss)`` after each
        step (one sample); ``on_sample(done, samples)`` after each call that drew samples.
        """
        from .posterior import MAX_SAMPLES, summarise

        y = as_measurement(y)
        if not 1 <= samples <= MAX_SAMPLES:
            raise SiloError(f"samples must be in [1, {MAX_SAMPLES}], got {samples}")
        if keep_measured:
            self.degradation.check_imposable()
        eta_used = self.eta_choice(eta, steps, sampler).eta
        settings = {"eta": eta_used, "sigma_y": sigma_y, "steps": steps, "sampler": sampler,
                    "overlap": overlap, "keep_measured": keep_measured}
        start = time.perf_counter()
        if samples == 1:
            image = self._engine.restore(y, seed=seed, callback=callback, **settings)
            stack = std = None
            if on_sample is not None:
                on_sample(1, 1)
        else:
            stack = self._engine.draw(y, samples, seed=seed, on_sample=on_sample, **settings)
            image, std = summarise(stack)
        seconds = time.perf_counter() - start
        return Restoration(image=image, samples=stack, std=std, backend=self.backend,
                           seconds=seconds, cpsnr=self._cpsnr(image, y), eta=eta_used,
                           steps=steps or self.steps,
                           tiles=self._engine.tile_count(y, overlap))

    def _cpsnr(self, x: np.ndarray, y: np.ndarray) -> float | None:
        """CPSNR where the task's operator runs in numpy (the runtime has no torch)."""
        from .images import psnr

        if not self.degradation.imposable:
            return None
        return psnr(self.degradation.measure_numpy(x), y)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Release sessions, engines and device memory."""
        self._engine.close()

    def __enter__(self) -> Restorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _BundleEngine:
    """A :class:`~silo_rt.runtime.BundleRunner` behind the :class:`Restorer`."""

    def __init__(self, runner, log):
        self.runner = runner
        self._log = log
        self.task = runner.task
        self.label = runner.label
        self.default_steps = runner.steps
        self.degradation = runner.degradation

    def eta_choice(self, eta, steps, sampler):
        return self.runner.eta_choice(eta, steps, sampler)

    def tile_count(self, y, overlap) -> int:
        if self.runner.is_whole(y):
            return 1
        m = self.runner.manifest
        return tiles_per_image(*y.shape[-2:], self.degradation.scale, m.image_size, overlap,
                               m.image_size // m.latent_shape[-1])

    def restore(self, y, *, seed, eta, sigma_y, steps, sampler, overlap, keep_measured,
                callback=None):
        return self.runner.restore(y, seed, eta, sigma_y, callback=callback, steps=steps,
                                   sampler=sampler, overlap=overlap,
                                   keep_measured=keep_measured, log=self._log)

    def draw(self, y, k, *, seed, eta, sigma_y, steps, sampler, overlap, keep_measured,
             on_sample=None):
        """``(k, N, 3, H, W)``: a batch-B bundle draws B samples a call
        (:func:`~silo_rt.posterior.draw_samples`)."""
        from .posterior import draw_samples

        if y.shape[0] != 1:
            raise SiloError("samples of a batch: restore one measurement at a time")
        return draw_samples(self.runner, y, k, seed, eta, sigma_y, steps, keep_measured,
                            on_sample, sampler=sampler, overlap=overlap)

    def close(self) -> None:
        self.runner.graphs.close()


class _ReferenceEngine:
    """The PyTorch reference (prior + operator) behind the :class:`Restorer`."""

    def __init__(self, prior, operator, config, device, prompt, cfg_scale, log):
        from .degradations import get_degradation

        self.prior, self.operator, self.config = prior, operator, config
        self.device = device
        self.task = config.task
        self.degradation = get_degradation(config.task, config.resizer)
        self.default_steps = int(config.recommended.get("steps", 999))
        self.prompt = config.recommended.get("prompt", "") if prompt is None else prompt
        self.cfg_scale = cfg_scale
        self.label = "torch" if device == "cpu" else "torch-cuda (CUDA graph)"
        self._log = log
        if device != "cpu":
            from .torch_cuda import require_cuda

            target = require_cuda()
            for module in (prior.unet, prior.vae, prior.text_encoder, operator):
                module.to(target)

    def eta_choice(self, eta, steps, sampler):
        from .step_budget import choose_eta

        return choose_eta(eta, steps or self.default_steps, sampler,
                          base_eta=self.degradation.eta, base_steps=self.default_steps,
                          base_name="the default eta")

    def _whole(self, y) -> bool:
        side = self.config.image_size // self.degradation.scale
        return tuple(y.shape[-2:]) == (side, side)

    def tile_count(self, y, overlap) -> int:
        if self._whole(y):
            return 1
        return tiles_per_image(*y.shape[-2:], self.degradation.scale, self.config.image_size,
                               overlap, self.prior.vae_scale)

    def draw(self, y, k, *, seed, on_sample=None, **settings):
        """``(k, N, 3, H, W)``, sample ``i`` seeded by
        :func:`~silo_rt.posterior.sample_seed` ``(seed, i)``."""
        from .posterior import sample_seed

        drawn = []
        for i in range(k):
            drawn.append(self.restore(y, seed=sample_seed(seed, i), **settings))
            if on_sample is not None:
                on_sample(i + 1, k)
        return np.stack(drawn)

    def restore(self, y, *, seed, eta, sigma_y, steps, sampler, overlap, keep_measured,
                callback=None):
        x = self._restore(y, seed, eta, sigma_y, steps, sampler, overlap, callback)
        return self.degradation.keep_measured(y, x) if keep_measured else x

    def _restore(self, y, seed, eta, sigma_y, steps, sampler, overlap, callback):
        import torch

        from .degradations import DEFAULT_SIGMA_Y
        from .sampler import SamplingOptions

        options = SamplingOptions(task=self.task, steps=steps or self.default_steps, eta=eta,
                                  seed=seed, prompt=self.prompt, cfg_scale=self.cfg_scale,
                                  sigma_y=DEFAULT_SIGMA_Y if sigma_y is None else sigma_y,
                                  sampler=sampler)
        options.validate()
        if not self._whole(y):
            from .reference_tiles import restore_by_tiles

            with self._precision():
                return restore_by_tiles(self.prior, self.operator, y, options,
                                        self.config.image_size, overlap, callback, self._log)
        if self.device != "cpu":
            from .torch_cuda import restore_cuda

            return restore_cuda(self.prior, self.operator, torch.from_numpy(y),
                                options).numpy()
        from .sampler import restore

        return restore(self.prior, self.operator, torch.from_numpy(y), options,
                       callback=callback).numpy()

    def _precision(self):
        from contextlib import nullcontext

        if self.device == "cpu":
            return nullcontext()
        from .torch_cuda import exact_fp32

        return exact_fp32()

    def close(self) -> None:
        pass
