"""``silo-rt evaluate``: a bundle's restorations scored against a simple baseline."""

from __future__ import annotations

from pathlib import Path

import click

from ..backends import AUTO, RUNNER_BACKENDS
from ..degradations import task_names
from .group import cli
from .options import SEED, SIGMA_HELP, SIGMA_Y, STEPS, THREADS, FiniteFloat, refuse_unused


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
@click.option("--threads", type=THREADS, default=None, help="ONNX Runtime / OpenVINO threads")
@click.option("--backend", type=click.Choice((AUTO, *RUNNER_BACKENDS)), default="ort",
              show_default=True, help="how the bundle runs (as restore --backend)")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="the bundle step's precision (as restore --precision)")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="use only the first N images")
@click.option("--steps", type=STEPS, default=None,
              help="DDPM steps [default: the count the bundle was exported with]")
@click.option("--methods", default="silo", show_default=True,
              help="comma-separated: silo (the bundle), and on the same prior, steps and seeds "
                   "through PyTorch: silo-torch, ldps, gml-dps, psld, resample (a baseline adds "
                   "silo-torch, for a like-for-like time). Needs --model/--operator, or the "
                   "embedded demo (rebuilt in PyTorch from its bundles)")
@click.option("--omega", type=FiniteFloat(0, 1e4), default=0.1, show_default=True,
              help="LDPS/GML-DPS/PSLD step size on the measurement term (PSLD's code: 0.1)")
@click.option("--gamma", type=FiniteFloat(0, 1e4), default=0.01, show_default=True,
              help="GML-DPS/PSLD step size on the gluing term (PSLD's code: 0.01)")
@click.option("--resample-gamma", type=FiniteFloat(0, 1e6, min_open=True), default=40.0,
              show_default=True,
              help="ReSample: gamma scaling its resampling variance (the authors' code: 40, "
                   "'change for each task')")
@click.option("--resample-eps", type=FiniteFloat(0, 1), default=1e-3, show_default=True,
              help="ReSample: its consistency optimisations stop once the mean squared "
                   "residual is below eps^2 (the authors' code: 1e-3; tune to the noise level)")
@click.option("--resample-latent-iterations", type=click.IntRange(1, 100000), default=500,
              show_default=True,
              help="ReSample: most AdamW iterations of one latent-space consistency step "
                   "(the authors' code: 500; their note: 200 for inpainting)")
@click.option("--metrics-weights", type=click.Path(path_type=Path, file_okay=False),
              default=None,
              help="folder holding the Inception-v3 weights for FID/KID "
                   "(weights-inception-2015-12-05-6726825d.pth; else the torch hub cache is "
                   "searched; nothing is downloaded)")
@click.option("--model", default=None,
              help="the bundle's prior (diffusers folder or hub id) for --methods")
@click.option("--operator", "operator_path", type=click.Path(path_type=Path), default=None,
              help="the bundle's operator for --methods")
