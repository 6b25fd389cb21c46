"""Reading and writing images as float arrays in [-1, 1] (numpy + Pillow only).

Arrays are ``(1, 3, H, W)`` float32 (NCHW, batch of one), values in [-1, 1].
Every write goes to a temporary file beside the target and is renamed into place, so an
interrupted run never leaves a partial image.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import SiloError, first_line

MAX_PIXELS = 64 * 1024 * 1024
"""Largest image read (64 MP); a larger header is refused before any pixel is decoded."""

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                 ".tiff": "TIFF", ".webp": "WEBP"}


@contextmanager
def _opened(path: Path, what: str):
    """Pillow's image of ``path`` with its size checked; any failure is one SiloError."""
    import warnings

    from PIL import Image

    if not path.is_file():
        raise SiloError(f"{what} not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                _check_pixels(path, im.size, what)
                yield im
    except SiloError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise SiloError(f"{what} {path} is too large (more than {MAX_PIXELS} pixels)") from None
    except Exception as exc:  # Pillow raises many types for a malformed file
        raise SiloError(f"cannot read {what} {path}: {first_line(exc)}") from None


def decode_rgb(path: str | os.PathLike, what: str = "image") -> np.ndarray:
    """Decode an image file as ``(H, W, 3)`` float32 RGB in [0, 255] (8-bit scale).

    16-bit images are scaled (65535 → 255), not clipped. Images over :data:`MAX_PIXELS`
    (refused from the header, before decoding) and every decoding failure raise one
    :class:`SiloError` naming the file.
    """
    with _opened(Path(path), what) as im:
        im.load()
        return _to_rgb(im)


def check_header(path: str | os.PathLike, what: str = "image") -> None:
    """Open ``path``'s header only: refuse a non-image or one over :data:`MAX_PIXELS`."""
    with _opened(Path(path), what):
        pass


def _check_pixels(path: Path, size: tuple[int, int], what: str) -> None:
    if size[0] * size[1] > MAX_PIXELS or min(size) < 1:
        raise SiloError(f"{what} {path} is {size[0]}x{size[1]}; images of 1 to {MAX_PIXELS} "
                        "pixels are read")


def _to_rgb(im) -> np.ndarray:
    """A loaded Pillow image → ``(H, W, 3)`` float32 in [0, 255]."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # Pillow's convert("RGB") clips 16-bit samples at 255; scale them instead.
        grey = np.asarray(im, dtype=np.float64) / 257.0
        return np.repeat(np.clip(grey, 0.0, 255.0)[..., None], 3, axis=-1).astype(np.float32)
    return np.asarray(im.convert("RGB"), dtype=np.float32)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Load an image file as a ``(1, 3, H, W)`` float32 array in [-1, 1]."""
    rgb = decode_rgb(path)
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
    fmt = image_format(path)
    pixels = Image.fromarray(to_uint8(image))
    return atomic_write(path, lambda tmp: pixels.save(tmp, format=fmt))


def image_format(path: Path) -> str:
    """Pillow's format name for an output image path, from its suffix."""
    fmt = IMAGE_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise SiloError(f"unsupported output image type {Path(path).suffix!r} for {path}; "
                        "use .png")
    return fmt


def check_outputs(outputs, inputs=()) -> list[Path]:
    """Refuse, before any work, outputs that could not be written or would destroy an input.

    Each output's folder must exist and be writable, the output must not be a folder, not
    be one of ``inputs`` and not be named twice. ``None`` entries are skipped. Returns the
    outputs as paths.
    """
    paths = [Path(p) for p in outputs if p is not None]
    sources = {Path(p).resolve() for p in inputs if p is not None}
    seen = set()
    for path in paths:
        resolved = path.resolve()
        folder = resolved.parent
        if not folder.is_dir():
            raise SiloError(f"output folder does not exist: {path.parent}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise SiloError(f"output folder is not writable: {path.parent}")
        if path.is_dir():
            raise SiloError(f"output {path} is a folder; give a file name")
        if resolved in sources:
            raise SiloError(f"output {path} is also an input; refusing to overwrite it")
        if resolved in seen:
            raise SiloError(f"output {path} is given twice")
        seen.add(resolved)
    return paths


class OutputPlan:
    """All outputs of a command, checked up front and committed together at the end.

    ``stage(path, write)`` calls ``write(staged)`` on a hidden name beside ``path`` (same
    suffix, so writers pick the format from it); leaving the ``with`` block normally renames
    every staged file onto its target, leaving it by an exception (Ctrl-C included) removes
    them, so a failing command replaces nothing.
    """

    def __init__(self, outputs, inputs=()):
        self.targets = check_outputs(outputs, inputs)
        self._staged: list[tuple[Path, Path]] = []

    def stage(self, path, write) -> None:
        path = Path(path)
        if path.resolve() not in {t.resolve() for t in self.targets}:
            raise ValueError(f"{path} is not one of the planned outputs")
        staged = path.with_name(f".{path.stem}.{os.getpid()}.{len(self._staged)}.staged"
                                f"{path.suffix}")
        self._staged.append((staged, path))
        write(staged)

    def __enter__(self) -> OutputPlan:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for staged, target in self._staged:
                os.replace(staged, target)
        for staged, _ in self._staged:
            staged.unlink(missing_ok=True)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between two images in [-1, 1] (peak-to-peak range 2)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(4.0 / mse)
