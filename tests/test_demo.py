"""The embedded demo as a newcomer meets it: shipped bundles and examples, lean runtime."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from silo_rt.demo import BUNDLES, DEMO_ROOT, DEMO_TASKS, MODEL_CARD, demo_bundle
from silo_rt.images import psnr, read_image
from silo_rt.runtime import BundleRunner, read_manifest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FEW_STEPS = 50
# CPSNR (PSNR of A(x̂) against y) of the shipped examples after FEW_STEPS steps. Measured
# (seeds 0, 1, 2): sr4 22.87, 22.97, 24.04 dB; ip 23.53, 24.12, 24.26 dB; 20 steps give
# 19-21 dB, 500 steps about 27 dB. Unrelated images (the cat upside down, flat grey) score
# 14-15 dB. 21 dB sits ~2 dB under every measured seed and 6 dB over unrelated images.
CPSNR_THRESHOLD = {"sr4": 21.0, "ip": 21.0}

NO_TORCH = (
    "import sys\n"
    "class Blocker:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'diffusers', 'transformers', 'kornia'):\n"
    "            raise ModuleNotFoundError('blocked', name=name)\n"
    "sys.meta_path.insert(0, Blocker())\n"
    "from silo_rt.cli import main\n"
    "main(sys.argv[1:])\n")


def test_demo_is_small_and_verified():
    """Size, checksums and task of each shipped bundle. That its weights are trained is not
    taken from the manifest's word: the restoration tests below measure it."""
    total = sum(p.stat().st_size for p in DEMO_ROOT.rglob("*") if p.is_file()
                and "__pycache__" not in p.parts)
    assert total < 25e6
    for task in DEMO_TASKS:
        manifest = read_manifest(demo_bundle(task), verify=True)  # every sha256
        assert manifest["task"] == task and manifest["weights"] == "fp16"
        assert "alphas_cumprod" in manifest["schedule"]
    assert MODEL_CARD.is_file() and BUNDLES.is_dir()


@pytest.mark.parametrize("task", DEMO_TASKS)
def test_demo_restoration_is_consistent_with_the_measurement(task):
    from silo_rt.evaluation import consistency_psnr

    y = read_image(EXAMPLES / f"cat-{task}.png")
    runner = BundleRunner(demo_bundle(task), threads=2)
    # The demo's operators predate the DPS resizer: their bundles record PyTorch's bicubic.
    assert runner.resizer == "torch-bicubic"
    x = runner.restore(y, seed=0, steps=FEW_STEPS)
    assert x.shape == (1, 3, 64, 64) and np.isfinite(x).all()
    cpsnr = consistency_psnr(task, x, y, runner.resizer)
    assert cpsnr > CPSNR_THRESHOLD[task]
    # --keep-measured makes the agreement exact (up to clipping to [-1, 1]).
    kept = runner.degradation.keep_measured(y, x)
    assert consistency_psnr(task, kept, y, runner.resizer) > max(cpsnr + 15, 45)
    # The threshold means something: another held-out image is far less consistent with y.
    other = read_image(EXAMPLES / "cat.png")[..., ::-1, :].copy()  # the cat upside down
    assert consistency_psnr(task, other, y, runner.resizer) < CPSNR_THRESHOLD[task] - 5


def test_restore_without_a_model_uses_the_demo_and_needs_no_torch(tmp_path):
    out, compare = tmp_path / "x.png", tmp_path / "compare.png"
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "restore", str(EXAMPLES / "cat-sr4.png"),
         "--steps", str(FEW_STEPS), "--out", str(out), "--compare", str(compare),
         "--reference", str(EXAMPLES / "cat.png")],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "embedded 64x64 demo" in result.stderr and "SD-1.5" in result.stderr
    assert f"{FEW_STEPS}/{FEW_STEPS}" in result.stderr  # the progress bar
    x = read_image(out)
    assert x.shape == (1, 3, 64, 64)
    printed = float(result.stdout.split("PSNR against")[1].split(":")[1].split("dB")[0])
    assert printed == pytest.approx(psnr(x, read_image(EXAMPLES / "cat.png")), abs=0.01)
    width, height = Image.open(compare).size
    assert width > 3 * 256 and height > 256  # three enlarged panels and a caption


def test_demo_refuses_a_task_it_does_not_have(tmp_path, capsys):
    from silo_rt.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["restore", str(EXAMPLES / "cat-sr4.png"), "--task", "jpeg", "--out",
              str(tmp_path / "x.png")])
    assert exc.value.code == 2
    assert "demo has no 'jpeg' model" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_bad_compare_or_reference_fail_before_restoring(tmp_path, capsys):
    from silo_rt.cli import main

    out = tmp_path / "x.png"
    for extra, message in ((["--compare", str(tmp_path / "no" / "c.png")],
                            "output folder does not exist"),
                           (["--reference", str(tmp_path / "missing.png")],
                            "image not found")):
        with pytest.raises(SystemExit) as exc:
            main(["restore", str(EXAMPLES / "cat-sr4.png"), "--out", str(out), *extra])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert message in err and "SILO" not in err  # refused before any step ran
        assert not out.exists()


def test_evaluate_reports_silo_and_the_baseline(tmp_path, capsys):
    import json
    import shutil

    from silo_rt.cli import main
    from silo_rt.degradations import get_degradation, make_measurement
    from silo_rt.evaluation import quantise

    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(EXAMPLES / "cat.png", images / "a.png")
    shutil.copy(EXAMPLES / "cat.png", images / "b.png")
    main(["evaluate", "--task", "ip", "--data", str(images), "--out", str(tmp_path),
          "--steps", "10", "--threads", "2"])
    report = json.loads((tmp_path / "ip.json").read_text())
    assert report["count"] == 2 and report["steps"] == 10
    # paths as records name them (tmp_path lies outside the current directory and home)
    assert report["images"] == "images" and not Path(report["bundle"]).is_absolute()
    assert set(report["mean"]) == {"silo", "silo_keep_measured", "baseline"}
    # The baseline numbers are those of an independent recomputation (image i uses seed i).
    x = read_image(images / "b.png")
    y = quantise(make_measurement(x, "ip", 0.02, 1))
    assert report["per_image"][1]["baseline"]["psnr"] == pytest.approx(
        psnr(get_degradation("ip").baseline(y, 64), x), abs=1e-6)
    assert (tmp_path / "ip-grid.png").is_file()
    assert "biharmonic fill" in capsys.readouterr().out
