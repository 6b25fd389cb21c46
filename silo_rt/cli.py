"""The ``silo-rt`` command line: degrade, train, export, restore, bench.

Every failure ends in exactly one ``error: …`` line on stderr (click's usage errors too):
exit status 2 for a mistake, 1 for a failed check, 130 for Ctrl-C. Numeric options are
range-checked once, here (ranges in ``--help``). A command checks all its outputs before any
work (folder exists and is writable, not a folder, not an input) and writes them under
temporary names renamed together at the end, so a failed command replaces nothing.
Heavy libraries are imported inside each command.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from .errors import SiloError
from .resize import DEFAULT_RESIZER, RESIZERS
from .tasks import DEFAULT_SIGMA_Y, TASKS

TASK_HELP = "degradation: " + "; ".join(f"{t.name} = {t.description}" for t in TASKS.values())
SIGMA_HELP = ("measurement noise std in the [-1, 1] image range (the paper's sigma_y = 0.01 "
              f"for [0, 1] images is 0.02 here)  [default: {DEFAULT_SIGMA_Y}]")
MODEL_HELP = ("latent diffusion prior: a local diffusers folder, a hub id (org/name), or a "
              "built-in random-weight model for tests: tiny, small, sd15-random")

MAX_SEED = 2**63 - 1
MAX_SAMPLES = 64


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite (click's FloatRange lets NaN through)."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


SIGMA_Y = FiniteFloat(0.0, 1.0, max_open=True)
ETA = FiniteFloat(0.0, 100.0)
CFG = FiniteFloat(1.0, 50.0)
SEED = click.IntRange(0, MAX_SEED)
STEPS = click.IntRange(1, 1000)
IMAGE_SIZE = click.IntRange(8, 4096)
THREADS = click.IntRange(1, 1024)
LEARNING_RATE = FiniteFloat(0.0, 1.0, min_open=True)

pt_arch_option = click.option("--arch", type=click.Choice(["cnn", "readout"]), default=None,
                              help="architecture of a plain .pt operator")
task_option = click.option("--task", required=True, type=click.Choice(list(TASKS)),
                           help=TASK_HELP)
resizer_option = click.option(
    "--resizer", type=click.Choice(list(RESIZERS)), default=DEFAULT_RESIZER, show_default=True,
    help="SR measurement model: dps = DPS's antialiased cubic resizer with symmetric borders "
         "(the paper's), torch-bicubic = F.interpolate(bicubic, antialias=True)")
time_input_option = click.option(
    "--time-input", type=click.Choice(["unet", "none"]), default=None,
    help="what a readout operator's time projection receives: unet = the UNet's timestep "
         "embedding (the paper), none = nothing (how the authors' code samples with their "
         "released readout files)  [default: as the operator file records]")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="silo-rt")
def cli():
    """SILO image restoration with a latent diffusion prior and a learned latent operator.

    Typical flow: `degrade` a clean image into a measurement, `train` an operator H_theta for
    the task, `export` a bundle, and `restore` the measurement (from a bundle with ONNX
    Runtime, or with the PyTorch reference).
    """


_open_bars: list = []  # progress bars drawn now; an error closes them before its line


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)
    _open_bars.append(bar)

    def callback(i, t, z, loss):
        bar.update(1)
        if i % 10 == 0 or i == total - 1:
            bar.set_postfix(loss=f"{loss:.3f}")
        if i == total - 1:
            _open_bars.remove(bar)
            bar.close()

    return callback


def _bar(total: int, desc: str, unit: str, initial: int = 0, disable: bool = False):
    """A tqdm bar on stderr that an error closes first; ``close()`` unregisters it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
               disable=disable)
    _open_bars.append(bar)
    close = bar.close

    def close_once():
        if bar in _open_bars:
            _open_bars.remove(bar)
        close()

    bar.close = close_once
    return bar


def _close_bars() -> None:
    """End every open bar's line (and stop it being redrawn) before an error is printed."""
    while _open_bars:
        _open_bars.pop().close()


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
    from .degradations import make_measurement
    from .images import check_outputs, image_format, read_image, write_image

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
    import numpy as np
    from PIL import Image

    from .images import to_uint8

    h, w = x.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    im = Image.fromarray(to_uint8(x[..., top:top + s, left:left + s]))
    im = im.resize((size, size), Image.BICUBIC)
    return (np.asarray(im, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1).astype(np.float32)


@cli.command()
@click.option("--arch", required=True, type=click.Choice(["cnn", "readout"]),
              help="cnn = small time-independent CNN on z0; readout = Readout-Guidance head "
                   "on the UNet's up-block features")
@task_option
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="folder of clean training images (searched recursively)")
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True,
              help="optimiser steps")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=16, show_default=True)
