"""The option types, ranges, help texts and option decorators that several commands share.

Numeric options are range-checked here, once (the ranges show in ``--help``).
"""

from __future__ import annotations

import math

import click
from click.core import ParameterSource

from ..degradations import DEFAULT_SIGMA_Y, all_degradations, task_names
from ..errors import SiloError
from ..resize import DEFAULT_RESIZER, RESIZERS

TASK_HELP = "degradation: " + "; ".join(f"{t.name} = {t.description}"
                                        for t in all_degradations())
SIGMA_HELP = ("measurement noise std in the [-1, 1] image range (the paper's sigma_y = 0.01 "
              f"for [0, 1] images is 0.02 here)  [default: {DEFAULT_SIGMA_Y}]")
MODEL_HELP = ("latent diffusion prior: a local diffusers folder, a hub id (org/name), or a "
              "built-in random-weight model for tests: tiny, small, sd15-random")

MAX_SEED = 2**63 - 1
MAX_SAMPLES = 64


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite (click's FloatRange lets NaN through): the type
    of every float option of every command (a test holds the command tree to it)."""

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
STEPS = click.IntRange(1, 999)
"""DDPM steps: 999 is the most every prior and backend runs (SD-1.x's ``steps_offset = 1``
puts a 1000th step at timestep 1000, past its training schedule)."""
IMAGE_SIZE = click.IntRange(8, 4096)
THREADS = click.IntRange(1, 1024)
LEARNING_RATE = FiniteFloat(0.0, 1.0, min_open=True)

sampler_option = click.option(
    "--sampler", type=click.Choice(["ddpm", "ddim"]), default="ddpm", show_default=True,
    help="update rule: ddpm = the paper's Algorithm 1 (posterior noise each step), ddim = "
         "deterministic DDIM (no posterior noise); both take the same step graph")
pt_arch_option = click.option("--arch", type=click.Choice(["cnn", "readout"]), default=None,
                              help="architecture of a plain .pt operator")
task_option = click.option("--task", required=True, type=click.Choice(list(task_names())),
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


def given(name: str) -> bool:
    """Whether the running command's parameter ``name`` was set (on the command line, in the
    environment or in a recipe) rather than left at its default."""
    source = click.get_current_context().get_parameter_source(name)
    return source not in (None, ParameterSource.DEFAULT)


def refuse_unused(what: str, **options) -> None:
    """Refuse options given that ``what`` (e.g. "task ip") would ignore: ``options`` is
    ``{parameter name: whether it is used}``; the message names the unused ones."""
    unused = [f"--{name.replace('_', '-')}" for name, used in options.items()
              if not used and given(name)]
    if unused:
        raise SiloError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} nothing "
                        f"for {what}; leave {'it' if len(unused) == 1 else 'them'} out")


def uses_resizer(task: str) -> bool:
    """Whether ``task``'s measurement depends on ``--resizer`` (the SR tasks)."""
    from ..degradations import get_degradation

    return hasattr(get_degradation(task), "resizer")


class ImageSize(click.ParamType):
    """``N`` (the longer side, aspect kept) or ``WxH``, each side in [8, 8192]; converts to
    ``(kind, width, height)`` with kind ``longer`` or ``exact``."""

    name = "N|WxH"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        text = str(value).lower().strip()
        try:
            parts = [int(p) for p in text.split("x")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2) or not all(8 <= p <= 8192 for p in parts):
            self.fail(f"{value!r} is not N or WxH with sides in [8, 8192]", param, ctx)
        if len(parts) == 1:
            return ("longer", parts[0], parts[0])
        return ("exact", parts[0], parts[1])


RESIZE_TO = ImageSize()
