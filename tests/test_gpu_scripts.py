"""The GPU smoke run's scripts on a CPU: versions come first, a failing import stops the run
at once with one line, and (slow, needs PyPI) the device-image rehearsal passes."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "benchmarks"


def _python3_first(tmp_path) -> dict:
    """An environment whose ``python3`` is this interpreter (the smoke script calls
    ``python3``, as on the GPU image)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env


@pytest.mark.parametrize("name", ["gpu_smoke.sh", "fetch_gpu_wheels.sh", "gpu_rehearsal.sh"])
def test_gpu_scripts_parse(name):
    result = subprocess.run(["bash", "-n", str(SCRIPTS / name)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_smoke_prints_versions_first_and_stops_at_a_failing_import(tmp_path):
    """The predicted failure on the device image: diffusers 0.42 cannot import there. The run
    must say so in one line within seconds, not run the tests and benches after it."""
    site = tmp_path / "site"
    (site / "diffusers").mkdir(parents=True)
    (site / "diffusers" / "__init__.py").write_text(
        "raise ImportError(\"cannot import name 'RevisionResolutionError' from "
        "'huggingface_hub.errors'\")\n")
    env = {**_python3_first(tmp_path), "SITE": str(site), "OUT": str(tmp_path / "out"),
           "SMOKE_STAGES": "versions,imports,collect"}
    start = time.perf_counter()
    done = subprocess.run(["bash", str(SCRIPTS / "gpu_smoke.sh")], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.perf_counter() - start < 60
    first_versions = next(i for i, line in enumerate(lines) if "huggingface-hub:" in line)
    assert first_versions < next(i for i, line in enumerate(lines) if line.endswith("imports"))
    for name in ("torch:", "transformers:", "diffusers:", "gpu:", "torch CUDA build"):
        assert any(line.lstrip().startswith(name) for line in lines), name
    stops = [line for line in lines if "smoke: stopping:" in line]
    assert stops[0] == ("smoke: stopping: import diffusers failed: ImportError: cannot import "
                        "name 'RevisionResolutionError' from 'huggingface_hub.errors'")
    assert not any("collecting the GPU tests" in line for line in lines)
    assert (tmp_path / "out" / "smoke.log").read_text().count("smoke: stopping:") >= 1


def test_smoke_installs_only_into_its_target_folder():
    text = (SCRIPTS / "gpu_smoke.sh").read_text()
    installs = [line for line in text.splitlines()
                if "pip install" in line and not line.lstrip().startswith("#")]
    assert installs and all("--target" in line and "--no-deps" in line for line in installs)
    assert 'python3 -m zipfile -e "$1" "$SITE"' in text  # a venv without pip
    assert "python3" in text and "-e ." not in text
    assert not (SCRIPTS / "gpu_check.sh").exists()  # replaced by gpu_smoke.sh


@pytest.mark.slow
def test_the_device_image_rehearsal_passes(tmp_path):
    """benchmarks/gpu_rehearsal.sh: a venv of the image's packages (CPU builds, no pip), the
    pinned wheels installed as the smoke run installs them, import and collect stages, with
    an old and the latest transformers/huggingface-hub pair. Needs PyPI; minutes."""
    done = subprocess.run(["bash", str(SCRIPTS / "gpu_rehearsal.sh"), str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=1800, check=False)
    log = (tmp_path / "work" / "rehearsal.log").read_text()
    assert done.returncode == 0, log[-4000:]
    assert "PASSED: pair 5.0.0:1.3.0" in log and "PASSED: pair latest:latest" in log
    assert log.count("every import ok; tiny prior built") == 2
