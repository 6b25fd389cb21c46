"""``silo-rt tune``: the best η for a step budget, found on *training* images.

For each image of the folder it is given (and only those), the measurement is made exactly as
``silo-rt evaluate`` makes it (seeded by the image's index, 8-bit quantised), then restored
from the bundle with every η of a grid; the η with the best mean PSNR against the image wins.
Images that are not the bundle's size are centre-cropped to a square and resized to it
(Lanczos). The default grid is geometric around the bundle's η (:func:`eta_grid`): the best η
measured on the demo stays within a factor of two of one value at every step count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import SiloError
from .step_budget import TuningEntry

DEFAULT_FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""The grid: these multiples of the bundle's η (clipped to [0, 100])."""


def eta_grid(center: float, factors=DEFAULT_FACTORS) -> list[float]:
    """Distinct η values ``center · f`` (rounded to 4 significant digits), in [0, 100]."""
    values = sorted({float(f"{min(center * f, 100.0):.4g}") for f in factors})
    return [v for v in values if v > 0.0] or [center]


def training_images(folder: Path, count: int) -> list[Path]:
    """``count`` images of ``folder`` spread evenly over its sorted file list (so tiles of
    several photographs are used), or all of them if there are fewer."""
    from .datasets import IMAGE_SUFFIXES

    folder = Path(folder)
    if not folder.is_dir():
        raise SiloError(f"--data must be a folder of training images: {folder}")
    paths = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise SiloError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    if len(paths) <= count:
        return paths
    picks = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[i] for i in picks]


def load_square(path: Path, size: int) -> np.ndarray:
    """``path`` centre-cropped to a square and resized to ``size`` (Lanczos):
    ``(1, 3, size, size)`` float32 in [-1, 1]."""
    from PIL import Image

    from .images import read_image

    x = read_image(path)
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    pixels = ((x[0, :, top:top + side, left:left + side].transpose(1, 2, 0) + 1) * 127.5)
    im = Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8))
    im = im.resize((size, size), Image.LANCZOS)
    return (np.asarray(im, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1.0)


@dataclass(frozen=True)
class TuningProblem:
    """The training images of a tuning run as (name, ground truth, measurement)."""

    names: list[str]
    truths: list[np.ndarray]
    measurements: list[np.ndarray]


class ReferenceRestorer:
    """The PyTorch reference (prior + operator) behind the interface :func:`tune_eta` uses
    of a :class:`~silo_rt.runtime.BundleRunner`: ``task``, ``resizer``, ``image_size``,
    ``restore(y, seed, eta, sigma_y, steps=, sampler=)``.

    Args:
        prior, operator, config: as :func:`silo_rt.operators.load_operator` returns them.
        prompt: the text condition (the operator makers' for their files).
    """

    def __init__(self, prior, operator, config, prompt: str = ""):
        self.prior, self.operator, self.config = prior, operator, config
        self.task, self.resizer, self.image_size = config.task, config.resizer, config.image_size
        self.prompt = prompt

    def restore(self, y: np.ndarray, seed: int, eta: float, sigma_y: float | None = None, *,
                steps: int, sampler: str) -> np.ndarray:
        import torch

        from .degradations import DEFAULT_SIGMA_Y
        from .sampler import SamplingOptions, restore

        options = SamplingOptions(task=self.task, steps=steps, eta=eta, seed=seed,
                                  prompt=self.prompt, sampler=sampler,
                                  sigma_y=DEFAULT_SIGMA_Y if sigma_y is None else sigma_y)
        return restore(self.prior, self.operator, torch.from_numpy(y), options).numpy()


def make_problem(runner, paths: list[Path], sigma_y: float) -> TuningProblem:
    """Ground truths at the runner's image size and their measurements, as ``evaluate``
    makes them (image index as the noise seed, 8-bit quantised). ``runner``: a
    :class:`~silo_rt.runtime.BundleRunner` or a :class:`ReferenceRestorer`."""
    from .degradations import make_measurement
    from .evaluation import quantise

    truths = [load_square(p, runner.image_size) for p in paths]
    ys = [quantise(make_measurement(x, runner.task, sigma_y, i, runner.resizer))
          for i, x in enumerate(truths)]
    return TuningProblem([p.name for p in paths], truths, ys)


def tune_eta(runner, problem: TuningProblem, steps: int, sampler: str, etas: list[float],
             seed: int = 0, sigma_y: float | None = None,
             progress: Callable[[float, float], None] | None = None) -> TuningEntry:
    """Restore every problem image with each η of ``etas`` (``runner``: a bundle's
    :class:`~silo_rt.runtime.BundleRunner` or a :class:`ReferenceRestorer`); the entry of
    the best mean PSNR.

    ``progress(eta, mean_psnr)`` is called after each η.
    """
    from .images import psnr

    grid = []
    for eta in etas:
        scores = [psnr(runner.restore(y, seed, eta, sigma_y, steps=steps, sampler=sampler), x)
                  for x, y in zip(problem.truths, problem.measurements)]
        grid.append([float(eta), float(np.mean(scores))])
        if progress is not None:
            progress(*grid[-1])
    best_eta, best_psnr = max(grid, key=lambda pair: pair[1])
    return TuningEntry(steps, sampler, best_eta, best_psnr, list(problem.names), grid, seed)
