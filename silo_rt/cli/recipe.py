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
    except IsADirectoryError:
        raise SiloError(f"recipe {path} is a folder, not a TOML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SiloError(f"cannot read recipe {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SiloError(f"recipe {path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise SiloError(f"recipe {path} nests its values too deeply") from None


def recipe_defaults(command: click.Command, recipe: dict, path: Path) -> dict:
    """``{parameter name: value}`` for ``command`` from a recipe's keys (its long options),
    each value type- and range-checked as its flag would be (:func:`recipe_value`)."""
    params = {opt[2:].replace("_", "-"): param for param in command.params
              for opt in param.opts if opt.startswith("--") and param.name != "recipe"}
    defaults = {}
    for key, value in recipe.items():
        if key in IGNORED_KEYS:
            if not isinstance(value, str):
                raise SiloError(f"recipe {path}: {key} must be a string")
            continue
        param = params.get(key.replace("_", "-"))
        if param is None:
            raise SiloError(f"recipe {path}: unknown key {key!r}; the keys are the options of "
                            f"`silo-rt {command.name}`: {', '.join(sorted(params))}")
        defaults[param.name] = recipe_value(param, value, f"recipe {path}: {key}")
    return defaults


def recipe_value(param: click.Parameter, value, where: str):
    """``value`` (from TOML) as the option ``param`` takes it: a flag a boolean, an integer
    option a whole number, a float option a number, any other a string, ``multiple`` options a
    list of those; then the option's own type and range check. Anything else is one
    :class:`SiloError` starting with ``where``."""
    if getattr(param, "is_flag", False) and not getattr(param, "count", False):
        if not isinstance(value, bool):
            raise SiloError(f"{where} must be true or false, got {_shown(value)}")
        return value
    if getattr(param, "multiple", False):
        if not isinstance(value, list):
            raise SiloError(f"{where} must be a list (e.g. [\"x\"]), got {_shown(value)}")
        return [_scalar(param, item, where) for item in value]
    return _scalar(param, value, where)


def _scalar(param: click.Parameter, value, where: str):
    kind = param.type
    if isinstance(kind, click.types.IntParamType):
        ok, wanted = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif isinstance(kind, click.types.FloatParamType):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        wanted = "a number"
    elif isinstance(kind, click.types.BoolParamType):
        ok, wanted = isinstance(value, bool), "true or false"
    else:  # strings, paths, choices
        ok, wanted = isinstance(value, str), "a string"
    if not ok:
        raise SiloError(f"{where} must be {wanted}, got {_shown(value)}")
    try:
        return kind.convert(value, param, None)
    except click.BadParameter as exc:
        raise SiloError(f"{where}: {exc.format_message()}") from None


def _shown(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


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