@click.option("--lr", type=LEARNING_RATE, default=None,
              help="learning rate [default: 1e-4 Adam for cnn, 2e-4 AdamW for readout]")
@click.option("--size", type=IMAGE_SIZE, default=None,
              help="training image side in px [default: the prior's native size]")
@click.option("--sigma-y-max", type=SIGMA_Y, default=None,
              help="sigma_y ~ U(0, MAX) per example [default: 0.04 cnn, 0.1 readout]")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, show_default=True,
              help="save a resumable training state every N steps")
@click.option("--resume", is_flag=True, help="continue from OUT.train-state/")
@resizer_option
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="operator checkpoint to write (.safetensors)")
def train(arch, task, data, model, steps, batch_size, lr, size, sigma_y_max, seed,
          checkpoint_every, resume, resizer, out):
    """Train a latent operator H_theta for TASK (Eq. 20 of the paper, L1 loss).

    Writes OUT (weights + config), OUT.loss.jsonl (the loss per step) and OUT.train-state/
    (for --resume). Multi-GPU: `accelerate launch -m silo_rt train ...`.
    """
    from .prior import load_prior
    from .training import TrainOptions, train_operator

    sigma_range = None if sigma_y_max is None else (0.0, sigma_y_max)
    options = TrainOptions(arch, task, data, out, steps, batch_size, lr, size, sigma_range,
                           seed, checkpoint_every, resume, resizer)
    options.validate()  # outputs writable, before the (slow) prior is loaded
    if not data.is_dir():
        raise SiloError(f"training data folder not found: {data}")
    prior = load_prior(model)
    config = train_operator(prior, options)
    click.echo(f"wrote {out} ({config.arch} operator for {config.task}, "
               f"{config.image_size}px, {config.trained_steps} steps)")


@cli.command("demo-data")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="folder to create (train/, heldout/, SOURCES.md); must be new or empty")
def demo_data(out):
    """Write the demo's training tiles and held-out crops (photographs from scikit-image)."""
    from .demo.data import prepare_demo_data

    counts = prepare_demo_data(out)
    click.echo(f"wrote {counts['train']} training tiles and {counts['heldout']} held-out "
               f"crops under {out}")


@cli.command("train-prior")
@click.argument("part", type=click.Choice(["vae", "unet", "decoder"]))
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="folder of clean training images (searched recursively)")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="prior folder (diffusers layout); the vae part creates it, the others "
                   "train inside it")
@click.option("--architecture", type=click.Choice(["demo", "tiny", "small"]), default="demo",
              show_default=True, help="architecture of a new prior (vae part only)")
@click.option("--steps", type=click.IntRange(min=1), required=True, help="optimiser steps")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=32, show_default=True)
@click.option("--lr", type=LEARNING_RATE, default=3e-4, show_default=True,
              help="AdamW learning rate")
@click.option("--ema-decay", type=FiniteFloat(0.0, 1.0, max_open=True), default=0.999,
              show_default=True,
              help="EMA decay of the UNet weights (the EMA is what gets saved)")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=500, show_default=True,
              help="save a resumable training state every N steps")
@click.option("--resume", is_flag=True, help="continue from OUT/.train-state-PART/")
def train_prior_command(part, data, out, architecture, steps, batch_size, lr, ema_decay, seed,
                        checkpoint_every, resume):
    """Train PART (vae, then unet) of a small latent diffusion prior from scratch; `decoder`
    fine-tunes the VAE decoder alone (the latent space, UNet and operators stay valid).

    The result is a diffusers folder usable as --model everywhere. This is how the embedded
    demo prior was made (see silo_rt/demo/MODEL_CARD.md).
    """
    from .prior_training import PriorTrainOptions, train_prior

    entry = train_prior(PriorTrainOptions(part, data, out, steps, batch_size, lr,
                                          architecture, seed, checkpoint_every, resume,
                                          ema_decay=ema_decay))
    click.echo(f"wrote {out}/{part} ({entry['steps']} steps, mean loss of the last 100 "
               f"{entry['mean_loss_last_100'] or float('nan'):.4f})")


@cli.command()
@click.option("--operator", "operator_path", required=True, type=click.Path(path_type=Path),
              help="trained operator: .safetensors, one of the SILO authors' released .pt files "
                   "(e.g. trained_ckpt/CNN/sr_8_cnn_ffhq_operator.pt), or a .pt state dict "
                   "with --arch")
@pt_arch_option
@time_input_option
@click.option("--model", required=True, help=MODEL_HELP)
@click.option("--task", type=click.Choice(list(TASKS)), default=None,
              help="degradation [default: the operator's task]")
@click.option("--size", type=IMAGE_SIZE, default=None,
              help="image side in px [default: the operator's training size]")
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True,
              help="batch size the graphs are traced for (shapes are static)")
