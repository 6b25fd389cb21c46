"""`silo-rt export --recipe FILE`: the recipes in export/ and flags overriding them."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import tomllib
from cli_run import run

from silo_rt.bundle_format import load_manifest
from silo_rt.cli import cli
from silo_rt.cli.recipe import recipe_defaults
from silo_rt.operators import OperatorConfig, build_operator, save_operator

RECIPES = sorted((Path(__file__).parents[1] / "export").glob("*.toml"))


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_names_only_export_options(path):
    recipe = tomllib.loads(path.read_text())
    defaults = recipe_defaults(cli.commands["export"], recipe, path)
    for required in ("operator_path", "model", "out"):
        assert required in defaults, f"{path.name} lacks {required}"
    assert recipe.get("description")


def test_recipe_is_the_default_and_flags_override_it(tiny_prior, tmp_path, monkeypatch, capsys):
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "gb")
    save_operator(tmp_path / "op.safetensors", build_operator(config).eval(), config)
    (tmp_path / "r.toml").write_text(
        'description = "test"\nmodel = "tiny"\noperator = "op.safetensors"\nsteps = 5\n'
        'no-unet-h = true\nweights = "fp16"\nout = "bundle"\n')
    monkeypatch.chdir(tmp_path)  # recipe paths are relative to the current directory

    code, _, err = run(["export", "--recipe", "r.toml", "--steps", "2"], capsys)

    assert code == 0, err
    manifest = load_manifest(tmp_path / "bundle")
    assert manifest.steps == 2  # the flag
    # the recipe, in the files rather than in what the manifest says of them
    assert "unet_h" not in manifest.graphs and not (tmp_path / "bundle/unet_h.onnx").exists()
    step = onnx.load(str(tmp_path / "bundle" / manifest.graph_files["step"]))
    count = {onnx.TensorProto.FLOAT16: 0, onnx.TensorProto.FLOAT: 0}
    for tensor in step.graph.initializer:
        if tensor.data_type in count:
            count[tensor.data_type] += int(np.prod(tensor.dims))
    assert count[onnx.TensorProto.FLOAT16] > 0.99 * sum(count.values())  # weights in half


@pytest.mark.parametrize("text, fragment", [
    ('model = "tiny"\nopertor = "op.safetensors"\n', "unknown key 'opertor'"),
    ('model = "tiny"\nsteps = \n', "is not valid TOML"),
    ('model = "tiny"\noperator = "op.safetensors"\nsteps = 5000\nout = "b"\n', "'--steps'"),
])
def test_bad_recipes_are_one_line(text, fragment, tmp_path, monkeypatch, capsys):
    (tmp_path / "r.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["export", "--recipe", "r.toml"], capsys)
    assert code == 2 and fragment in _one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]


def test_a_missing_recipe_is_one_line(tmp_path, capsys):
    code, _, err = run(["export", "--recipe", tmp_path / "none.toml"], capsys)
    assert code == 2 and "none.toml" in _one_error_line(err)


# --- #27: every recipe key type- and range-checked as its flag, in one line ---------------------

def _wrong_values(param):
    """TOML values of the wrong type (or out of range) for ``param``'s option."""
    import click

    if getattr(param, "is_flag", False):
        return ["yes", 1, 1.5, [True]]
    if getattr(param, "multiple", False):
        return ["trt", 5, [5], [["trt"]]]
    if isinstance(param.type, click.types.IntParamType):
        return [7.5, float("inf"), float("nan"), "5", True, [5], 10**30]
    if isinstance(param.type, click.types.FloatParamType):
        return [float("nan"), float("inf"), "0.5", True, [0.5], 1e300]
    return [5, 1.5, True, ["x"], {"a": "b"}]


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf"}.get(str(value), repr(value))
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return str(value)


EXPORT_KEYS = [(opt[2:], param) for param in cli.commands["export"].params
               if param.name != "recipe" for opt in param.opts[:1]]


@pytest.mark.parametrize("key, param", EXPORT_KEYS, ids=[k for k, _ in EXPORT_KEYS])
def test_every_recipe_key_refuses_a_wrong_type_in_one_line(key, param, tmp_path, monkeypatch,
                                                           capsys):
    """Each key of `export` (all its options) with values of wrong types, non-finite or out of
    range: one error line naming the key (was: truncated 7.5 -> 7, tracebacks for inf, a
    number where a path belongs, ...)."""
    monkeypatch.chdir(tmp_path)
    for value in _wrong_values(param):
        if (value == 10**30 or value == 1e300) and getattr(param.type, "max", None) is None:
            continue  # no upper bound to exceed
        (tmp_path / "r.toml").write_text(f"{key} = {_toml(value)}\n")
        code, _, err = run(["export", "--recipe", "r.toml"], capsys)
        line = _one_error_line(err)
        assert code == 2 and f"r.toml: {key}" in line, (value, line)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]


def test_a_pathologically_nested_recipe_is_one_line(tmp_path, capsys):
    (tmp_path / "r.toml").write_text("steps = " + "[" * 100_000 + "]" * 100_000 + "\n")
    code, _, err = run(["export", "--recipe", tmp_path / "r.toml"], capsys)
    assert code == 2 and "nests its values too deeply" in _one_error_line(err)
