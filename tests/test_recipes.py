"""`silo-rt export --recipe FILE`: the recipes in export/ and flags overriding them."""

from pathlib import Path

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
    assert manifest.weights == "fp16" and "unet_h" not in manifest.graphs  # the recipe
    assert manifest.export_passes["graph unet_h"] == "skipped: left out (--no-unet-h)"
    assert manifest.export_passes["fp16 weights"].startswith("applied: ")


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
