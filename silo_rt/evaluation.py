"""Quality of a bundle's restorations on clean images, against simple baselines.

For every image of a folder: make the measurement exactly as ``silo-rt degrade`` does
(seeded by the image's index, quantised to 8 bits as a PNG would be), restore it from the
bundle (ONNX Runtime), and compare with the ground truth:

* PSNR (dB, on [-1, 1] images) and SSIM (scikit-image, 8-bit RGB);
* CPSNR: PSNR of ``A(x̂)`` against the measurement (consistency with y);
* sharpness: mean gradient magnitude of the image divided by the ground truth's (1 = as
  sharp as the original, lower = blurrier).

For ``ip``, ``sr4`` and ``sr8`` the report also gives SILO made exactly consistent with the
measurement (``restore --keep-measured``, :meth:`Degradation.keep_measured
<silo_rt.degradations.Degradation.keep_measured>`). Each task names its own baseline
(:meth:`~silo_rt.degradations.Degradation.baseline`): bicubic upsampling for ``sr4``/``sr8``,
a biharmonic (smooth) fill of the box for ``ip``, the measurement itself for ``gb``/``jpeg``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .degradations import get_degradation
from .errors import SiloError
from .images import OutputPlan, psnr, read_image, to_uint8
from .records import recorded_path
from .resize import DEFAULT_RESIZER

METHODS = ("silo", "silo_keep_measured", "baseline")
PRIOR_METHODS = ("silo-torch", "ldps", "gml-dps", "psld", "resample")
"""``--methods`` that run through the PyTorch reference on the bundle's prior: SILO itself
(for like-for-like time), the decoder-in-the-loop baselines of :mod:`silo_rt.baselines` and
ReSample (:mod:`silo_rt.resample`)."""


RESAMPLE_COUNTS = ("consistency_steps", "pixel_iterations", "latent_iterations")
"""What ReSample's rows count per image (:meth:`~silo_rt.resample.ReSampleStats.to_json`)."""


def parse_methods(text: str) -> tuple[str, ...]:
    """``"silo,ldps,psld"`` → the PyTorch-reference methods asked for (``silo`` always runs
    from the bundle; naming a baseline adds ``silo-torch`` for a like-for-like time)."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = sorted(set(names) - {"silo", *PRIOR_METHODS})
    if unknown:
        raise SiloError(f"unknown method(s) {unknown}; choose from silo, "
                        f"{', '.join(PRIOR_METHODS)}")
    chosen = [m for m in PRIOR_METHODS if m in names]
    if chosen and "silo-torch" not in chosen:
        chosen.insert(0, "silo-torch")
    return tuple(chosen)


def _reference_restorer(reference, task: str, method: str, steps: int, seed: int,
                        sigma_y: float, weights=None, resample_settings=None):
    """``restore(y) -> (x, extra)`` for a PyTorch-reference method on ``reference = (prior,
    operator)``, with the bundle's steps, seed and σ_y (the same noise as the bundle's SILO);
    ``extra``: what the report adds to the method's row (ReSample's optimiser iterations)."""
    import torch

    from .baselines import restore_baseline
    from .resample import restore_resample
    from .sampler import SamplingOptions, restore

    prior, operator = reference
    options = SamplingOptions(task=task, steps=steps, seed=seed, sigma_y=sigma_y)

    def run(y):
        y = torch.from_numpy(y)
        if method == "silo-torch":
            return restore(prior, operator, y, options).detach().numpy(), {}
        if method == "resample":
            x, stats = restore_resample(prior, y, options, resample_settings)
            return x.detach().numpy(), stats.to_json()
        return restore_baseline(prior, method, y, options, weights).detach().numpy(), {}
    return run


def quantise(image: np.ndarray) -> np.ndarray:
    """What writing ``image`` to an 8-bit PNG and reading it back gives."""
    return (to_uint8(image).transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two ``(1, 3, H, W)`` images in [-1, 1], on their 8-bit RGB versions."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(to_uint8(a), to_uint8(b), channel_axis=2,
                                       data_range=255))


def sharpness(image: np.ndarray, reference: np.ndarray) -> float:
    """Mean gradient magnitude of ``image`` relative to ``reference``'s."""
    def energy(x):
        x = np.asarray(x, np.float64)
        return (np.abs(np.diff(x, axis=-1)).mean() + np.abs(np.diff(x, axis=-2)).mean())

    return float(energy(image) / max(energy(reference), 1e-12))


