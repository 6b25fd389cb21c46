"""``--recipe FILE``: a command's options as data (TOML), with flags on the command line
overriding them.

A recipe holds the command's long option names as keys (``operator``, ``no-unet-h`` or
``no_unet_h``, ``check = ["trt"]``...) plus an optional ``description``. Paths in it are
relative to the current directory, as on the command line. The recipes of the bundles we
ship or document live in the top-level ``export/`` folder.
"""

from __future__ import annotations

from pathlib import Path

import click
import tomllib

from ..errors import SiloError

IGNORED_KEYS = ("description",)


def read_recipe(path: Path) -> dict:
    """The TOML table of ``path``, or a :class:`SiloError` naming the problem."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise SiloError(f"recipe not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SiloError(f"cannot read recipe {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SiloError(f"recipe {path} is not valid TOML: {exc}") from None


def recipe_defaults(command: click.Command, recipe: dict, path: Path) -> dict:
    """``{parameter name: value}`` for ``command`` from a recipe's keys (its long options)."""
    by_flag = {opt[2:].replace("_", "-"): param.name for param in command.params
               for opt in param.opts if opt.startswith("--") and param.name != "recipe"}
    defaults = {}
    for key, value in recipe.items():
        if key in IGNORED_KEYS:
            continue
        name = by_flag.get(key.replace("_", "-"))
        if name is None:
            raise SiloError(f"recipe {path}: unknown key {key!r}; the keys are the options of "
                            f"`silo-rt {command.name}`: {', '.join(sorted(by_flag))}")
        defaults[name] = value
    return defaults


def _apply(ctx: click.Context, param: click.Parameter, value):
    if value is not None:
        defaults = recipe_defaults(ctx.command, read_recipe(value), value)
        ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


recipe_option = click.option(
    "--recipe", type=click.Path(path_type=Path, dir_okay=False), default=None, is_eager=True,
    expose_value=False, callback=_apply,
    help="TOML file of this command's options (e.g. export/sd15-sr8-512.toml); flags given "
         "here override it")
