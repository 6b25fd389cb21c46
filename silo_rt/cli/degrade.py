"""``silo-rt degrade``: a measurement y = A(x) + noise from a clean image."""

from __future__ import annotations

from pathlib import Path

import click

from ..degradations import DEFAULT_SIGMA_Y
from ..errors import SiloError
from .group import cli
from .options import (
    IMAGE_SIZE,
    SEED,
    SIGMA_HELP,
    SIGMA_Y,
    refuse_unused,
    resizer_option,
    task_option,
    uses_resizer,
)


@cli.command()
@click.argument("image", type=click.Path(path_type=Path))
@task_option
@click.option("--sigma-y", type=SIGMA_Y, default=DEFAULT_SIGMA_Y, show_default=False,
              help=SIGMA_HELP)
@click.option("--seed", type=SEED, default=0, show_default=True, help="noise seed")
@click.option("--size", type=IMAGE_SIZE, default=None,
              help="centre-crop to a square and resize to SIZE px first (e.g. 512)")
@resizer_option
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="measurement image to write (.png)")
def degrade(image, task, sigma_y, seed, size, resizer, out):
    """Make a measurement y = A(x) + noise from a clean IMAGE.

    SR measurements are written at low resolution (e.g. 64x64 for sr8 on 512x512).
    """
    from ..degradations import make_measurement
    from ..images import check_outputs, image_format, read_image, write_image

    refuse_unused(f"task {task}", resizer=uses_resizer(task))
    check_outputs([out], inputs=[image])
    image_format(out)
    x = read_image(image)
    if size is not None:
        x = _square_resize(x, size)
    side = x.shape[-1]
    if x.shape[-2] != side:
        raise SiloError(f"{image} is {x.shape[-1]}x{x.shape[-2]}, not square; pass --size")
    y = make_measurement(x, task, sigma_y, seed, resizer)
    write_image(out, y)
    click.echo(f"wrote {out} ({y.shape[-1]}x{y.shape[-2]}, task {task}, sigma_y {sigma_y})")


def _square_resize(x, size: int):
    """Centre-crop ``x`` to a square and resize it to ``size`` px (bicubic)."""
    import numpy as np
    from PIL import Image

    from ..images import to_uint8

    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(to_uint8(x[..., top:top + s, left:left + s]))
    im = im.resize((size, size), Image.BICUBIC)
    return (np.asarray(im, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1).astype(np.float32)