@click.option("--steps", type=STEPS, default=None,
              help="DDPM steps [default: 999, or what the operator's makers used]")
@click.option("--eta", type=ETA, default=None,
              help="consistency scale [default: 0.5, or 1.0 for ip]")
@click.option("--prompt", default=None,
              help="text condition, embedded into the bundle [default: empty, or the "
                   "authors' prompt for their operators]")
@click.option("--cfg", "cfg_scale", type=CFG, default=1.0, show_default=True,
              help="classifier-free guidance scale (1 = off; > 1 doubles the UNet batch)")
@click.option("--sigma-y", type=SIGMA_Y, default=DEFAULT_SIGMA_Y, help=SIGMA_HELP)
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32",
              show_default=True,
              help="fp16: also write step_fp16, the step with an fp16 UNet and H_theta (fp32 "
                   "inputs, outputs, loss and update), for fp16 TensorRT engines")
@click.option("--check", "checks", type=click.Choice(["trt"]), multiple=True,
              help="trt: parse every graph with the installed TensorRT (or TensorRT-RTX, no GPU "
                   "needed) and build it ahead of time; one verdict per graph, exit 1 if any "
                   "graph is refused")
@click.option("--engines", type=click.Choice(["none", "trt"]), default="none",
              show_default=True,
              help="also build TensorRT engines for this machine's GPU into the bundle")
@click.option("--opt-level", type=click.IntRange(0, 5), default=3, show_default=True,
              help="TensorRT builder optimisation level")
@click.option("--weights", type=click.Choice(["fp32", "fp16"]), default="fp32",
              show_default=True,
              help="fp16: round the weights to half precision and store them so (bundle half "
                   "the size, still computed in fp32; used by the embedded demo)")
@click.option("--no-unet-h", is_flag=True,
              help="leave out the unet_h graph (used by bench and parity checks, not by "
                   "restore)")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="bundle folder to write, e.g. engines/sr8-512")
def export(operator_path, arch, time_input, model, task, size, batch, steps, eta, prompt,
           cfg_scale, sigma_y, precision, checks, engines, opt_level, weights, no_unet_h, out):
    """Export a prior + operator to a bundle of ONNX graphs with a manifest.

    The bundle holds the VAE encoder and decoder, the UNet + H_theta forward, and the fused
    guided step (UNet + H_theta forward and their vector-Jacobian product) for one task,
    image size and batch size, plus the schedule and the prompt's text embedding, so
    `silo-rt restore --bundle` needs neither PyTorch nor a text encoder.
    """
    import time

    from .export import ExportOptions, export_bundle
    from .export.bundle import check_export_target
    from .operators import load_operator
    from .prior import load_prior
    from .sampler import SamplingOptions

    check_export_target(out)  # before loading anything
    if engines == "trt":
        from .runtime.engines import current_key

        current_key(precision)  # fail before the long export when TensorRT or a GPU is missing
    if "trt" in checks:
        from .runtime.engines import import_tensorrt

        import_tensorrt()  # likewise: the check needs TensorRT (no GPU)
    started = time.perf_counter()
    prior = load_prior(model)
    operator, config = load_operator(operator_path, prior, task, arch, size, time_input)
    task = task or config.task
    size = size or config.image_size
    steps = config.recommended.get("steps", 999) if steps is None else steps
    prompt = config.recommended.get("prompt", "") if prompt is None else prompt
    options = SamplingOptions(task, steps, eta, 0, prompt, cfg_scale, sigma_y)
    options.validate()
    click.echo(f"exporting {config.arch}/{task} at {size}px, batch {batch}, {steps} steps "
               f"to {out} (loaded in {time.perf_counter() - started:.1f} s)", err=True)
    if config.source == "authors":
        click.echo(f"  the SILO authors' {config.arch} operator ({config.time_input} time "
                   f"input, {config.resizer} SR resizer, prompt {prompt!r})", err=True)

    def stage(name, seconds):
        click.echo(f"  {name:<12} {seconds:7.1f} s", err=True)

    manifest = export_bundle(prior, operator, config,
                             ExportOptions(options, size, batch, not no_unet_h, weights,
                                           precision), out, on_stage=stage)
    refused = []
    if "trt" in checks:
        from .runtime.engines import check_bundle_with_tensorrt

        verdicts = check_bundle_with_tensorrt(out, manifest,
                                              log=lambda line: click.echo(line, err=True))
        refused = [v.graph for v in verdicts if v.ok is False]
    if engines == "trt":
        from .runtime.engines import EngineBuildConfig, build_engines

        build_engines(out, manifest, EngineBuildConfig(precision, True, opt_level),
                      log=lambda line: click.echo(line, err=True))
    click.echo(f"wrote bundle {out} in {time.perf_counter() - started:.1f} s")
    if refused:
        raise SiloError(f"TensorRT refused {', '.join(refused)} (see above)", exit_code=1)


