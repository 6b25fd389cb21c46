"""Several posterior samples of one measurement: their mean, a per-pixel std map, a heat map.

SILO samples the posterior p(x | y): one sample's expected squared error is twice that of the
posterior mean, and the samples' spread shows where the measurement leaves the image
undetermined. numpy + Pillow only (usable from the lean runtime).

Sample ``i`` (from 0) is drawn with :func:`sample_seed` ``(seed, i)``; sample 0 uses ``seed``
itself, so ``--samples 1`` restores exactly what a plain ``restore --seed`` does. A bundle
with batch ``B > 1`` draws ``B`` samples per call (the measurement repeated), seeded by
``sample_seed(seed, call)``: there the samples depend on ``B``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .images import atomic_write

MAX_SAMPLES = 64

# A perceptually ordered dark-to-bright table ("inferno"-like anchors), linearly interpolated.
_ANCHORS = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
                     [245, 125, 21], [250, 193, 39], [252, 255, 164]], np.float64)
COLORMAP = np.stack([np.interp(np.linspace(0, len(_ANCHORS) - 1, 256),
                               np.arange(len(_ANCHORS)), _ANCHORS[:, c])
                     for c in range(3)], axis=1).round().astype(np.uint8)
"""``(256, 3)`` uint8 RGB: index 0 is no spread (black), 255 the largest (pale yellow)."""


def sample_seed(seed: int, index: int) -> int:
    """Seed of sample ``index``: ``seed`` for 0, else ``sha256(f"{seed}:sample:{index}")``
    mod 2**63 (stable everywhere, in the CLI's seed range)."""
    if index == 0:
        return int(seed)
    digest = hashlib.sha256(f"{int(seed)}:sample:{index}".encode()).hexdigest()
    return int(digest, 16) % 2**63


def draw_samples(runner, y: np.ndarray, k: int, seed: int = 0, eta: float | None = None,
                 sigma_y: float | None = None, steps: int | None = None,
                 keep_measured: bool = False, callback=None,
                 sampler: str = "ddpm", overlap: int | None = None) -> np.ndarray:
    """``k`` restorations of ``y`` ``(1, 3, h, w)``: ``(k, 1, 3, H, W)`` float32 in [-1, 1].

    ``sampler``: ``ddpm`` or ``ddim`` (deterministic given the seed; the samples differ by
    their starting noise only). ``overlap``: latent pixels shared by tiles when ``y`` is not
    the bundle's size (None: the runner's default).

    ``runner`` is a :class:`~silo_rt.runtime.BundleRunner`; ``callback(done, k)`` after each
    call (one sample per call, or ``B`` for a batch-``B`` bundle).
    """
    if not 1 <= k <= MAX_SAMPLES:
        raise ValueError(f"k must be in [1, {MAX_SAMPLES}], got {k}")
    batch = runner.manifest.batch
    tiled = np.concatenate([y] * batch) if batch > 1 else y
    tiling = {} if overlap is None else {"overlap": overlap}
    samples: list[np.ndarray] = []
    call = 0
    while len(samples) < k:
        x = runner.restore(tiled, sample_seed(seed, call), eta, sigma_y, steps=steps,
                           keep_measured=keep_measured, sampler=sampler, **tiling)
        samples.extend(x[i:i + 1] for i in range(x.shape[0]))
        call += 1
        if callback is not None:
            callback(min(len(samples), k), k)
    return np.stack(samples[:k]).astype(np.float32)


def summarise(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``samples`` ``(K, B, 3, H, W)`` → ``(mean (B, 3, H, W), std (B, H, W))``.

    ``std``: each pixel's standard deviation over the samples (population, ``ddof = 0``, in
    [-1, 1] image units), per channel, averaged over the 3 channels. Zero for ``K = 1``.
    """
    samples = np.asarray(samples, np.float64)
    return (samples.mean(axis=0).astype(np.float32),
            samples.std(axis=0).mean(axis=1).astype(np.float32))


def spread(std: np.ndarray) -> dict[str, float]:
    """Summary of a std map (image units): ``{"mean_std", "max_std"}``."""
    return {"mean_std": float(np.mean(std)), "max_std": float(np.max(std))}


def heatmap(std: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """A std map ``(H, W)`` → ``(H, W, 3)`` uint8 RGB through :data:`COLORMAP`, 0 → black,
    ``vmax`` (default the map's maximum) → the brightest colour."""
    std = np.asarray(std, np.float64)
    top = float(std.max()) if vmax is None else float(vmax)
    index = np.zeros(std.shape, np.int64) if top <= 0 else \
        np.clip(np.round(std / top * 255), 0, 255).astype(np.int64)
    return COLORMAP[index]


def heatmap_picture(std: np.ndarray, min_side: int = 256, vmax: float | None = None):
    """A Pillow picture: the heat map enlarged (nearest) to at least ``min_side`` px with a
    vertical scale bar to its right labelled 0 … ``vmax`` (std in [-1, 1] units)."""
    from PIL import Image, ImageDraw

    from .compare import caption_font

    std = np.asarray(std, np.float64)
    top = float(std.max()) if vmax is None else float(vmax)
    height, width = std.shape
    scale = max(1, -(-min_side // max(height, width)))
    image = Image.fromarray(heatmap(std, top)).resize((width * scale, height * scale),
                                                      Image.NEAREST)
    bar_width, label_width, gap = 16, 64, 8
    canvas = Image.new("RGB", (image.width + gap + bar_width + label_width, image.height),
                       "white")
    canvas.paste(image, (0, 0))
    ramp = COLORMAP[np.linspace(255, 0, image.height).round().astype(np.int64)]
    bar = np.repeat(ramp[:, None, :], bar_width, axis=1)
    left = image.width + gap
    canvas.paste(Image.fromarray(bar), (left, 0))
    draw, font = ImageDraw.Draw(canvas), caption_font()
    draw.text((left + bar_width + 4, 0), f"{top:.3f}", fill="black", font=font)
    draw.text((left + bar_width + 4, image.height // 2 - 8), "std", fill="black", font=font)
    draw.text((left + bar_width + 4, image.height - 16), "0", fill="black", font=font)
    return canvas


def write_heatmap(path: str | Path, std: np.ndarray, vmax: float | None = None) -> Path:
    """Write :func:`heatmap_picture` of ``std`` ``(H, W)`` as a PNG (atomically)."""
    picture = heatmap_picture(std, vmax=vmax)
    return atomic_write(path, lambda tmp: picture.save(tmp, format="PNG"))


def sample_paths(out: str | Path, k: int) -> tuple[list[Path], Path]:
    """``restore --samples K --out OUT``'s extra files: ``OUT-stem.sample{1..K}.png`` and
    ``OUT-stem.std.png`` beside ``OUT`` (which holds the mean)."""
    out = Path(out)
    return ([out.with_name(f"{out.stem}.sample{i + 1}.png") for i in range(k)],
            out.with_name(f"{out.stem}.std.png"))
