"""The CLI end to end on ``tiny``, and its one-line errors for user mistakes."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from silo_rt.cli import main


def run(argv, capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


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
    code, out, err = run(["degrade", clean_png, "--task", "sr4", "--size", "64", "--out", y],
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
    run(["degrade", clean_png, "--task", "sr4", "--size", "64", "--out", y], capsys)
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