@cli.command()
@click.argument("measurement", type=click.Path(path_type=Path))
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="exported bundle folder (runs without PyTorch)")
@click.option("--task", type=click.Choice(list(TASKS)), default=None,
              help=TASK_HELP + " [default: the bundle's task; sr4 for the embedded demo; "
                   "required with --model]")
@click.option("--model", default=None, help=MODEL_HELP + " (torch backend)")
@click.option("--operator", "operator_path", type=click.Path(path_type=Path), default=None,
              help="trained operator (torch backend): .safetensors, an authors' released .pt, "
                   "or a .pt state dict with --arch")
@pt_arch_option
@time_input_option
@click.option("--backend", type=click.Choice(["auto", "torch", "torch-cuda", "ort", "trt"]),
              default="auto", show_default=True,
              help="torch = PyTorch reference on the CPU, torch-cuda = the same on a GPU with a "
                   "CUDA graph (both need --model/--operator); ort = ONNX Runtime, trt = "
                   "TensorRT with CUDA graphs (both run a --bundle); auto = with a bundle, "
                   "TensorRT when usable, else ONNX Runtime; without one, torch")
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default=None,
              help="precision of a bundle's step: fp16 needs a bundle exported with "
                   "--precision fp16  [default: fp16 with trt, fp32 with ort]")
@click.option("--threads", type=THREADS, default=None,
              help="CPU threads for ONNX Runtime [default: all cores]")
@click.option("--steps", type=STEPS, default=None,
              help="DDPM steps [default: the count a bundle was exported with; 999 or the "
                   "operator makers' count with --model]")
@click.option("--eta", type=ETA, default=None,
              help="consistency scale [default: the bundle's, or 0.5 / 1.0 for ip]")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--prompt", default=None,
              help="text condition (torch backend; a bundle embeds its prompt at export)  "
                   "[default: empty, or the authors' prompt for their operators]")
@click.option("--cfg", "cfg_scale", type=CFG, default=None,
              help="classifier-free guidance scale, 1 = off (torch backend; a bundle embeds "
                   "its scale at export)  [default: 1]")
@click.option("--sigma-y", type=SIGMA_Y, default=None, help=SIGMA_HELP)
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="restored image to write (.png); for a folder or .txt list of "
                   "measurements, the output folder (created if its parent exists)")
@click.option("--compare", "compare_path", type=click.Path(path_type=Path), default=None,
              help="also write a side-by-side picture: measurement, restoration (with "
                   "--samples: their mean and the std map) and (with --reference) the ground "
                   "truth, PSNR in the caption")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="ground-truth image: prints the restoration's PSNR and adds it to --compare")
@click.option("--keep-measured", is_flag=True,
              help="make the result agree exactly with the measurement (ip: copy the "
                   "observed pixels; sr4/sr8: replace what the low-resolution image "
                   "determines), keeping only the model's detail")
@click.option("--samples", type=click.IntRange(1, MAX_SAMPLES), default=None,
              help="draw K posterior samples (sample i seeded from --seed and i; a bundle): "
                   "OUT is their mean, OUT-stem.sample1..K.png the samples and "
                   "OUT-stem.std.png a heat map of the per-pixel std (scale bar in [-1, 1] "
                   "units); prints their spread")
