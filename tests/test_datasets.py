"""`silo-rt restore DIR`: per-image seeds, sharding invariance, resumption, one-line errors.

The restorations use the embedded sr4 demo bundle (a real exported bundle, batch 1, 64x64;
four steps restore an image in a fraction of a second) rather than a freshly exported `tiny`
bundle, whose export alone would take over a minute.
"""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from cli_run import run
from conftest import TOLERANCES
from fake_restorer import RestorerInterface
from PIL import Image

from silo_rt.cli import main
from silo_rt.datasets import (
    LOG_NAME,
    Processes,
    image_seed,
    list_inputs,
    read_log,
    restore_dataset,
)

STEPS = ["--steps", "4", "--threads", "1"]




def _measurements(folder, count=5, side=16, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"m{i}.png")
    return folder


def _pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return _measurements(tmp_path_factory.mktemp("measurements") / "in")


@pytest.fixture(scope="module")
def single_run(dataset, tmp_path_factory):
    """The whole set restored by one process (through the CLI)."""
    out = tmp_path_factory.mktemp("single") / "out"
    main(["restore", str(dataset), "--out", str(out), *STEPS])
    return out


def test_image_seed_is_stable_and_depends_on_base_and_name():
    assert image_seed(0, "m0.png") == 2306262107120270795  # sha256("0:m0.png") mod 2**63
    assert image_seed(0, "m0.png") != image_seed(1, "m0.png") != image_seed(1, "m1.png")
    assert all(0 <= image_seed(s, "x") < 2**63 for s in (0, 2**63 - 1))


def test_single_run_writes_every_image_and_its_log_line(single_run, dataset):
    assert sorted(_pngs(single_run)) == [f"m{i}.png" for i in range(5)]
    for name in _pngs(single_run):
        assert Image.open(single_run / name).size == (64, 64)
    lines = [json.loads(line) for line in (single_run / LOG_NAME).read_text().splitlines()]
    assert [r["image"] for r in lines] == [f"m{i}.png" for i in range(5)]
    for record in lines:
        assert record["seed"] == image_seed(0, record["image"])
        assert record["backend"] == "auto: ort (SILO_RT_AUTO_CPU=ort)"  # conftest pins it
        assert record["process"] == 0
        assert record["steps"] == 4 and record["seconds"] > 0 and record["cpsnr"] > 0