def evaluate(bundle, task, data, out, sigma_y, seed, threads, backend, precision, limit, steps,
             methods, omega, gamma, resample_gamma, resample_eps, resample_latent_iterations,
             metrics_weights, model, operator_path):
    """Measure a bundle's restorations (PSNR, SSIM, consistency, sharpness, seconds) on clean
    images against a simple baseline (bicubic for sr, a biharmonic fill for ip) and, with
    --methods, against LDPS, GML-DPS, PSLD and ReSample on the same prior."""
    from ..baselines import BASELINES, BaselineWeights
    from ..datasets import check_output_folder
    from ..evaluation import evaluate_bundle, parse_methods
    from ..resample import ReSampleSettings

    chosen = parse_methods(methods)
    refuse_unused(f"--methods {methods}", omega=bool({*BASELINES} & {*chosen}),
                  gamma=bool({"gml-dps", "psld"} & {*chosen}),
                  **dict.fromkeys(("resample_gamma", "resample_eps",
                                   "resample_latent_iterations"), "resample" in chosen))
    if data.is_dir():
        check_output_folder(out, data)
    is_demo = bundle is None
    if bundle is None:
        from ..demo import demo_bundle

        bundle = demo_bundle(task)
    reference = _reference(bundle, is_demo, model, operator_path) if chosen else None

    def progress(i, n, row):
        click.echo(f"[{i + 1}/{n}] {row['image']}: SILO {row['silo']['psnr']:.2f} dB, "
                   f"baseline {row['baseline']['psnr']:.2f} dB", err=True)

    report = evaluate_bundle(bundle, data, out, sigma_y, seed, threads, limit, progress, steps,
                             methods=chosen, reference=reference,
                             baseline_weights=BaselineWeights(omega, gamma),
                             metrics_weights=metrics_weights, backend=backend,
                             precision=precision,
                             resample_settings=ReSampleSettings(
                                 gamma=resample_gamma, eps=resample_eps,
                                 latent_iterations=resample_latent_iterations))
    m = report["mean"]
    click.echo(f"{report['task']} on {report['count']} images ({report['steps']} steps, "
               f"backend {report['backend']})")
    click.echo(f"{'method':<23}{'PSNR dB':>9}{'SSIM':>8}{'sharpness':>11}{'CPSNR':>8}"
               f"{'s/image':>9}")
    names = {"silo": "SILO", "silo_keep_measured": "SILO, --keep-measured",
             "baseline": report["baseline"], "silo-torch": "SILO (PyTorch)",
             "ldps": "LDPS", "gml-dps": "GML-DPS", "psld": "PSLD", "resample": "ReSample"}
    for key in report["methods"]:
        row = m[key]
        cpsnr = f"{row['cpsnr']:>8.2f}" if "cpsnr" in row else f"{'':>8}"
        seconds = f"{row['seconds']:>9.2f}" if "seconds" in row else ""
        click.echo(f"{names[key]:<23}{row['psnr']:>9.2f}{row['ssim']:>8.3f}"
                   f"{row['sharpness']:>11.2f}{cpsnr}{seconds}")
    if "resample" in m:
        r = m["resample"]
        click.echo(f"ReSample per image: {r['consistency_steps']:.1f} hard-consistency steps, "
                   f"{r['pixel_iterations']:.0f} pixel-space + {r['latent_iterations']:.0f} "
                   "latent-space optimiser iterations")
    click.echo(f"SILO consistency (CPSNR): {report['mean_silo_cpsnr']:.2f} dB")
    perceptual = report["perceptual"]
    if "unavailable" in perceptual:
        click.echo(f"perceptual: unavailable: {perceptual['unavailable']}")
    else:
        for method, scores in perceptual.items():
            click.echo(f"perceptual: {names[method]}: FID {scores['fid']:.2f}, "
                       f"KID {scores['kid']:.4f}")


def _reference(bundle: Path, is_demo: bool, model, operator_path):
    """``(prior, operator)`` of ``bundle`` in PyTorch: the embedded demo's rebuilt from its
    bundles, or --model/--operator (checked against the bundle's prior fingerprint)."""
    from ..bundle_format import load_manifest
    from ..errors import SiloError

    manifest = load_manifest(bundle, verify=False)
    if is_demo and model is None:
        from ..demo.torch_prior import rebuild_demo

        click.echo("rebuilding the demo prior in PyTorch from its bundles…", err=True)
        prior, operator, _ = rebuild_demo(manifest.task)
        return prior, operator
    if model is None or operator_path is None:
        raise SiloError("--methods beyond silo need the bundle's --model and --operator")
    from ..operators import load_operator
    from ..prior import load_prior

    prior = load_prior(model)
    if prior.fingerprint() != manifest.prior.get("fingerprint"):
        raise SiloError(f"--model {model} is not the prior bundle {bundle} was exported from")
    operator, _ = load_operator(operator_path, prior, manifest.task, None,
                                manifest.image_size)
    return prior, operator
