"""``silo-rt evaluate``: a bundle's restorations scored against a simple baseline."""

from __future__ import annotations

from pathlib import Path

import click

from ..degradations import task_names
from .group import cli
from .options import SEED, SIGMA_HELP, SIGMA_Y, STEPS, THREADS


@cli.command()
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="bundle to evaluate [default: the embedded demo's for --task]")
@click.option("--task", type=click.Choice(list(task_names())), default=None,
              help="with no --bundle: which embedded demo bundle (sr4, ip)")
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="folder of clean .png images of the bundle's size (e.g. held-out crops)")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="existing folder for TASK.json and TASK-grid.png")
@click.option("--sigma-y", type=SIGMA_Y, default=None, help=SIGMA_HELP)
@click.option("--seed", type=SEED, default=0, show_default=True, help="restoration seed")
@click.option("--threads", type=THREADS, default=None, help="ONNX Runtime threads")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="use only the first N images")
@click.option("--steps", type=STEPS, default=None,
              help="DDPM steps [default: the count the bundle was exported with]")
def evaluate(bundle, task, data, out, sigma_y, seed, threads, limit, steps):
    """Measure a bundle's restorations (PSNR, SSIM, consistency, sharpness) on clean images
    against a simple baseline: bicubic for sr, a biharmonic fill for ip."""
    from ..evaluation import evaluate_bundle

    if bundle is None:
        from ..demo import demo_bundle

        bundle = demo_bundle(task)

    def progress(i, n, row):
        click.echo(f"[{i + 1}/{n}] {row['image']}: SILO {row['silo']['psnr']:.2f} dB, "
                   f"baseline {row['baseline']['psnr']:.2f} dB", err=True)

    report = evaluate_bundle(bundle, data, out, sigma_y, seed, threads, limit, progress, steps)
    m = report["mean"]
    click.echo(f"{report['task']} on {report['count']} images ({report['steps']} steps)")
    click.echo(f"{'method':<23}{'PSNR dB':>9}{'SSIM':>8}{'sharpness':>11}")
    for key, name in (("silo", "SILO"), ("silo_keep_measured", "SILO, --keep-measured"),
                      ("baseline", report["baseline"])):
        if key not in m:
            continue
        click.echo(f"{name:<23}{m[key]['psnr']:>9.2f}{m[key]['ssim']:>8.3f}"
                   f"{m[key]['sharpness']:>11.2f}")
    click.echo(f"SILO consistency (CPSNR): {report['mean_silo_cpsnr']:.2f} dB")