def restore(measurement, bundle, task, model, operator_path, arch, time_input, backend,
            precision, threads, steps, eta, seed, prompt, cfg_scale, sigma_y, out, compare_path,
            reference, keep_measured, samples):
    """Restore a MEASUREMENT image, or a folder / .txt list of them, with SILO (Algorithm 1).

    From a bundle (`--bundle`, ONNX Runtime, no PyTorch needed), with the PyTorch reference
    (`--model` + `--operator`), or, given neither, with the embedded 64x64 demo model
    (tasks sr4 and ip; no download, no PyTorch).

    A folder (its .png/.jpg/.jpeg/.webp files) or a .txt list (one path a line, relative to
    the list) is restored from a bundle into the folder OUT: OUT/<stem>.png per image, written
    atomically, each image seeded from --seed and its file name, a JSON line per image in
    OUT/restore-log.jsonl (seed, seconds, CPSNR, backend); a rerun skips what is done. Shard it
    over processes or GPUs with `accelerate launch --multi_gpu --num_processes N -m silo_rt
    restore DIR --out OUT ...`.
    """
    from .datasets import is_dataset
    from .images import OutputPlan, image_format, psnr, read_image

    if bundle is not None:
        _refuse_torch_options(model=model, operator=operator_path, prompt=prompt,
                              cfg=cfg_scale, arch=arch, time_input=time_input)
    if is_dataset(measurement):
        _refuse_options("a folder of measurements", compare=compare_path, reference=reference,
                        samples=samples)
        if bundle is None and (model is not None or operator_path is not None
                               or backend in ("torch", "torch-cuda")):
            raise SiloError("a folder of measurements is restored from a bundle (--bundle or "
                            "the embedded demo), not with the PyTorch reference")
        bundle = bundle or _demo(task, prompt, cfg_scale, arch, time_input)
        _restore_folder(measurement, bundle, backend, task, threads, precision, steps, eta,
                        seed, sigma_y, keep_measured, out)
        return
    sample_files: list = []
    std_path = None
    if samples is not None:
        from .posterior import sample_paths

        sample_files, std_path = sample_paths(out, samples)
    outputs = OutputPlan([out, compare_path, *sample_files, std_path],
                         inputs=[measurement, reference, bundle])
    for path in outputs.targets:
        image_format(path)
    if bundle is None and model is None and operator_path is None and backend in ("auto",
                                                                                   "ort"):
        bundle = _demo(task, prompt, cfg_scale, arch, time_input)
    if samples is not None and bundle is None:
        raise SiloError("--samples runs a bundle (--bundle or the embedded demo), not the "
                        "PyTorch reference")
    if samples is not None:
        y = read_image(measurement)
        truth = None if reference is None else read_image(reference)
        _restore_samples(y, truth, bundle, backend, task, threads, precision, steps, eta, seed,
                         sigma_y, keep_measured, samples, outputs, out, compare_path,
                         sample_files, std_path, reference)
        return
    if backend == "auto" and bundle is None:
        backend = "torch"
    if backend in ("ort", "trt") and bundle is None:
        raise SiloError(f"the {backend} backend runs a bundle: give --bundle "
                        "(see `silo-rt export`)")
    torch_backend = backend in ("torch", "torch-cuda")
    if torch_backend and (model is None or operator_path is None):
        raise SiloError(f"the {backend} backend needs --model and --operator")
    y = read_image(measurement)
    truth = None if reference is None else read_image(reference)
    if not torch_backend:
        x, label = _restore_bundle(y, bundle, backend, task, threads, precision, steps, eta,
                                   seed, sigma_y, keep_measured)
    else:
        from . import consistency

        if keep_measured and task is not None:
            consistency.check_keep_measured(task)
        x, label, config = _restore_torch(y, task, model, operator_path, arch, time_input, steps,
                                          eta, seed, prompt, cfg_scale or 1.0, sigma_y,
                                          keep_measured, cuda=backend == "torch-cuda")
        if keep_measured:
            x = consistency.keep_measured(config.task, y, x, config.resizer)
    if truth is not None and truth.shape != x.shape:
        raise SiloError(f"--reference is {truth.shape[-1]}x{truth.shape[-2]}, the restoration "
                        f"{x.shape[-1]}x{x.shape[-2]}")
    _write_restoration(outputs, out, compare_path, y, x, truth)
    click.echo(f"wrote {out} ({x.shape[-1]}x{x.shape[-2]}, backend {label})")
    if truth is not None:
        click.echo(f"PSNR against {reference}: {psnr(x, truth):.2f} dB")
    if compare_path is not None:
        click.echo(f"wrote {compare_path}")


def _demo(task, prompt, cfg_scale, arch, time_input) -> Path:
    """The embedded demo bundle for ``task`` (options a bundle ignores refused), announced."""
    from .demo import SD15_HINT, demo_bundle

    bundle = demo_bundle(task)
    _refuse_torch_options(prompt=prompt, cfg=cfg_scale, arch=arch, time_input=time_input)
    click.echo(f"using the embedded 64x64 demo model ({bundle.name}); {SD15_HINT}", err=True)
    return bundle


def _refuse_options(what: str, **given) -> None:
    """Refuse options that do not apply to ``what``, naming them."""
    ignored = [f"--{name.replace('_', '-')}" for name, value in given.items()
               if value is not None]
    if ignored:
        raise SiloError(f"{', '.join(ignored)} cannot be used with {what}")


