"""``restore --samples K``: K posterior samples, their mean (OUT) and the std heat map."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from ..errors import SiloError
from .progress import open_bar
from .restore_backends import announced_eta, open_restorer

if TYPE_CHECKING:
    from .restore_request import RestoreRequest


def restore_samples(request: RestoreRequest, *, outputs, sample_files, std_path) -> None:
    """Draw ``request.samples`` restorations from the request's bundle and write them, their
    mean and their std map (and the comparison) through ``outputs``, all or nothing."""
    from ..images import read_image

    if request.bundle is None:
        raise SiloError("--samples runs a bundle (--bundle or the embedded demo), not the "
                        "PyTorch reference")
    y = read_image(request.measurement)
    truth = None if request.reference is None else read_image(request.reference)
    restorer = open_restorer(request)
    runner = restorer.runner
    runner.check_measurement(y)
    scale = runner.degradation.scale
    height, width = y.shape[-2] * scale, y.shape[-1] * scale
    if truth is not None and truth.shape[-2:] != (height, width):
        raise SiloError(f"--reference is {truth.shape[-1]}x{truth.shape[-2]}, the restoration "
                        f"{width}x{height}")
    drawn = _draw(request, restorer=restorer, y=y)
    _write_and_report(request, runner=runner, y=y, truth=truth, drawn=drawn, outputs=outputs,
                      sample_files=sample_files, std_path=std_path)


def _draw(request: RestoreRequest, *, restorer, y):
    """The K samples ``(K, 1, 3, H, W)``, with a progress bar over samples."""
    bar = open_bar(request.samples, f"SILO {restorer.task} [{restorer.runner.backend}]",
                   "sample")
    done = [0]

    def advance(count, total):
        bar.update(count - done[0])
        done[0] = count

    try:
        with restorer:
            result = restorer(y, steps=request.steps, eta=announced_eta(request, restorer),
                              seed=request.seed, samples=request.samples,
                              keep_measured=request.keep_measured, sampler=request.sampler,
                              sigma_y=request.sigma_y, overlap=request.tile_overlap,
                              on_sample=advance)
    finally:
        bar.close()
    return result.samples if result.samples is not None else result.image[None]


def _write_and_report(request: RestoreRequest, *, runner, y, truth, drawn, outputs,
                      sample_files, std_path) -> None:
    """Write the mean, the samples, the std map (and the comparison); print their spread."""
    import numpy as np

    from ..images import psnr, write_image
    from ..posterior import heatmap, spread, summarise, write_heatmap

    k, out, compare_path = request.samples, request.out, request.compare_path
    mean, std = summarise(drawn)
    numbers = spread(std)
    with outputs:
        outputs.stage(out, lambda path: write_image(path, mean))
        for path, sample in zip(sample_files, drawn):
            outputs.stage(path, lambda staged, sample=sample: write_image(staged, sample))
        outputs.stage(std_path, lambda path: write_heatmap(path, std[0]))
        if compare_path is not None:
            from PIL import Image

            from ..compare import write_comparison

            extras = [(Image.fromarray(heatmap(std[0])),
                       f"std map (max {numbers['max_std']:.3f})")]
            outputs.stage(compare_path, lambda path: write_comparison(
                path, y, mean, truth, f"mean of {k}", extras))
    click.echo(f"wrote {out} (mean of {k} samples, {mean.shape[-1]}x{mean.shape[-2]}, backend "
               f"{runner.label}), {k} samples and {std_path}")
    click.echo(f"spread over {k} samples: mean std {numbers['mean_std']:.4f}, max std "
               f"{numbers['max_std']:.4f} ([-1, 1] units)")
    if truth is not None:
        single = [psnr(sample, truth) for sample in drawn]
        click.echo(f"PSNR against {request.reference}: mean of {k} {psnr(mean, truth):.2f} dB, "
                   f"single samples {np.mean(single):.2f} dB (min {np.min(single):.2f}, max "
                   f"{np.max(single):.2f})")
    if compare_path is not None:
        click.echo(f"wrote {compare_path}")