def consistency_psnr(task: str, restoration: np.ndarray, y: np.ndarray,
                     resizer: str = DEFAULT_RESIZER) -> float:
    """CPSNR: PSNR of ``A(restoration)`` against the measurement ``y`` (``resizer``: the SR
    measurement model ``y`` was made with).

    ``ip``, ``sr4`` and ``sr8`` are measured with numpy (no torch: the dataset log of the lean
    runtime uses this); ``gb`` and ``jpeg`` need the PyTorch degradations.
    """
    if get_degradation(task).imposable:
        return psnr(measure(task, restoration, resizer), y)
    from .degradations import make_measurement

    return psnr(make_measurement(restoration, task, 0.0, 0, resizer), y)


def measure(task: str, x: np.ndarray, resizer: str = DEFAULT_RESIZER) -> np.ndarray:
    """``A(x)`` without noise, clipped to [-1, 1], for ``ip``/``sr4``/``sr8`` in numpy:
    ``(B, 3, S, S)`` → the measurement, as :func:`~silo_rt.degradations.make_measurement`
    with ``sigma_y = 0`` gives it."""
    return get_degradation(task, resizer).measure_numpy(x)


def _perceptual(truths, outputs_by_method, metrics_weights) -> dict:
    try:
        from .perceptual import perceptual_report

        return perceptual_report(truths, outputs_by_method, metrics_weights)
    except ImportError as exc:  # the lean runtime: no torch
        return {"unavailable": f"FID/KID: {exc.name} is not installed"}


def image_metrics(image: np.ndarray, truth: np.ndarray) -> dict:
    """PSNR, SSIM and sharpness of ``image`` against ``truth`` (``(1, 3, H, W)``, [-1, 1])."""
    return {"psnr": psnr(image, truth), "ssim": ssim(image, truth),
            "sharpness": sharpness(image, truth)}