def _restore_folder(source, bundle, backend, task, threads, precision, steps, eta, seed,
                    sigma_y, keep_measured, out) -> None:
    """``restore DIR|LIST --out FOLDER``: every image, resumable, sharded over processes."""
    import os

    from .datasets import current_processes, list_inputs, restore_dataset

    paths = list_inputs(source)
    processes = current_processes()
    if threads is None and processes.world > 1:  # the processes share the machine's cores
        local = int(os.environ.get("LOCAL_WORLD_SIZE", processes.world))
        threads = max(1, (os.cpu_count() or 1) // max(1, local))
    runner = _open_runner(bundle, backend, task, threads, precision, steps, keep_measured)
    where = "" if processes.world == 1 else f" (process {processes.rank + 1} of " \
                                            f"{processes.world})"

    def progress(total, initial):
        return _bar(total, f"SILO {runner.task} [{runner.backend}]{where}", "image", initial,
                    disable=not processes.is_main)

    summary = restore_dataset(runner, paths, out, seed, eta, sigma_y, steps, keep_measured,
                              processes, progress)
    click.echo(f"restored {summary['restored']} of {summary['shard']} images into {out}"
               f"{where}; {summary['skipped']} were already done (backend {runner.label})")


def _restore_samples(y, truth, bundle, backend, task, threads, precision, steps, eta, seed,
                     sigma_y, keep_measured, k, outputs, out, compare_path, sample_files,
                     std_path, reference) -> None:
    """``restore --samples K``: K posterior samples, their mean (OUT), the std heat map."""
    import numpy as np

    from .images import psnr, write_image
    from .posterior import draw_samples, heatmap, spread, summarise, write_heatmap

    runner = _open_runner(bundle, backend, task, threads, precision, steps, keep_measured)
    runner.check_measurement(y)
    if truth is not None and truth.shape[-2:] != (runner.spec.image_size,) * 2:
        raise SiloError(f"--reference is {truth.shape[-1]}x{truth.shape[-2]}, the restoration "
                        f"{runner.spec.image_size}x{runner.spec.image_size}")
    bar = _bar(k, f"SILO {runner.task} [{runner.backend}]", "sample")
    done = [0]

    def advance(count, total):
        bar.update(count - done[0])
        done[0] = count

    try:
        drawn = draw_samples(runner, y, k, seed, eta, sigma_y, steps, keep_measured, advance)
    finally:
        bar.close()
    mean, std = summarise(drawn)
    numbers = spread(std)
    with outputs:
        outputs.stage(out, lambda path: write_image(path, mean))
        for path, sample in zip(sample_files, drawn):
            outputs.stage(path, lambda staged, sample=sample: write_image(staged, sample))
        outputs.stage(std_path, lambda path: write_heatmap(path, std[0]))
        if compare_path is not None:
            from PIL import Image

            from .compare import write_comparison

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
        click.echo(f"PSNR against {reference}: mean of {k} {psnr(mean, truth):.2f} dB, single "
                   f"samples {np.mean(single):.2f} dB (min {np.min(single):.2f}, max "
                   f"{np.max(single):.2f})")
    if compare_path is not None:
        click.echo(f"wrote {compare_path}")


def _refuse_torch_options(**given) -> None:
    """A bundle embeds its model, operator, prompt and guidance: refuse options it ignores."""
    ignored = [f"--{name.replace('_', '-')}" for name, value in given.items()
               if value is not None]
    if ignored:
        raise SiloError(f"{', '.join(ignored)} cannot be used with a bundle: a bundle embeds "
                        "its model, operator, prompt and guidance at export (use "
                        "--backend torch with --model/--operator, or export a new bundle)")


def _write_restoration(outputs, out, compare_path, y, x, truth) -> None:
    """Write the restoration (and the comparison) together: both or neither."""
    from .images import write_image

    with outputs:
        outputs.stage(out, lambda path: write_image(path, x))
        if compare_path is not None:
            from .compare import write_comparison

            outputs.stage(compare_path, lambda path: write_comparison(path, y, x, truth))


def _open_runner(bundle, backend, task, threads, precision, steps, keep_measured=False):
    """A :class:`BundleRunner`, its task, step count and --keep-measured checked."""
    from . import consistency
    from .runtime import BundleRunner

    runner = BundleRunner(bundle, backend=backend, threads=threads, precision=precision,
                          log=lambda line: click.echo(line, err=True))
    if task is not None and task != runner.task:
        raise SiloError(f"bundle {bundle} is for task {runner.task!r}, not {task!r}")
    if steps is not None:
        runner.schedule(steps)  # refuse an impossible step count before starting
    if keep_measured:
        consistency.check_keep_measured(runner.task)
    return runner


def _restore_bundle(y, bundle, backend, task, threads, precision, steps, eta, seed, sigma_y,
                    keep_measured=False):
    runner = _open_runner(bundle, backend, task, threads, precision, steps, keep_measured)
    runner.check_measurement(y)
    click.echo(f"backend: {runner.label}", err=True)
    total = steps or runner.steps
    x = runner.restore(y, seed, eta, sigma_y, steps=steps, keep_measured=keep_measured,
                       callback=_progress(total, f"SILO {runner.task} [{runner.backend}]"))
    return x, runner.label


def _restore_torch(y, task, model, operator_path, arch, time_input, steps, eta, seed, prompt,
                   cfg_scale, sigma_y, keep_measured=False, cuda=False):
    """The PyTorch reference path; returns ``(x, backend label, operator config)``."""
    import torch

    from . import consistency
    from .operators import load_operator
    from .prior import load_prior
    from .sampler import SamplingOptions, image_size_for
    from .sampler import restore as silo_restore

    prior = load_prior(model)
    image_size = None if task is None else image_size_for(task, y)
    operator, config = load_operator(operator_path, prior, task, arch, image_size, time_input)
    if task is None:  # the operator file said which task it imitates
        task = config.task
        if keep_measured:
            consistency.check_keep_measured(task)
        config.check_compatible(image_size=image_size_for(task, y),
                                source=f"operator {Path(operator_path).name}")
    recommended = config.recommended
    options = SamplingOptions(task, recommended.get("steps", 999) if steps is None else steps,
                              eta, seed,
                              recommended.get("prompt", "") if prompt is None else prompt,
                              cfg_scale, DEFAULT_SIGMA_Y if sigma_y is None else sigma_y)
    options.validate()
    if cuda:
        from .torch_cuda import restore_cuda

        return (restore_cuda(prior, operator, config.arch, torch.from_numpy(y), options).numpy(),
                "torch-cuda (CUDA graph)", config)
    x = silo_restore(prior, operator, config.arch, torch.from_numpy(y), options,
                     callback=_progress(options.steps, f"SILO {task} [torch]"))
    return x.numpy(), "torch", config


@cli.command()
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="bundle to evaluate [default: the embedded demo's for --task]")
@click.option("--task", type=click.Choice(list(TASKS)), default=None,
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
    from .evaluation import evaluate_bundle

    if bundle is None:
        from .demo import demo_bundle

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


@cli.command()
@click.option("--model", default="small", show_default=True, help=MODEL_HELP)
@task_option
@click.option("--arch", type=click.Choice(["cnn", "readout"]), default="cnn", show_default=True,
              help="operator architecture (a random-init operator unless --operator is given)")
@click.option("--operator", "operator_path", type=click.Path(path_type=Path), default=None,
              help="time a trained operator instead of a random-init one")
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="time this bundle for the ort backend instead of exporting one")
@click.option("--size", type=IMAGE_SIZE, default=None,
              help="image side in px [default: the prior's native size]")
