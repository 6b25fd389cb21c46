"""Side-by-side comparison pictures: measurement | restoration | extras | reference, with PSNR.

numpy + Pillow only (usable from the lean runtime). Images are ``(1, 3, H, W)`` arrays in
[-1, 1]; small images are enlarged with nearest-neighbour so pixels stay visible.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import atomic_write, psnr, to_uint8

MIN_PANEL = 256
CAPTION_HEIGHT = 22


def _panel(image, side: int):
    """An image ``(1, 3, H, W)`` in [-1, 1] or a ready Pillow picture, enlarged to ``side``."""
    from PIL import Image

    picture = image if isinstance(image, Image.Image) else Image.fromarray(to_uint8(image))
    return picture.resize((side, side), Image.NEAREST)


def caption_font():
    """Pillow's default font at 14 px (its fixed bitmap font before Pillow 10.1)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1 has one fixed-size bitmap font
        return ImageFont.load_default()


def write_comparison(path: str | Path, measurement: np.ndarray, restoration: np.ndarray,
                     reference: np.ndarray | None = None,
                     restoration_label: str = "SILO", extras=()) -> float | None:
    """Write the comparison PNG; returns the restoration's PSNR (dB) when ``reference`` is
    given, else None.

    ``extras``: ``(picture, caption)`` panels placed after the restoration, each an image
    ``(1, 3, H, W)`` in [-1, 1] or a square Pillow picture (e.g. a std heat map).
    """
    from PIL import Image, ImageDraw

    side = restoration.shape[-1]
    scale = max(1, -(-MIN_PANEL // side))
    panel_side = side * scale
    value = None if reference is None else psnr(restoration, reference)
    panels = [(measurement, f"measurement {measurement.shape[-1]}x{measurement.shape[-2]}"),
              (restoration, restoration_label if value is None
               else f"{restoration_label}, PSNR {value:.2f} dB")]
    panels.extend(extras)
    if reference is not None:
        panels.append((reference, "reference"))
    gap = 4
    canvas = Image.new("RGB", (len(panels) * (panel_side + gap) - gap,
                               panel_side + CAPTION_HEIGHT), "white")
    draw, font = ImageDraw.Draw(canvas), caption_font()
    for i, (image, caption) in enumerate(panels):
        left = i * (panel_side + gap)
        canvas.paste(_panel(image, panel_side), (left, 0))
        draw.text((left + 4, panel_side + 3), caption, fill="black", font=font)
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))
    return value
