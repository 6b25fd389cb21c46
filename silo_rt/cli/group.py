"""The ``silo-rt`` click group that every command module registers its commands on."""

from __future__ import annotations

from dataclasses import dataclass

import click


@dataclass
class RunState:
    """What one run of the CLI learns from the group's options, read back by ``main``."""

    debug: bool = False


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(RunState).debug = True


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="silo-rt")
@click.option("--debug", is_flag=True, is_eager=True, expose_value=False, callback=_set_debug,
              help="on an error, also print the exception's traceback on stderr (before the "
                   "one error line)")
def cli():
    """SILO image restoration with a latent diffusion prior and a learned latent operator.

    Typical flow: `degrade` a clean image into a measurement, `train` an operator H_theta for
    the task, `export` a bundle, and `restore` the measurement (from a bundle with ONNX
    Runtime, or with the PyTorch reference).
    """