@click.option("--backends", default="torch,ort", show_default=True,
              help="comma-separated backends to run side by side in this process: torch "
                   "(PyTorch eager reference), ort (ONNX Runtime on an exported bundle), "
                   "torch-compile (the same step compiled by Inductor; compiling takes "
                   "minutes); on NVIDIA GPUs also torch-cuda, torch-cuda-graph, "
                   "torch-compile-cuda-graph, trt-fp16, trt-fp32")
@click.option("--steps", type=STEPS, default=20, show_default=True,
              help="steps of the end-to-end restoration that is timed")
@click.option("--reps", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="timed repetitions per graph / step (after the warm-up)")
@click.option("--warmup", type=click.IntRange(0, 100_000), default=2, show_default=True,
              help="untimed repetitions before timing")
@click.option("--threads", type=THREADS, default=2, show_default=True,
              help="CPU threads for every backend")
@click.option("--baselines", default="ldps,psld", show_default=True,
              help="decoder-in-the-loop baselines to time one step of (ldps, gml-dps, psld; "
                   "'none' to skip)")
@click.option("--baseline-reps", type=click.IntRange(1, 100_000), default=3, show_default=True,
              help="timed repetitions of each baseline step")
@click.option("--restore-reps", type=click.IntRange(1, 100_000), default=3, show_default=True,
              help="timed end-to-end restorations per backend (median reported)")
@click.option("--no-restoration", is_flag=True,
              help="skip the end-to-end restorations (graphs and steps only)")
@click.option("--cache", type=click.Path(path_type=Path), default=Path("engines"),
              show_default=True, help="where exported bench bundles are kept and reused")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None,
              help="write the machine-readable result (schema silo-rt-bench/1) to this file")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), default=None,
              help="write a Markdown table to this file")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="write a PNG bar chart of per-step latency per backend")
@click.option("--sizes", default=None,
              help="comma-separated image sides: instead of the bench, measure each backend's "
                   "step time and peak memory at every size x --batches, each point in a "
                   "fresh process; --plot draws time per image vs pixels (log-log)")
@click.option("--batches", default="1", show_default=True,
              help="comma-separated batch sizes for --sizes")
