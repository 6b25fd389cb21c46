"""The demo's training and evaluation images: photographs shipped inside scikit-image's wheel.

scikit-image (BSD-3-Clause) bundles a few public photographs (see its ``skimage/data/README.txt``
and the docstrings of ``skimage.data``). The demo uses:

* training: ``astronaut``, ``rocket``, ``motorcycle_left``, ``motorcycle_right`` (colour) and
  ``camera``, ``brick``, ``grass``, ``gravel`` (grayscale photographs, as RGB), cut into
  overlapping 96×96 tiles at scales 1, 1/2 and 1/4 (training then takes random 75–100 %
  crops of a tile, resized to 64×64);
* held out for evaluation, never seen in training: ``chelsea`` (a cat) and ``coffee`` (a cup),
  at scale 1/2, cut into non-overlapping 64×64 crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import SiloError

TRAIN_IMAGES = ("astronaut", "rocket", "motorcycle_left", "motorcycle_right",
                "camera", "brick", "grass", "gravel")
HELDOUT_IMAGES = ("chelsea", "coffee")
TRAIN_SCALES = (1.0, 0.5, 0.25)
TILE, TILE_STRIDE = 96, 48
EVAL_SIZE, EVAL_SCALE = 64, 0.5
SOURCE_NOTE = """# Demo data

Photographs shipped inside the scikit-image wheel (`skimage.data`, scikit-image {version},
BSD-3-Clause; individual images are public domain or CC0 as listed in scikit-image's
`skimage/data/README.txt` and the `skimage.data` docstrings).

- `train/`: tiles of {train} (scales {scales}, {tile}×{tile} px, stride {stride}).
- `heldout/`: {eval_size}×{eval_size} crops of {heldout} at scale {eval_scale}; never used
  for training.

Written by `silo-rt demo-data`.
"""


def _load(name: str) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 RGB photograph from the files inside ``skimage/data``."""
    import skimage
    from PIL import Image

    folder = Path(skimage.__file__).parent / "data"
    matches = sorted(folder.glob(f"{name}.*"))
    if not matches:
        raise SiloError(f"scikit-image {skimage.__version__} does not ship {name!r}")
    with Image.open(matches[0]) as im:
        return np.asarray(im.convert("RGB"))


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.LANCZOS))


def heldout_photograph(name: str) -> np.ndarray:
    """A held-out photograph (one of :data:`HELDOUT_IMAGES`) at the scale its evaluation
    crops were cut at, ``(H, W, 3)`` uint8 (``chelsea``: 226×150, ``coffee``: 300×200)."""
    if name not in HELDOUT_IMAGES:
        raise SiloError(f"{name!r} is not a held-out photograph ({', '.join(HELDOUT_IMAGES)})")
    return _rescale(_load(name), EVAL_SCALE)


def _tiles(image: np.ndarray, size: int, stride: int):
    h, w = image.shape[:2]
    for top in range(0, h - size + 1, stride):
        for left in range(0, w - size + 1, stride):
            yield image[top:top + size, left:left + size]


def _save(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(pixels).save(path)


def prepare_demo_data(out: Path) -> dict[str, int]:
    """Write ``out/train/*.png``, ``out/heldout/*.png`` and ``out/SOURCES.md``.

    Returns the number of images written per split.
    """
    try:
        import skimage
    except ModuleNotFoundError:
        raise SiloError("the demo data come from scikit-image: pip install 'silo-rt[demo]'") \
            from None
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise SiloError(f"output folder is not empty: {out}")
    counts = {"train": 0, "heldout": 0}
    for split in counts:
        (out / split).mkdir(parents=True, exist_ok=True)
    for name in TRAIN_IMAGES:
        photo = _load(name)
        for scale in TRAIN_SCALES:
            for i, tile in enumerate(_tiles(_rescale(photo, scale), TILE, TILE_STRIDE)):
                _save(out / "train" / f"{name}_s{scale:g}_{i:03d}.png", tile)
                counts["train"] += 1
    for name in HELDOUT_IMAGES:
        photo = _rescale(_load(name), EVAL_SCALE)
        for i, crop in enumerate(_tiles(photo, EVAL_SIZE, EVAL_SIZE)):
            _save(out / "heldout" / f"{name}_{i:02d}.png", crop)
            counts["heldout"] += 1
    (out / "SOURCES.md").write_text(SOURCE_NOTE.format(
        version=skimage.__version__, train=", ".join(TRAIN_IMAGES),
        scales=", ".join(f"{s:g}" for s in TRAIN_SCALES), tile=TILE, stride=TILE_STRIDE,
        eval_size=EVAL_SIZE, heldout=", ".join(HELDOUT_IMAGES), eval_scale=EVAL_SCALE))
    return counts
