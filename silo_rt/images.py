"""Reading and writing images as float arrays in [-1, 1] (numpy + Pillow only).

Arrays are ``(1, 3, H, W)`` float32 (NCHW, batch of one), values in [-1, 1].
Every write goes to a temporary file beside the target and is renamed into place, so an
interrupted run never leaves a partial image.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import SiloError


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Load an RGB image file as a ``(1, 3, H, W)`` float32 array in [-1, 1]."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise SiloError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise SiloError(f"cannot read image {path}: {exc}") from None
    return (rgb.transpose(2, 0, 1)[None] / 127.5 - 1.0).astype(np.float32)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """``(1, 3, H, W)`` or ``(3, H, W)`` in [-1, 1] → ``(H, W, 3)`` uint8 (values clipped)."""
    arr = np.asarray(image, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr[0]
    arr = np.clip((arr + 1.0) * 127.5, 0, 255).round().astype(np.uint8)
    return arr.transpose(1, 2, 0)


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The temporary file lives in the target's folder (same file system, so the rename is
    atomic) and is removed if ``write`` fails.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise SiloError(f"output folder does not exist: {path.parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_image(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Save a ``(1, 3, H, W)`` array in [-1, 1] as an 8-bit RGB image; format from suffix."""
    from PIL import Image

    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF", ".webp": "WEBP"}.get(path.suffix.lower())
    if fmt is None:
        raise SiloError(f"unsupported output image type {path.suffix!r} for {path}; use .png")
    pixels = Image.fromarray(to_uint8(image))
    return atomic_write(path, lambda tmp: pixels.save(tmp, format=fmt))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two images in [-1, 1] (peak-to-peak range 2)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(4.0 / mse)