def bench(model, task, arch, operator_path, bundle, size, backends, steps, reps, warmup,
          threads, baselines, baseline_reps, restore_reps, no_restoration, cache, json_path,
          markdown_path, plot_path, sizes, batches):
    """Measure latency: per graph (UNet+H forward, fused guided step, VAE encoder and
    decoder; median and p90), per restoration, peak memory, one step of the LDPS/PSLD
    baselines on the same prior, and the arithmetic floor (FLOPs of one step against the
    machine's measured matmul rate). Backends run in one process so their ratios are
    measured together.
    """
    import json

    from .bench import BenchConfig, render_markdown, render_table, run_bench, write_plot
    from .bench.report import all_failed
    from .images import OutputPlan

    if sizes:
        return _bench_scaling(model, task, arch, backends, sizes, batches, reps, warmup,
                              threads, steps, not no_restoration, cache, json_path,
                              markdown_path, plot_path)
    config = BenchConfig(
        model=model, task=task, arch=arch, operator=operator_path, bundle=bundle,
        image_size=size, backends=tuple(b.strip() for b in backends.split(",") if b.strip()),
        steps=steps, reps=reps, warmup=warmup, threads=threads,
        baselines=() if baselines.strip() in ("", "none") else
        tuple(b.strip() for b in baselines.split(",")),
        baseline_reps=baseline_reps, restoration=not no_restoration,
        restore_reps=restore_reps, cache=cache,
        log=lambda line: click.echo(line, err=True))
    outputs = OutputPlan([json_path, markdown_path, plot_path])  # before the benchmark
    result = run_bench(config)
    click.echo(render_table(result))
    with outputs:
        if json_path:
            text = json.dumps(result, indent=1)
            outputs.stage(json_path, lambda path: Path(path).write_text(text))
        if markdown_path:
            text = render_markdown(result)
            outputs.stage(markdown_path, lambda path: Path(path).write_text(text))
        if plot_path:
            outputs.stage(plot_path, lambda path: write_plot(result, path))
    if all_failed(result):
        raise SiloError(f"every backend failed ({', '.join(sorted(result['failed']))}; see "
                        "above)", exit_code=1)


def _bench_scaling(model, task, arch, backends, sizes, batches, reps, warmup, threads, steps,
                   restore, cache, json_path, markdown_path, plot_path):
    """``bench --sizes``: step time and peak memory over image sizes and batch sizes."""
    import json

    from .bench.scaling import (
        ScalingConfig,
        parse_int_list,
        render_scaling_markdown,
        run_scaling,
        write_scaling_plot,
    )
    from .images import OutputPlan

    scaling = ScalingConfig(
        model=model, task=task, arch=arch,
        backends=tuple(b.strip() for b in backends.split(",") if b.strip()),
        sizes=parse_int_list(sizes, "--sizes"), batches=parse_int_list(batches, "--batches"),
        reps=reps, warmup=warmup, threads=threads, steps=steps, restore=restore, cache=cache,
        log=lambda line: click.echo(line, err=True))
    outputs = OutputPlan([json_path, markdown_path, plot_path])  # before the measurement
    result = run_scaling(scaling)
    text = render_scaling_markdown(result)
    click.echo(text)
    with outputs:
        if json_path:
            data = json.dumps(result, indent=1)
            outputs.stage(json_path, lambda path: Path(path).write_text(data))
        if markdown_path:
            outputs.stage(markdown_path, lambda path: Path(path).write_text(text))
        if plot_path:
            outputs.stage(plot_path, lambda path: write_scaling_plot(result, path))
    if result["failed"] and not result["points"]:
        raise SiloError("every scaling point failed (see above)", exit_code=1)


# Modules of the optional extras, and the extra that brings each.
OPTIONAL_MODULES = {"torch": "reference", "diffusers": "reference", "transformers": "reference",
                    "kornia": "reference", "accelerate": "reference", "safetensors": "reference",
                    "onnx": "export", "onnxscript": "export", "matplotlib": "bench",
                    "skimage": "demo",
                    "cuda": "gpu"}


def main(argv=None):
    """Console entry point: run the CLI; every failure, click's usage errors included, ends
    in exactly one ``error: …`` line (exit 2 for a mistake, 1 for a failed check, 130 for
    Ctrl-C)."""
    try:
        cli.main(args=argv, prog_name="silo-rt", standalone_mode=False)
    except SiloError as exc:
        _fail(str(exc), exc.exit_code)
    except ModuleNotFoundError as exc:
        extra = OPTIONAL_MODULES.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        _fail(f"this command needs {exc.name!r}: pip install 'silo-rt[{extra}]'", 2)
    except click.exceptions.Abort:
        _close_bars()
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    return 0


def _fail(message: str, exit_code: int):
    """Close any progress bar, print the one error line and exit."""
    _close_bars()
    line = " ".join(message.split())  # one line, whatever the message held
    click.echo(f"error: {line}", err=True)
    sys.exit(exit_code)


if __name__ == "__main__":
    main()
