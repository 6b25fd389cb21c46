"""The training commands: ``train`` (an operator), ``train-prior`` and ``demo-data``."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SiloError
from .group import cli
from .options import (
    IMAGE_SIZE,
    LEARNING_RATE,
    MODEL_HELP,
    SEED,
    SIGMA_Y,
    FiniteFloat,
    refuse_unused,
    resizer_option,
    task_option,
    uses_resizer,
)


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
    from ..prior import load_prior
    from ..training import TrainOptions, train_operator

    refuse_unused(f"task {task}", resizer=uses_resizer(task))
    sigma_range = None if sigma_y_max is None else (0.0, sigma_y_max)
    options = TrainOptions(arch=arch, task=task, data=data, out=out, steps=steps,
                           batch_size=batch_size, lr=lr, image_size=size,
                           sigma_y_range=sigma_range, seed=seed,
                           checkpoint_every=checkpoint_every, resume=resume, resizer=resizer)
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
    from ..demo.data import prepare_demo_data

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
@click.option("--prior-architecture", "--architecture", "architecture",
              type=click.Choice(["demo", "tiny", "small"]), default="demo", show_default=True,
              help="layout of a new prior's networks (vae part only; not the operator's "
                   "--arch of `silo-rt train`)")
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
    from ..prior_training import PriorTrainOptions, train_prior

    entry = train_prior(PriorTrainOptions(
        part=part, data=data, out=out, steps=steps, batch_size=batch_size, lr=lr,
        architecture=architecture, seed=seed, checkpoint_every=checkpoint_every,
        resume=resume, ema_decay=ema_decay))
    click.echo(f"wrote {out}/{part} ({entry['steps']} steps, mean loss of the last 100 "
               f"{entry['mean_loss_last_100'] or float('nan'):.4f})")