def test_two_accelerate_processes_give_the_single_process_images(single_run, dataset,
                                                                tmp_path):
    """`accelerate launch` with two CPU processes: the union of their shards is byte for byte
    the single-process run, each process did part of it, and the logs are merged."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
         "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "-m", "silo_rt", "restore", str(dataset), "--out", str(out), *STEPS],
        capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 1 of 2" in result.stdout and "process 2 of 2" in result.stdout
    assert _pngs(out) == _pngs(single_run)
    records = read_log(out)
    assert sorted(records) == sorted(_pngs(single_run))
    assert {r["process"] for r in records.values()} == {0, 1}
    assert [p.name for p in out.glob("restore-log*")] == [LOG_NAME]  # rank files merged
    single = read_log(single_run)
    assert all(records[n]["seed"] == single[n]["seed"] for n in records)


def test_a_subset_from_a_list_file_gives_the_same_images(single_run, dataset, tmp_path,
                                                         capsys):
    """Each image's seed comes from its name: restored alone (via a .txt list with paths
    relative to the list) it is the same as in the whole set."""
    listing = tmp_path / "lists" / "subset.txt"
    listing.parent.mkdir()
    rel = os.path.relpath(dataset, listing.parent)
    listing.write_text(f"# two of five\n{rel}/m3.png\n\n{rel}/m1.png\n")
    out = tmp_path / "out"
    code, stdout, err = run(["restore", listing, "--out", out, *STEPS], capsys)
    assert code == 0, err
    assert _pngs(out) == {n: b for n, b in _pngs(single_run).items() if n in ("m1.png",
                                                                             "m3.png")}


def test_rerun_skips_what_is_done_and_redoes_what_is_not(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(["restore", dataset, "--out", out, *STEPS], capsys)[0] == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    log = (out / LOG_NAME).read_text()
    code, stdout, err = run(["restore", dataset, "--out", out, *STEPS], capsys)
    assert code == 0 and "restored 0 of 5" in stdout and "5 were already done" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps
    assert (out / LOG_NAME).read_text() == log
    # A missing output, and an output with no log line (killed between write and log),
    # are both redone; nothing else is touched.
    (out / "m2.png").unlink()
    lines = log.splitlines()
    kept = [line for line in lines if '"m4.png"' not in line and '"m0.png"' not in line]
    (out / LOG_NAME).write_text("\n".join(kept) + '\n{"image": "m0.p')  # m0's line torn
    code, stdout, err = run(["restore", dataset, "--out", out, *STEPS], capsys)
    assert code == 0 and "restored 3 of 5" in stdout, stdout  # m0 (torn), m2, m4
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert [n for n in sorted(after) if after[n] == stamps.get(n)] == ["m1.png", "m3.png"]
    assert sorted(read_log(out)) == [f"m{i}.png" for i in range(5)]


class FakeRunner(RestorerInterface):
    """A batch-``batch`` stand-in for BundleRunner: x = y enlarged x4 plus seeded noise."""

    task, resizer, label, steps, backend = "sr4", "dps", "fake", 4, "ort"

    def __init__(self, batch, path):
        self.manifest = SimpleNamespace(measurement_shape=[batch, 3, 16, 16], batch=batch,
                                        eta=0.5, sigma_y=0.02)
        self.path = path  # a folder with a manifest.json: the bundle's identity in the log
        path.mkdir(exist_ok=True)
        (path / "manifest.json").write_text("{}")
        self.calls = []

    def restore(self, y, seed, eta=None, sigma_y=None, steps=None, keep_measured=False,
                sampler="ddpm", overlap=2):
        assert y.shape == tuple(self.manifest.measurement_shape)
        self.calls.append(seed)
        noise = np.random.default_rng(seed).standard_normal((y.shape[0], 3, 64, 64))
        big = y.repeat(4, axis=-1).repeat(4, axis=-2)
        return np.clip(big + 0.2 * noise, -1, 1).astype(np.float32)


def test_batches_pad_the_last_and_shards_do_not_change_results(tmp_path):
    """Batch 3, 5 images: two batches (the second padded); one process or two (in any
    order) write the same files; a batch is seeded by its first image."""
    inputs = list_inputs(_measurements(tmp_path / "in", count=5))
    one = FakeRunner(3, tmp_path / "bundle")
    summary = restore_dataset(one, inputs, tmp_path / "one", seed=7, processes=Processes())
    assert summary["restored"] == 5 and len(one.calls) == 2
    assert one.calls == [image_seed(7, "m0.png"), image_seed(7, "m3.png")]
    two = FakeRunner(3, tmp_path / "bundle")
    for rank in (1, 0):
        restore_dataset(two, inputs, tmp_path / "two", seed=7, processes=Processes(rank, 2))
    assert sorted(two.calls) == sorted(one.calls)
    assert _pngs(tmp_path / "one") == _pngs(tmp_path / "two")
    assert len(_pngs(tmp_path / "one")) == 5  # the padding's output was dropped
    logs = sorted(p.name for p in (tmp_path / "two").glob("restore-log*"))
    assert logs == ["restore-log.rank0.jsonl", "restore-log.rank1.jsonl"]  # no accelerate
    assert sorted(read_log(tmp_path / "two")) == [f"m{i}.png" for i in range(5)]


def test_numpy_consistency_matches_the_torch_measurement():
    from silo_rt.degradations import make_measurement
    from silo_rt.evaluation import measure

    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    for task in ("ip", "sr4", "sr8"):
        for resizer in ("dps", "torch-bicubic"):
            np.testing.assert_allclose(measure(task, x, resizer),
                                       make_measurement(x, task, 0.0, 0, resizer),
                                                        **TOLERANCES["float32-pixels"])


def _assert_error(result, fragment, *absent):
    code, out, err = result
    lines = [line for line in err.strip().splitlines()  # not the notes before the error
             if line and not line.startswith(("using the embedded", "eta "))]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert fragment in lines[0], lines[0]
    for path in absent:
        assert not path.exists()


def test_bad_datasets_are_one_line_errors_with_no_output(dataset, tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_error(run(["restore", empty, "--out", out], capsys), "no .png", out)
    # another size is restored by tiles, except for ip: nothing it can restore, no out
    large = _measurements(tmp_path / "large", count=2, side=32)
    _assert_error(run(["restore", large, "--task", "ip", "--out", out, *STEPS], capsys),
                  "is 32x32", out)
    twice = _measurements(tmp_path / "twice", count=1)
    Image.open(twice / "m0.png").save(twice / "m0.webp")
    _assert_error(run(["restore", twice, "--out", out], capsys), "would both", out)
    listing = tmp_path / "list.txt"
    listing.write_text("in/missing.png\n")
    _assert_error(run(["restore", listing, "--out", out], capsys), "not found", out)
    _assert_error(run(["restore", tmp_path / "absent.txt", "--out", out], capsys),
                  "image list not found", out)
    _assert_error(run(["restore", dataset, "--out", tmp_path / "no" / "out"], capsys),
                  "parent does not exist")
    afile = tmp_path / "afile"
    afile.write_text("x")
    _assert_error(run(["restore", dataset, "--out", afile], capsys), "is a file")
    _assert_error(run(["restore", dataset, "--out", out, "--compare", tmp_path / "c.png"],
                      capsys), "--compare cannot be used with a folder", out)
    _assert_error(run(["restore", dataset, "--out", out, "--model", "tiny"], capsys),
                  "from a bundle", out)
    _assert_error(run(["restore", dataset, "--out", dataset, *STEPS], capsys),
                  "is the input folder")
    assert sorted(p.name for p in dataset.iterdir()) == [f"m{i}.png" for i in range(5)]


def test_a_folder_restores_without_torch_or_accelerate(dataset, tmp_path):
    """The lean runtime (no torch, no accelerate) restores a folder, one process."""
    blocker = (
        "import sys\n"
        "class Blocker:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'accelerate'):\n"
        "            raise ModuleNotFoundError('blocked', name=name)\n"
        "sys.meta_path.insert(0, Blocker())\n"
        "from silo_rt.cli import main\n"
        "main(sys.argv[1:])\n")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-c", blocker, "restore", str(dataset), "--out",
                             str(out), "--steps", "2", "--threads", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(_pngs(out)) == 5 and len(read_log(out)) == 5