def _grid(rows: list[list[np.ndarray]], path: Path, scale: int = 3) -> None:
    """Write the grid PNG to ``path``."""
    """Rows of equally sized images (measurements enlarged) as one PNG."""
    from PIL import Image

    side = rows[0][-1].shape[-1] * scale
    canvas = Image.new("RGB", (len(rows[0]) * (side + 2), len(rows) * (side + 2)), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            tile = Image.fromarray(to_uint8(image)).resize((side, side), Image.NEAREST)
            canvas.paste(tile, (c * (side + 2), r * (side + 2)))
    canvas.save(path, format="PNG")


def evaluate_bundle(bundle: Path, images: Path, out: Path, sigma_y: float | None = None,
                    seed: int = 0, threads: int | None = None, limit: int | None = None,
                    progress=None, steps: int | None = None, methods: tuple[str, ...] = (),
                    reference=None, baseline_weights=None,
                    metrics_weights: Path | None = None, backend: str = "ort",
                    precision: str | None = None, resample_settings=None) -> dict:
    """Evaluate ``bundle`` on every image under ``images``; writes ``out/<task>.json`` and
    ``out/<task>-grid.png`` (columns: measurement, baseline, SILO, SILO with
    ``--keep-measured`` where the task has it, one per ``methods``, ground truth).

    ``methods`` (:data:`PRIOR_METHODS`) run through the PyTorch reference on ``reference``,
    ``(prior, operator)`` of the bundle, with the bundle's steps, seed and σ_y;
    ``baseline_weights``: their :class:`~silo_rt.baselines.BaselineWeights` (ω, γ);
    ``resample_settings``: ReSample's :class:`~silo_rt.resample.ReSampleSettings` (its row
    also counts its hard-consistency steps and optimiser iterations per image).
    FID/KID per method (:mod:`silo_rt.perceptual`) when the Inception weights are in
    ``metrics_weights`` or the torch hub cache; else the report says why not.
    ``backend``/``precision``: how the bundle runs (:class:`~silo_rt.runtime.BundleRunner`).

    Returns the report: per-image and mean metrics (and seconds) for every method.
    """
    import time

    from .degradations import make_measurement
    from .restorer import Restorer

    images, out = Path(images), Path(out)
    if not images.is_dir():
        raise SiloError(f"--data must be a folder of .png images: {images}")
    if not out.is_dir():
        raise SiloError(f"output folder does not exist: {out}")
    restorer = Restorer.from_bundle(bundle, backend=backend, threads=threads,
                                    precision=precision)
    runner = restorer.runner
    task, size, resizer = runner.task, runner.manifest.image_size, runner.resizer
    sigma_y = runner.manifest.sigma_y if sigma_y is None else sigma_y
    runner.schedule(steps)  # refuse an impossible step count before restoring anything
    paths = sorted(p for p in images.iterdir() if p.suffix.lower() == ".png"
                   and p.is_file())[:limit]
    if not paths:
        raise SiloError(f"no .png images in {images}")
    outputs = OutputPlan([out / f"{task}.json", out / f"{task}-grid.png"], inputs=paths)
    degradation = get_degradation(task, resizer)
    if methods and reference is None:
        raise SiloError(f"--methods {','.join(methods)} needs the bundle's prior in PyTorch "
                        "(--model, or the embedded demo)")
    if "resample" in methods and resample_settings is None:
        from .resample import ReSampleSettings

        resample_settings = ReSampleSettings()
    restorers = {m: _reference_restorer(reference, task, m, steps or runner.steps, seed,
                                        sigma_y, baseline_weights, resample_settings)
                 for m in methods}
    per_image, rows = [], []
    truths, outputs_by_method = [], {}
    for index, path in enumerate(paths):
        x = read_image(path)
        if x.shape[-2:] != (size, size):
            raise SiloError(f"{path} is {x.shape[-1]}x{x.shape[-2]}; the bundle restores "
                            f"{size}x{size} images")
        y = quantise(make_measurement(x, task, sigma_y, index, resizer))
        # the bundle's own η at every step count, so recorded reports stay comparable
        result = restorer(y, seed=seed, eta=runner.manifest.eta, sigma_y=sigma_y, steps=steps)
        restored, seconds = result.image, result.seconds
        outputs_by_method.setdefault("silo", []).append(restored)
        simple = degradation.baseline(y, size)
        cpsnr = consistency_psnr(task, restored, y, resizer)
        row = {"image": path.name,
               "silo": {**image_metrics(restored, x), "seconds": seconds, "cpsnr": cpsnr},
               "baseline": image_metrics(simple, x), "silo_cpsnr": cpsnr}
        pictures = [y, simple, restored]
        if degradation.imposable:  # also report restore --keep-measured
            kept = degradation.keep_measured(y, restored)
            row["silo_keep_measured"] = image_metrics(kept, x)
            pictures.append(kept)
        for method, restore_with in restorers.items():
            start = time.perf_counter()
            other, extra = restore_with(y)
            other = np.clip(other, -1, 1).astype(np.float32)
            row[method] = {**image_metrics(other, x), "seconds": time.perf_counter() - start,
                           "cpsnr": consistency_psnr(task, other, y, resizer), **extra}
            pictures.append(other)
            outputs_by_method.setdefault(method, []).append(other)
        per_image.append(row)
        rows.append(pictures + [x])
        truths.append(x)
        if progress:
            progress(index, len(paths), per_image[-1])

    def mean(method, key):
        return float(np.mean([r[method][key] for r in per_image]))

    every = [m for m in (*METHODS, *methods) if m in per_image[0]]
    keys = ("psnr", "ssim", "sharpness", "seconds", "cpsnr", *RESAMPLE_COUNTS)

    report = {
        "task": task, "bundle": recorded_path(bundle), "images": recorded_path(images),
        "count": len(per_image),
        "sigma_y": sigma_y, "seed": seed, "steps": steps or runner.steps,
        "backend": runner.label,
        "baseline_weights": (None if baseline_weights is None
                             or not {"ldps", "gml-dps", "psld"} & {*methods}
                             else {"omega": baseline_weights.omega,
                                   "gamma": baseline_weights.gamma}),
        "resample_settings": (resample_settings.to_json() if "resample" in methods
                              else None),
        "baseline": degradation.baseline_name,
        "methods": every,
        "mean": {method: {k: mean(method, k) for k in keys if k in per_image[0][method]}
                 for method in every},
        "mean_silo_cpsnr": float(np.mean([r["silo_cpsnr"] for r in per_image])),
        "perceptual": _perceptual(truths, outputs_by_method, metrics_weights),
        "per_image": per_image,
    }
    text = json.dumps(report, indent=1)
    with outputs:
        outputs.stage(out / f"{task}.json", lambda path: Path(path).write_text(text))
        outputs.stage(out / f"{task}-grid.png", lambda path: _grid(rows, path))
    return report
