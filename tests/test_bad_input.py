"""#27: bad input on the newer surfaces, class by class (each test failed on the code before).

1. a folder rerun never trusts outputs made with other settings; 2. one bad image never stops
or crashes the others; 3. files silo-rt wrote are read back as untrusted; 6. every float
option of every command refuses NaN/inf; 7. no output folder inside the inputs; 8. the
environment is checked; 9. every advertised --steps bound works on every backend; 10. a
``kill -9``'d export's leftovers are cleaned; and options the task ignores are refused.
Classes 4 (recipes) and 5 (checkpoints) are in test_recipes.py and test_authors.py.

Folder runs use the embedded sr4 demo bundle (16x16 measurements, 2 steps: a fraction of a
second per image).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest
from cli_run import run
from fake_restorer import RestorerInterface
from PIL import Image

from silo_rt.cli import cli
from silo_rt.datasets import (
    LOG_NAME,
    SETTING_OPTIONS,
    Processes,
    changed_settings,
    list_inputs,
    read_log,
    restore_dataset,
)
from silo_rt.errors import SiloError

FAST = ["--steps", "2", "--threads", "1"]
SOURCE = Path(__file__).parents[1] / "silo_rt"


def _demo():
    from silo_rt.demo import demo_bundle

    return demo_bundle("sr4")


def _measurements(folder: Path, count: int = 3, side: int = 16, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            folder / f"m{i}.png")
    return folder


def _one_error_line(result, *fragments, code=2):
    status, _, err = result
    lines = [line for line in err.strip().splitlines()  # not the notes before the error
             if line and not line.startswith(("using the embedded", "eta ")) and "|" not in line]
    assert status == code, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _stamps(folder: Path) -> dict:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(folder.glob("*.png"))}


# --- 1. resume never trusts outputs made with other settings ----------------------------------

@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory):
    """The demo bundle, copied with another prompt text in its manifest: another bundle
    identity (a change of layout alone, or TensorRT plans, would not be one)."""
    copy = tmp_path_factory.mktemp("bundle") / "sr4"
    shutil.copytree(_demo(), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps({**manifest, "prompt": "another"}))
    return copy


@pytest.mark.parametrize("change, named", [
    (["--seed", "1"], "--seed"),
    (["--steps", "3"], "--steps 2 -> 3"),
    (["--keep-measured"], "--keep-measured False -> True"),
    (["--eta", "0.25"], "-> 0.25"),
    (["--sigma-y", "0.05"], "--sigma-y 0.02 -> 0.05"),
    (["--bundle", "{other}"], "bundle "),
])
def test_a_rerun_with_other_settings_is_refused_then_redone_with_overwrite(
        change, named, other_bundle, tmp_path, capsys):
    data = _measurements(tmp_path / "in", count=2)
    out = tmp_path / "out"
    assert run(["restore", data, "--out", out, *FAST], capsys)[0] == 0
    before, log = _stamps(out), (out / LOG_NAME).read_text()
    change = [str(other_bundle) if a == "{other}" else a for a in change]
    argv = ["restore", data, "--out", out, *FAST, *change]  # a later --steps wins
    _one_error_line(run(argv, capsys), "2 images", "other settings", named, "--overwrite")
    assert _stamps(out) == before and (out / LOG_NAME).read_text() == log  # untouched

    code, stdout, err = run(argv + ["--overwrite"], capsys)
    assert code == 0 and "restored 2 of 2" in stdout, err
    records = read_log(out)
    assert set(records) == {"m0.png", "m1.png"}
    assert run(argv, capsys)[0] == 0  # the new settings are what is recorded now


def test_every_recorded_setting_is_compared_and_an_old_log_line_takes_the_defaults():
    """Generic over SETTING_OPTIONS (a setting added there, e.g. the sampler, is compared
    with no other change); a key missing from an older log line counts as its default."""
    current = {"bundle": "b", "steps": 4, "eta": 0.5, "sigma_y": 0.02, "keep_measured": False,
               "precision": "fp32", "sampler": "ddpm", "samples": 1}
    assert set(current) == set(SETTING_OPTIONS)
    defaults = {k: v for k, v in current.items() if k != "bundle"}
    record = {"image": "m0.png", "seed": 7, **current}
    assert changed_settings(record, current, defaults, 7) == []
    assert changed_settings(record, current, defaults, 8) == ["--seed"]
    others = {"bundle": "c", "steps": 5, "eta": 0.25, "sigma_y": 0.05, "keep_measured": True,
              "precision": "fp16", "sampler": "ddim", "samples": 2}
    for key, option in SETTING_OPTIONS.items():
        changes = changed_settings({**record, key: others[key]}, current, defaults, 7)
        assert changes == [f"{option} {others[key]} -> {current[key]}"]
    # an old line (image, seed, steps, keep_measured only) is valid for a default run ...
    old = {"image": "m0.png", "seed": 7, "steps": 4, "keep_measured": False}
    assert changed_settings(old, current, defaults, 7) == []
    # ... and not for a run with another sampler, eta or precision
    assert changed_settings(old, {**current, "sampler": "ddim"}, defaults, 7) == \
        ["--sampler ddpm -> ddim"]
    assert changed_settings(old, {**current, "precision": "fp16"}, defaults, 7) == \
        ["--precision fp32 -> fp16"]


# --- 2. one bad image never stops the others ----------------------------------------------------

def test_bad_images_are_logged_the_others_restored_and_a_rerun_retries_only_them(
        tmp_path, capsys):
    data = _measurements(tmp_path / "in", count=3)
    good = (data / "m0.png").read_bytes()
    (data / "m1.png").write_bytes(good[:80])  # truncated: its header reads, its pixels not
    Image.new("RGB", (32, 32)).save(data / "m3.png")  # another size: restored by tiles
    (data / "m4.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    line = _one_error_line(run(["restore", data, "--out", out, *FAST], capsys),
                           "2 of 5 images could not be restored", "m1.png", "m4.png",
                           "truncated")
    assert "a rerun retries only these" in line
    assert sorted(p.name for p in out.glob("*.png")) == ["m0.png", "m2.png", "m3.png"]
    assert Image.open(out / "m3.png").size == (128, 128)
    records = read_log(out)
    assert {n for n, r in records.items() if "error" in r} == {"m1.png", "m4.png"}
    done = _stamps(out)

    code, stdout, _ = run(["restore", data, "--out", out, *FAST], capsys)
    assert code == 2 and "restored 0 of 5" in stdout and "3 were already done" in stdout
    assert _stamps(out) == done

    (data / "m1.png").write_bytes(good)
    (data / "m3.png").unlink()
    (data / "m4.png").unlink()
    code, stdout, err = run(["restore", data, "--out", out, *FAST], capsys)
    assert code == 0 and "restored 1 of 3" in stdout, err
    assert {n: v for n, v in _stamps(out).items() if n != "m1.png"} == done


def test_a_run_that_could_read_nothing_leaves_no_output_folder(tmp_path, capsys):
    data = _measurements(tmp_path / "in", count=2)
    for path in data.iterdir():
        path.write_bytes(path.read_bytes()[:80])
    out = tmp_path / "out"
    _one_error_line(run(["restore", data, "--out", out, *FAST], capsys),
                    "2 of 2 images could not be restored")
    assert not out.exists()
    out.mkdir()  # a folder the user made is left, with the failure records
    _one_error_line(run(["restore", data, "--out", out, *FAST], capsys), "2 of 2 images")
    assert out.is_dir()


class FakeRunner(RestorerInterface):
    """A batch-3 stand-in for BundleRunner: x = y enlarged x4 plus noise of the seed."""

    task, resizer, label, steps, backend = "sr4", "dps", "fake", 4, "ort"

    def __init__(self, path):
        from types import SimpleNamespace

        self.manifest = SimpleNamespace(measurement_shape=[3, 3, 16, 16], eta=0.5,
                                        sigma_y=0.02)
        self.path = path
        path.mkdir(exist_ok=True)
        (path / "manifest.json").write_text("{}")

    def restore(self, y, seed, eta=None, sigma_y=None, steps=None, keep_measured=False,
                sampler="ddpm", overlap=2):
        noise = np.random.default_rng(seed).standard_normal((y.shape[0], 3, 64, 64))
        return np.clip(y.repeat(4, -1).repeat(4, -2) + 0.2 * noise, -1, 1).astype(np.float32)


def test_a_bad_image_in_a_batch_changes_no_other_result(tmp_path):
    data = _measurements(tmp_path / "in", count=5)
    runner = FakeRunner(tmp_path / "bundle")
    clean = restore_dataset(runner, list_inputs(data), tmp_path / "clean", processes=Processes())
    assert clean["restored"] == 5 and not clean["failed"]
    (data / "m1.png").write_bytes((data / "m1.png").read_bytes()[:80])
    summary = restore_dataset(runner, list_inputs(data), tmp_path / "bad",
                              processes=Processes())
    assert summary["restored"] == 4 and list(summary["failed"]) == ["m1.png"]
    for name in ("m0.png", "m2.png", "m3.png", "m4.png"):
        assert (tmp_path / "bad" / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


@pytest.mark.slow  # two accelerate processes: about 30 s on 2 cores
def test_a_bad_image_under_accelerate_crashes_no_process(tmp_path):
    data = _measurements(tmp_path / "in", count=4)
    (data / "m1.png").write_bytes((data / "m1.png").read_bytes()[:80])
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
         "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "silo_rt", "restore", str(data), "--out", str(out), *FAST],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600)
    assert result.returncode != 0  # the launcher then reports the main process's exit 2
    assert "process 1 of 2" in result.stdout and "process 2 of 2" in result.stdout
    assert "error: 1 of 4 images could not be restored" in result.stderr
    assert "m1.png" in result.stderr
    frames = [line for line in result.stderr.splitlines() if line.strip().startswith("File ")]
    assert not [f for f in frames if "silo_rt" in f or "distributed_c10d" in f], frames
    assert sorted(p.name for p in out.glob("*.png")) == ["m0.png", "m2.png", "m3.png"]
    assert [p.name for p in out.glob("restore-log*")] == [LOG_NAME]  # merged


# --- 3. files silo-rt wrote are read back untrusted -----------------------------------------

def test_a_damaged_restore_log_is_read_line_by_line_and_a_folder_log_refused(tmp_path, capsys):
    data = _measurements(tmp_path / "in", count=3)
    out = tmp_path / "out"
    assert run(["restore", data, "--out", out, *FAST], capsys)[0] == 0
    lines = (out / LOG_NAME).read_bytes().splitlines()
    record = json.loads(lines[2])
    record["seed"] = "not a number"
    damaged = [lines[0], b"\xff\xfe not utf-8 " + lines[1], json.dumps(record).encode(),
               b"[" * 100_000 + b"]" * 100_000]
    (out / LOG_NAME).write_bytes(b"\n".join(damaged) + b"\n")
    assert sorted(read_log(out)) == ["m0.png"]  # the other lines are ignored
    code, stdout, err = run(["restore", data, "--out", out, *FAST], capsys)
    assert code == 0 and "restored 2 of 3" in stdout, err  # m1, m2 redone
    (out / LOG_NAME).unlink()
    (out / LOG_NAME).mkdir()
    _one_error_line(run(["restore", data, "--out", out, *FAST], capsys),
                    "restore-log.jsonl is not a file")


def test_every_field_of_an_auto_cache_record_is_type_checked(tmp_path, monkeypatch):
    """A record with any field of the wrong type is checked again (was: a TypeError when the
    verdict was used); storing leaves no lock or temporary file behind."""
    from silo_rt.runtime import backend_choice as bc

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    verdict = bc.Verdict("openvino", True, 1e-7, 1e-6, 30.0, 40.0, "2026-01-01")
    with bc._checking_alone():
        bc._store("key", verdict)
    assert bc._cached("key") == verdict
    assert sorted(p.name for p in (tmp_path / "silo-rt").iterdir()) == ["auto-backend.json"]
    wrong = {"candidate": 1, "parity": "yes", "z_rel": "small", "guidance_rel": None,
             "candidate_ms": [30], "ort_ms": True, "checked": 20260101}
    for name, value in wrong.items():
        record = {**verdict.__dict__, name: value}
        bc.cache_file().write_text(json.dumps({"key": record}))
        assert bc._cached("key") is None, name
    bc.cache_file().write_text("[" * 100_000)
    assert bc._cached("key") is None


def test_damaged_training_records_are_one_line(image_folder, tmp_path, capsys):
    """progress.json and the loss log of a training state, as resume reads them back."""
    out = tmp_path / "op.safetensors"
    args = ["train", "--arch", "cnn", "--task", "sr4", "--data", image_folder, "--model",
            "tiny", "--batch-size", "2", "--checkpoint-every", "2", "--out", out]
    assert run(args + ["--steps", "2"], capsys)[0] == 0
    progress = tmp_path / "op.safetensors.train-state" / "progress.json"
    log = tmp_path / "op.safetensors.loss.jsonl"
    good_progress, good_log = progress.read_bytes(), log.read_bytes()
    for damage, fragment in [('{"step": "2"}', "step is '2'"), ("[]", "not a JSON object"),
                             (b"\xff\xfe", "not valid JSON"), ("{", "not valid JSON")]:
        progress.write_bytes(damage if isinstance(damage, bytes) else damage.encode())
        _one_error_line(run(args + ["--steps", "4", "--resume"], capsys), "progress.json",
                        fragment)
    progress.unlink()
    _one_error_line(run(args + ["--steps", "4", "--resume"], capsys), "progress.json",
                    "is missing")
    progress.write_bytes(good_progress)
    log.write_bytes(b"\xff\xfe\n" + good_log)
    _one_error_line(run(args + ["--steps", "4", "--resume"], capsys), "malformed line")


# --- 6. every float option of every command refuses non-finite values ----------------------

def _commands(group: click.Group, prefix=()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def _float_options():
    return [(" ".join(path), param) for path, command in _commands(cli)
            for param in command.params
            if isinstance(param.type, click.types.FloatParamType)]


def test_the_float_options_are_enumerated():
    names = {f"{command} {param.opts[0]}" for command, param in _float_options()}
    assert {"evaluate --omega", "evaluate --gamma", "restore --eta", "export --cfg",
            "train --lr", "degrade --sigma-y"} <= names


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("command, param", _float_options(),
                         ids=[f"{c}-{p.name}" for c, p in _float_options()])
def test_every_float_option_refuses_a_non_finite_value(command, param, value):
    from silo_rt.cli.options import FiniteFloat

    assert isinstance(param.type, FiniteFloat), f"{command} {param.opts[0]}: use FiniteFloat"
    with pytest.raises(click.BadParameter, match="not a finite number"):
        param.type.convert(value, param, None)


def test_evaluate_omega_nan_is_one_line(tmp_path, capsys):
    _one_error_line(run(["evaluate", "--task", "sr4", "--data", tmp_path, "--out", tmp_path,
                         "--methods", "silo,ldps", "--omega", "nan"], capsys),
                    "'--omega'", "not a finite number")
    assert not list(tmp_path.iterdir())


# --- 7. no output folder in the inputs ---------------------------------------------------------

def test_an_output_folder_in_the_input_folder_is_refused(tmp_path, capsys):
    data = _measurements(tmp_path / "in", count=2)
    before = sorted(p.name for p in data.iterdir())
    for out, where in [(data, "is the input folder"), (data / "restored", "is inside")]:
        _one_error_line(run(["restore", data, "--out", out, *FAST], capsys), where)
    listing = tmp_path / "list.txt"
    listing.write_text("in/m0.png\nin/m1.png\n")
    _one_error_line(run(["restore", listing, "--out", data, *FAST], capsys),
                    "is the input folder")
    clean = _measurements(tmp_path / "clean", count=1, side=64)
    for out in (clean, clean / "report"):
        _one_error_line(run(["evaluate", "--task", "sr4", "--data", clean, "--out", out],
                            capsys), "input folder")
    assert sorted(p.name for p in data.iterdir()) == before
    assert sorted(p.name for p in clean.iterdir()) == ["m0.png"]


# --- 8. the environment ------------------------------------------------------------------------

@pytest.mark.parametrize("env, fragment", [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not a whole number"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0'"),
    ({"WORLD_SIZE": "2"}, "no launcher started this one"),
    ({"WORLD_SIZE": "2", "RANK": "x", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
     "RANK='x'"),
    ({"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
     "RANK='2'"),
])
def test_a_bad_launch_environment_is_one_line(env, fragment, tmp_path, capsys, monkeypatch):
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    data = _measurements(tmp_path / "in", count=1)
    _one_error_line(run(["restore", data, "--out", tmp_path / "out", *FAST], capsys),
                    fragment, "environment variable")
    assert not (tmp_path / "out").exists()


def test_every_environment_variable_read_is_checked(monkeypatch):
    """The source reads no variable that silo_rt.environment does not list (and check)."""
    from silo_rt.environment import READ, SAVED, cache_root, env_int

    pattern = re.compile(r"""(?:environ\.get|getenv|environ\[)\(?\s*["']([A-Z_]+)["']""")
    read = {name for path in SOURCE.rglob("*.py")
            for name in pattern.findall(path.read_text())}
    assert read and read <= {*READ, *SAVED}, sorted(read - {*READ, *SAVED})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "two")
    with pytest.raises(SiloError, match="LOCAL_WORLD_SIZE='two'"):
        env_int("LOCAL_WORLD_SIZE", 1, 1)
    assert cache_root({"XDG_CACHE_HOME": "relative/cache"}) == Path.home() / ".cache"
    assert cache_root({"XDG_CACHE_HOME": "/abs/cache"}) == Path("/abs/cache")


# --- 9. every advertised bound works on every backend -----------------------------------------

def _steps_options():
    return [(" ".join(path), param) for path, command in _commands(cli)
            for param in command.params if param.name == "steps"
            and isinstance(param.type, click.IntRange) and path[0] not in ("train",
                                                                         "train-prior")]


def test_every_steps_bound_is_a_schedule_every_backend_runs(tiny_prior):
    """Each --steps range is the same, and its bounds make a schedule from the PyTorch
    prior's scheduler (torch backends, SD's steps_offset = 1) and from a bundle's stored
    alphas (ort, openvino, trt); one past the top is refused by click."""
    from silo_rt.runtime import BundleRunner
    from silo_rt.schedule import from_scheduler

    ranges = {(param.type.min, param.type.max) for _, param in _steps_options()}
    assert ranges == {(1, 999)}, ranges
    runner = BundleRunner(_demo(), backend="ort", threads=1)
    for steps in (1, 999):
        schedule = from_scheduler(tiny_prior.scheduler, steps)
        assert len(schedule) == steps and schedule.timesteps.max() < 1000
        timesteps, _ = runner.schedule(steps)
        assert len(timesteps) == steps and timesteps.max() < 1000
    with pytest.raises(SiloError, match="use at most 999"):
        from_scheduler(tiny_prior.scheduler, 1000)


@pytest.fixture(scope="module")
def tiny_operator(tiny_prior, tmp_path_factory):
    from silo_rt.operators import OperatorConfig, build_operator, save_operator

    config = OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")
    path = tmp_path_factory.mktemp("op") / "sr4.safetensors"
    return save_operator(path, build_operator(config).eval(), config)


def _bound_argv(backend, operator, measurement):
    if backend == "torch":
        return ["restore", measurement, "--backend", "torch", "--model", "tiny", "--task",
                "sr4", "--operator", operator]
    return ["restore", measurement, "--bundle", _demo(), "--backend", backend, "--threads", "1"]


@pytest.mark.parametrize("backend", ["torch", "ort"])
@pytest.mark.parametrize("option", [["--steps", "1", "--eta", "0", "--sigma-y", "0"],
                                    ["--steps", "1", "--eta", "100", "--sigma-y", "0.999"]],
                         ids=["lower", "upper"])
def test_each_lower_bound_and_float_bound_runs(backend, option, tiny_operator, tmp_path,
                                              capsys):
    measurement = _measurements(tmp_path / "in", count=1) / "m0.png"
    out = tmp_path / "x.png"
    code, _, err = run(_bound_argv(backend, tiny_operator, measurement) + option
                       + ["--out", out], capsys)
    assert code == 0 and out.is_file(), err


@pytest.mark.slow  # 999 steps: about 10 s on torch/tiny, 40 s on ort/demo (2 cores)
@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_the_top_steps_bound_runs_and_one_more_is_refused(backend, tiny_operator, tmp_path,
                                                         capsys):
    measurement = _measurements(tmp_path / "in", count=1) / "m0.png"
    out = tmp_path / "x.png"
    argv = _bound_argv(backend, tiny_operator, measurement)
    code, _, err = run(argv + ["--steps", "999", "--out", out], capsys)
    assert code == 0 and out.is_file(), err
    _one_error_line(run(argv + ["--steps", "1000", "--out", tmp_path / "y.png"], capsys),
                    "'--steps'", "1<=x<=999")


# --- 10. a kill -9'd export's leftovers are cleaned ------------------------------------------

HOLDER = """
import sys, tempfile, time
from pathlib import Path
from silo_rt.export.atomic import export_lock
out = Path(sys.argv[1])
with export_lock(out):
    tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    print("holding", flush=True)
    time.sleep(120)
"""


def _hold(out: Path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def test_a_killed_exports_lock_and_partial_folder_are_cleaned(tmp_path):
    from silo_rt.export.atomic import export_lock

    out = tmp_path / "bundle"
    holder = _hold(out)
    try:
        with pytest.raises(SiloError, match=f"another export \\(pid {holder.pid}\\)"), \
                export_lock(out):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial"))
    assert (tmp_path / "bundle.lock").is_file()
    # the dead exporter's pid may be reused: here, by this very (live) process
    (tmp_path / "bundle.lock").write_text(str(os.getpid()))
    with export_lock(out):
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "bundle.lock").write_text("")  # killed before it wrote its pid
    with export_lock(out):
        pass
    assert list(tmp_path.iterdir()) == []


# --- options the task ignores -------------------------------------------------------------------

def test_an_option_the_task_ignores_is_refused(image_folder, tmp_path, capsys):
    from silo_rt.cli.options import uses_resizer
    from silo_rt.degradations import task_names

    clean = image_folder / "img0.png"
    ignoring = [task for task in task_names() if not uses_resizer(task)]
    assert {"gb", "ip", "jpeg"} <= set(ignoring)
    for task in ignoring:
        _one_error_line(run(["degrade", clean, "--task", task, "--resizer", "dps", "--out",
                             tmp_path / "y.png"], capsys), "--resizer does nothing")
    _one_error_line(run(["train", "--arch", "cnn", "--task", "ip", "--data", image_folder,
                         "--model", "tiny", "--resizer", "dps", "--out",
                         tmp_path / "op.safetensors"], capsys), "--resizer does nothing")
    _one_error_line(run(["evaluate", "--task", "sr4", "--data", image_folder, "--out",
                         tmp_path, "--gamma", "0.5"], capsys), "--gamma does nothing")
    _one_error_line(run(["restore", clean, "--out", tmp_path / "x.png", "--overwrite"], capsys),
                    "--overwrite cannot be used with one measurement")
    y = _measurements(tmp_path / "in", count=1) / "m0.png"
    for option in (["--threads", "2"], ["--precision", "fp16"]):
        _one_error_line(run(["restore", y, "--backend", "torch", "--model", "tiny", "--task",
                             "sr4", "--operator", "op.safetensors", "--out",
                             tmp_path / "x.png", *option], capsys),
                        f"{option[0]} cannot be used with --backend torch")
    shutil.rmtree(tmp_path / "in")
    assert list(tmp_path.iterdir()) == []
    code, _, err = run(["degrade", clean, "--task", "sr4", "--resizer", "dps", "--size", "64",
                        "--out", tmp_path / "y.png"], capsys)
    assert code == 0, err
