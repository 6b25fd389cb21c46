"""``silo-rt degrade``: a measurement y = A(x) + noise from a clean image."""

from __future__ import annotations

from pathlib import Path

import click

from ..degradations import DEFAULT_SIGMA_Y
from ..errors import SiloError
from .group import cli
from .options import (
    RESIZE_TO,
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
@click.option("--size", type=RESIZE_TO, default=None,
              help="resize first: N (the longer side becomes N px, the aspect kept) or WxH "
                   "(exactly; e.g. 512x512 for the paper's square images)")
@resizer_option
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="measurement image to write (.png)")
def degrade(image, task, sigma_y, seed, size, resizer, out):
    """Make a measurement y = A(x) + noise from a clean IMAGE of any size and aspect.

    SR measurements are written at low resolution (e.g. 64x64 for sr8 on 512x512); an image
    whose sides the SR factor does not divide loses its last rows/columns first (said).
    """
    from ..degradations import get_degradation, make_measurement
    from ..images import check_outputs, image_format, read_image, write_image

    refuse_unused(f"task {task}", resizer=uses_resizer(task))
    check_outputs([out], inputs=[image])
    image_format(out)
    x = read_image(image)
    if size is not None:
        x = resize_image(x, size)
    x = _crop_to_scale(x, get_degradation(task).scale, task)
    y = make_measurement(x, task, sigma_y, seed, resizer)
    write_image(out, y)
    click.echo(f"wrote {out} ({y.shape[-1]}x{y.shape[-2]}, task {task}, sigma_y {sigma_y})")


def resize_image(x, size: tuple[str, int, int]):
    """``x`` ``(1, 3, H, W)`` resized (bicubic) as :data:`~.options.RESIZE_TO` parsed it."""
    import numpy as np
    from PIL import Image

    from ..images import to_uint8

    kind, width, height = size
    h, w = x.shape[-2:]
    if kind == "longer":
        ratio = width / max(h, w)
        width, height = max(1, round(w * ratio)), max(1, round(h * ratio))
    im = Image.fromarray(to_uint8(x)).resize((width, height), Image.BICUBIC)
    return (np.asarray(im, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1).astype(np.float32)


def _crop_to_scale(x, scale: int, task: str):
    """``x`` without the last rows/columns that a ``scale``-fold downsampling cannot use."""
    h, w = x.shape[-2:]
    ch, cw = h - h % scale, w - w % scale
    if (ch, cw) == (h, w):
        return x
    if min(ch, cw) == 0:
        raise SiloError(f"task {task} needs an image of at least {scale}x{scale} px, "
                        f"got {w}x{h}")
    click.echo(f"cropped {w}x{h} to {cw}x{ch}: {task} needs sides divisible by {scale}",
               err=True)
    return x[..., :ch, :cw]
