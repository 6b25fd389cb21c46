"""The CLI end to end on ``tiny``, and its one-line errors for user mistakes."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from cli_run import run
from PIL import Image

from silo_rt.cli import main
from silo_rt.errors import SiloError


@pytest.fixture(scope="module")
def clean_png(tmp_path_factory, image_folder):
    return image_folder / "img0.png"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_folder):
    """An sr4 CNN operator trained for 20 steps on tiny, through the CLI."""
    out = tmp_path_factory.mktemp("op") / "sr4.safetensors"
    main(["train", "--arch", "cnn", "--task", "sr4", "--data", str(image_folder),
          "--model", "tiny", "--steps", "20", "--batch-size", "4", "--lr", "1e-3",
          "--out", str(out)])
    return out


def test_degrade_train_restore_end_to_end(trained, clean_png, tmp_path, capsys):
    y = tmp_path / "y.png"
    code, out, err = run(["degrade", clean_png, "--task", "sr4", "--size", "64x64", "--out", y],
                         capsys)
    assert code == 0, err
    assert Image.open(y).size == (16, 16)
    losses = [json.loads(line)["loss"]
              for line in trained.with_name(trained.name + ".loss.jsonl").read_text().split("\n")
              if line]
    assert len(losses) == 20 and np.mean(losses[-5:]) < np.mean(losses[:5])
    x = tmp_path / "x.png"
    code, out, err = run(["restore", y, "--task", "sr4", "--model", "tiny", "--operator",
                          trained, "--steps", "30", "--out", x], capsys)
    assert code == 0, err
    im = Image.open(x)
    assert im.size == (64, 64) and im.mode == "RGB"
    assert "30/30" in err  # the progress bar ran to the end


def test_training_resumes(image_folder, tmp_path, capsys):
    out = tmp_path / "rg.safetensors"
    args = ["train", "--arch", "readout", "--task", "ip", "--data", image_folder, "--model",
            "tiny", "--batch-size", "2", "--checkpoint-every", "3", "--out", out]
    assert run(args + ["--steps", "3"], capsys)[0] == 0
    code, stdout, err = run(args + ["--steps", "5", "--resume"], capsys)
    assert code == 0, err
    assert "5 steps" in stdout
    lines = out.with_name(out.name + ".loss.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4, 5]


def _assert_error(result, fragment, *paths):
    code, out, err = result
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], err
    assert "Traceback" not in err
    for p in paths:
        assert not p.exists()


def test_bad_inputs_give_one_line_errors(trained, clean_png, tmp_path, capsys):
    out = tmp_path / "out.png"
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(clean_png.read_bytes()[:60])
    _assert_error(run(["degrade", truncated, "--task", "gb", "--out", out], capsys),
                  "cannot read image", out)
    _assert_error(run(["degrade", tmp_path / "missing.png", "--task", "gb", "--out", out],
                      capsys), "not found", out)
    y = tmp_path / "y.png"
    run(["degrade", clean_png, "--task", "sr4", "--size", "64x64", "--out", y], capsys)
    base = ["restore", y, "--model", "tiny", "--steps", "2", "--out", out]
    _assert_error(run(base + ["--task", "sr8", "--operator", trained], capsys),
                  "trained for task 'sr4'", out)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"w": print}))
    _assert_error(run(base + ["--task", "sr4", "--operator", evil, "--arch", "cnn"], capsys),
                  "refusing", out)
    _assert_error(run(base + ["--task", "sr4", "--operator", trained, "--steps", "0"], capsys),
                  "steps", out)
    _assert_error(run(["restore", truncated, "--model", "tiny", "--task", "sr4",
                       "--operator", trained, "--out", out], capsys), "cannot read image", out)


def test_wrong_task_name_exits_nonzero_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "silo_rt", "degrade", "x.png", "--task",
                             "blurry", "--out", str(tmp_path / "y.png")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Invalid value for '--task'" in result.stderr and "Traceback" not in result.stderr


def test_missing_reference_extra_is_one_line(tmp_path):
    """Without torch (runtime-only install), reference commands name the extra to install."""
    blocker = (
        "import sys\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError('blocked', name='torch')\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "from silo_rt.cli import main\n"
        "main(sys.argv[1:])\n")
    image = tmp_path / "x.png"
    Image.new("RGB", (64, 64)).save(image)
    out = tmp_path / "y.png"
    result = subprocess.run([sys.executable, "-c", blocker, "degrade", str(image), "--task",
                             "gb", "--out", str(out)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.strip() == "error: this command needs 'torch': pip install " \
                                    "'silo-rt[reference]'"


def test_debug_adds_the_traceback_to_a_user_error(tmp_path, capsys):
    """Without --debug a user error is one line; with it, its traceback comes first."""
    out = tmp_path / "y.png"
    argv = ["degrade", tmp_path / "missing.png", "--task", "gb", "--out", out]
    _assert_error(run(argv, capsys), "not found", out)
    code, _, err = run(["--debug", *argv], capsys)
    assert code == 2 and "Traceback" in err and "SiloError" in err and not out.exists()
    last = err.rstrip("\n").splitlines()[-1]
    assert last.startswith("error: ") and "not found" in last
    code, _, err = run(["--debug", "restore", "--bogus"], capsys)
    assert code == 2 and "Traceback" in err and "NoSuchOption" in err
    assert err.rstrip("\n").splitlines()[-1].startswith("error: No such option")
    _assert_error(run(argv, capsys), "not found", out)  # --debug lasts one run only


def test_python_m_silo_rt_cli_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "silo_rt.cli", "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "restore" in result.stdout and "--debug" in result.stdout


def test_importing_the_cli_loads_no_heavy_library():
    code = ("import sys, silo_rt.cli\n"
            "heavy = ('torch', 'diffusers', 'transformers', 'kornia', 'onnx', 'onnxruntime')\n"
            "print(sorted(m for m in heavy if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


# --- every bad input refused in one line, nothing written or damaged (the review's causes) ---

def _demo():
    from silo_rt.demo import demo_bundle

    return demo_bundle("sr4")


@pytest.fixture
def measurement(tmp_path):
    from silo_rt.demo import DEMO_ROOT

    y = tmp_path / "y.png"
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(y)
    assert DEMO_ROOT.is_dir()
    return y


def test_cause3_a_failing_restore_replaces_no_output(measurement, tmp_path, capsys):
    keep = tmp_path / "keep.png"
    keep.write_bytes(b"old result")
    compare = tmp_path / "cmp.png"
    compare.mkdir()
    code, out, err = run(["restore", measurement, "--bundle", _demo(), "--steps", "2",
                          "--out", keep, "--compare", compare], capsys)
    _assert_error((code, out, err), "is a folder")
    assert keep.read_bytes() == b"old result"


def test_cause3_train_keeps_the_loss_log_when_the_data_is_bad(tmp_path, clean_png, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.png").write_bytes(clean_png.read_bytes()[:60])  # header fine, pixels not
    out = tmp_path / "op.safetensors"
    log = tmp_path / "op.safetensors.loss.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n')
    code, _, err = run(["train", "--arch", "cnn", "--task", "sr4", "--data", data, "--model",
                        "tiny", "--steps", "2", "--batch-size", "1", "--out", out], capsys)
    assert code == 2 and err.rstrip("\n").split("\n")[-1].startswith("error: cannot read")
    assert log.read_text() == '{"step": 1, "loss": 0.5}\n' and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", log.name]


@pytest.mark.parametrize("argv, fragment", [
    (["restore", "{y}", "--bundle", "{demo}", "--eta", "nan"], "'--eta'"),
    (["restore", "{y}", "--bundle", "{demo}", "--sigma-y", "-1"], "'--sigma-y'"),
    (["train", "--arch", "cnn", "--task", "sr4", "--data", "{tmp}", "--model", "tiny",
      "--sigma-y-max", "-1"], "'--sigma-y-max'"),
    (["train", "--arch", "cnn", "--task", "sr4", "--data", "{tmp}", "--model", "tiny",
      "--lr", "nan"], "'--lr'"),
    (["degrade", "{y}", "--task", "gb", "--seed", "-1"], "'--seed'"),
    (["degrade", "{y}", "--task", "gb", "--size", "0"], "'--size'"),
    (["degrade", "{y}", "--task", "gb", "--size", "100000"], "'--size'"),
    (["export", "--operator", "{tmp}/op.safetensors", "--model", "tiny", "--steps", "5000"],
     "'--steps'"),
])
def test_cause4_bad_numbers_are_refused_at_the_cli(argv, fragment, measurement, tmp_path,
                                                   capsys):
    out = tmp_path / "out.png"
    argv = [a.format(y=measurement, demo=_demo(), tmp=tmp_path) for a in argv]
    _assert_error(run(argv + ["--out", out], capsys), fragment, out)


def test_cause4_ranges_are_shown_in_help(capsys):
    code, out, _ = run(["restore", "--help"], capsys)
    assert code == 0 and "0<=x<=100" in out and "0<=x<1" in out


def test_cause5_decompression_bomb_is_one_line(tmp_path, capsys):
    from test_integrity import bomb_png

    out = tmp_path / "y.png"
    _assert_error(run(["degrade", bomb_png(tmp_path / "bomb.png"), "--task", "gb", "--out",
                       out], capsys), "too large", out)


def test_cause6_ordinary_mistakes_are_one_line(measurement, tmp_path, capsys):
    out = tmp_path / "out"
    _assert_error(run(["evaluate", "--task", "sr4", "--data", tmp_path / "missing", "--out",
                       tmp_path], capsys), "--data must be a folder")
    _assert_error(run(["evaluate", "--task", "sr4", "--data", measurement, "--out", tmp_path],
                      capsys), "--data must be a folder")
    out.mkdir()
    _assert_error(run(["restore", measurement, "--bundle", _demo(), "--out", out], capsys),
                  "is a folder")
    _assert_error(run(["bench", "--model", "tiny", "--task", "ip", "--bundle", _demo(),
                       "--backends", "ort"], capsys), "is for task 'sr4', not --task 'ip'")


def test_cause6_read_only_output_folder(measurement, tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        _assert_error(run(["restore", measurement, "--bundle", _demo(), "--out",
                           folder / "x.png"], capsys), "not writable")
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("argv, fragment", [
    (["restore", "--bogus"], "No such option"),
    (["restore", "y.png"], "Missing option '--out'"),
    (["degrade", "y.png", "--task", "blurry", "--out", "x.png"], "Invalid value for '--task'"),
    (["nonsense"], "No such command"),
])
def test_cause7_click_usage_errors_are_one_line(argv, fragment, capsys):
    _assert_error(run(argv, capsys), fragment)


def test_cause7_an_error_under_a_progress_bar_gets_its_own_line(measurement, tmp_path, capsys,
                                                                 monkeypatch):
    from silo_rt.runtime.ort_backend import OrtGraphs

    def fail_after_one_step(self, z, w, context, timesteps, coefficients, noise, eta, sigma_y,
                            cfg, callback):
        callback(0, timesteps[0], z, 1.0)
        raise SiloError("step 2 failed")

    monkeypatch.setattr(OrtGraphs, "run_steps", fail_after_one_step)
    out = tmp_path / "x.png"
    code, _, err = run(["restore", measurement, "--bundle", _demo(), "--backend", "ort",
                        "--steps", "3", "--out", out], capsys)
    assert code == 2 and "1/3" in err and not out.exists()
    assert err.endswith("\nerror: step 2 failed\n")  # on its own line, nothing redrawn after


def test_cause8_smaller_refusals(measurement, tmp_path, capsys):
    _assert_error(run(["restore", measurement, "--bundle", _demo(), "--out", measurement],
                      capsys), "also an input")
    assert Image.open(measurement).size == (16, 16)
    out = tmp_path / "x.png"
    for option in (["--prompt", "a cat"], ["--cfg", "3"], ["--model", "tiny"],
                   ["--operator", "op.safetensors"]):
        _assert_error(run(["restore", measurement, "--bundle", _demo(), "--out", out, *option],
                          capsys), f"{option[0]} cannot be used with a bundle", out)
    _assert_error(run(["bench", "--model", "tiny", "--task", "ip", "--backends", "torch",
                       "--json", tmp_path / "missing" / "b.json"], capsys),
                  "output folder does not exist")
