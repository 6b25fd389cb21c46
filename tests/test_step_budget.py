"""η for a step budget (rule, tuned, exported, given), the tuning file, and `silo-rt tune`
on a copy of the embedded demo bundle (10 ms a step)."""

import json
import shutil
from pathlib import Path

import pytest
from cli_run import run
from conftest import smooth_image

from silo_rt.bundle_format import bundle_identity
from silo_rt.demo import demo_bundle
from silo_rt.errors import SiloError
from silo_rt.images import write_image
from silo_rt.runtime import BundleRunner
from silo_rt.step_budget import (
    TuningEntry,
    TuningRecord,
    choose_eta,
    rule_eta,
)


def test_rule_keeps_the_base_eta_at_any_step_count():
    for sampler in ("ddpm", "ddim"):
        for steps in (1, 10, 50, 500, 999):
            assert rule_eta(0.5, 500, steps, sampler) == 0.5
    with pytest.raises(SiloError, match="sampler"):
        rule_eta(0.5, 500, 50, "euler")


def test_choice_order_given_tuned_exported_rule():
    record = TuningRecord("ab" * 32, "sr4", [TuningEntry(50, "ddim", 3.5, 24.0, ["a.png"])])
    base = {"base_eta": 0.5, "base_steps": 500, "base_name": "the bundle's eta"}
    assert choose_eta(0.7, 50, "ddim", tuning=record, **base).source == "given"
    tuned = choose_eta(None, 50, "ddim", tuning=record, **base)
    assert (tuned.source, tuned.eta) == ("tuned", 3.5) and "1 training images" in tuned.why
    exported = choose_eta(None, 500, "ddpm", tuning=record, **base)
    assert (exported.source, exported.eta) == ("exported", 0.5)
    ruled = choose_eta(None, 50, "ddpm", tuning=record, **base)  # no ddpm-50 entry
    assert ruled.source == "rule" and ruled.eta == 0.5 and "kept for 50 ddpm steps" in ruled.why
    assert choose_eta(None, 500, "ddim", **base).source == "rule"  # another update rule


def _entry(**change):
    entry = {"steps": 50, "sampler": "ddim", "eta": 2.0, "psnr": 23.5, "images": ["a.png"],
             "grid": [[1.0, 23.0], [2.0, 23.5]], "seed": 0}
    return {**entry, **change}


def _record(**entry_change):
    return {"format": "silo-rt-tuning", "format_version": 1, "bundle_sha256": "0" * 64,
            "task": "sr4", "entries": [_entry(**entry_change)]}


def test_tuning_file_round_trip(tmp_path):
    record = TuningRecord.load(_write(tmp_path, _record()))
    assert record.lookup(50, "ddim").eta == 2.0 and record.lookup(50, "ddpm") is None
    record = record.with_entry(TuningEntry(50, "ddim", 4.0, 24.0, ["b.png"]))
    assert len(record.entries) == 1 and record.lookup(50, "ddim").eta == 4.0
    record.save(tmp_path / "again.json")
    assert TuningRecord.load(tmp_path / "again.json") == record
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.json", "tuning.json"]


def _write(folder: Path, data, name="tuning.json") -> Path:
    path = folder / name
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


@pytest.mark.parametrize("data", [
    b"\xff\xfe not utf-8", b"{not json", json.dumps([1, 2]).encode(),
    {**_record(), "format": "other"}, {**_record(), "format_version": 2},
    {**_record(), "entries": {}}, {**_record(), "task": 3},
    _record(steps=7.5), _record(steps=0), _record(steps=True), _record(sampler="euler"),
    _record(eta=float("nan")), _record(eta="2"), _record(eta=1e9), _record(psnr=None),
    _record(images="a.png"), _record(grid=[[1.0]]), _record(grid=[[1.0, "x"]]),
    _record(seed=1.5)])
def test_bad_tuning_files_are_one_line(tmp_path, data):
    if isinstance(data, dict):
        data = json.dumps(data, allow_nan=True).encode()
    path = _write(tmp_path, data)
    with pytest.raises(SiloError, match="tuning file") as info:
        TuningRecord.load(path)
    assert "\n" not in str(info.value)


@pytest.fixture
def demo_copy(tmp_path):
    """A writable copy of the embedded sr4 bundle."""
    return Path(shutil.copytree(demo_bundle("sr4"), tmp_path / "sr4"))


@pytest.fixture
def training(tmp_path):
    """A folder of 3 training images (80x72, not the bundle's size) and, beside it, a
    folder that must never be read."""
    folder = tmp_path / "train"
    other = tmp_path / "heldout"
    for f in (folder, other):
        f.mkdir()
    for i in range(3):
        write_image(folder / f"t{i}.png", smooth_image(80, seed=i)[..., :72, :])
        write_image(other / f"h{i}.png", smooth_image(64, seed=9 + i))
    return folder


def test_tune_reads_only_its_folder_and_restore_uses_the_result(demo_copy, training, capsys,
                                                                monkeypatch):
    import silo_rt.images as images

    opened = []
    real_read = images.read_image
    monkeypatch.setattr(images, "read_image", lambda p: opened.append(Path(p)) or real_read(p))
    code, out, err = run(["tune", "--bundle", demo_copy, "--data", training, "--steps", 3,
                          "--sampler", "ddim", "--images", 2, "--etas", "0.5,4"], capsys)
    assert code == 0, err
    assert opened and all(p.parent == training for p in opened)
    record = TuningRecord.load(demo_copy / "tuning.json")
    entry = record.lookup(3, "ddim")
    assert record.bundle_sha256 == bundle_identity(demo_copy)
    assert entry.images == ["t0.png", "t2.png"] and [g[0] for g in entry.grid] == [0.5, 4.0]
    assert entry.eta == max(entry.grid, key=lambda g: g[1])[0]
    assert f"best eta {entry.eta:g}" in out

    y = training.parent / "y.png"
    write_image(y, smooth_image(16, seed=4))
    code, _, err = run(["restore", y, "--bundle", demo_copy, "--steps", 3, "--sampler", "ddim",
                        "--out", training.parent / "x.png"], capsys)
    assert code == 0 and f"eta {entry.eta:g} (tuned for 3 ddim steps" in err
    code, _, err = run(["restore", y, "--bundle", demo_copy, "--steps", 4,
                        "--out", training.parent / "x.png"], capsys)
    assert code == 0 and "eta 0.5 (the bundle's eta for 500 steps, kept for 4 ddpm" in err


def test_tune_writes_atomically_and_keeps_the_old_file_on_failure(demo_copy, training, capsys,
                                                                  monkeypatch):
    before = TuningRecord(bundle_identity(demo_copy), "sr4",
                          [TuningEntry(3, "ddpm", 1.0, 20.0, ["x.png"])])
    before.save(demo_copy / "tuning.json")
    calls = []
    real = BundleRunner.restore

    def failing(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise SiloError("simulated failure")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(BundleRunner, "restore", failing)
    code, _, err = run(["tune", "--bundle", demo_copy, "--data", training, "--steps", 2,
                        "--steps", 3, "--sampler", "ddpm", "--images", 1, "--etas", "1,2"],
                       capsys)
    assert code != 0 and "simulated failure" in err
    assert TuningRecord.load(demo_copy / "tuning.json") == before
    assert sorted(p.name for p in demo_copy.iterdir() if p.name.startswith(".")) == []


def test_tune_refuses_heldout_crops_bad_etas_and_another_bundles_file(demo_copy, tmp_path,
                                                                      capsys):
    held = tmp_path / "held"
    held.mkdir()
    write_image(held / "chelsea_00.png", smooth_image(64))
    code, _, err = run(["tune", "--bundle", demo_copy, "--data", held, "--steps", 5], capsys)
    assert code == 2 and "held-out" in err
    for etas in ("nan", "0", "1,abc", ","):
        code, _, err = run(["tune", "--bundle", demo_copy, "--data", held, "--steps", 5,
                            "--etas", etas], capsys)
        assert code == 2 and err.count("\n") == 1 and "--etas" in err
    # A tuning file of another bundle (another manifest) is not used.
    TuningRecord("f" * 64, "sr4", [TuningEntry(7, "ddpm", 9.0, 20.0, ["x.png"])]).save(
        demo_copy / "tuning.json")
    choice = BundleRunner(demo_copy).eta_choice(None, 7, "ddpm")
    assert (choice.source, choice.eta) == ("rule", 0.5)


def test_tune_runs_the_pytorch_reference_and_prints_its_result(tiny_prior, training, capsys):
    """--model/--operator: the grid's PSNR is that of the reference sampler's restorations
    (recomputed here for one η), and the result is printed, not written."""
    import torch

    from silo_rt.degradations import make_measurement
    from silo_rt.evaluation import quantise
    from silo_rt.images import psnr
    from silo_rt.operators import OperatorConfig, build_operator, save_operator
    from silo_rt.sampler import SamplingOptions, restore
    from silo_rt.tuning import load_square

    torch.manual_seed(0)
    config = OperatorConfig.for_prior(tiny_prior, "cnn", "sr4")
    operator = build_operator(config).eval().requires_grad_(False)
    path = save_operator(training.parent / "op.safetensors", operator, config)
    code, out, err = run(["tune", "--model", "tiny", "--operator", path, "--data", training,
                          "--steps", 2, "--sampler", "ddim", "--images", 1, "--etas", "0.5,3",
                          "--threads", 1], capsys)
    assert code == 0, err
    entry = json.loads(out[out.index("{"):])["entries"][0]
    x = load_square(training / "t0.png", config.image_size)
    y = quantise(make_measurement(x, "sr4", 0.02, 0, config.resizer))
    options = SamplingOptions("sr4", steps=2, eta=3.0, sampler="ddim")
    expected = psnr(restore(tiny_prior, operator, torch.from_numpy(y), options).numpy(), x)
    assert entry["grid"][1] == pytest.approx([3.0, expected], rel=1e-5)
    assert not list(training.parent.glob("*.json"))
    code, _, err = run(["tune", "--model", "tiny", "--operator", path, "--data", training,
                        "--steps", 2, "--out", training.parent / "t.json"], capsys)
    assert code == 2 and "prints the eta" in err
    code, _, err = run(["tune", "--model", "tiny", "--data", training, "--steps", 2], capsys)
    assert code == 2 and "--model and --operator" in err


def test_bundle_identity_ignores_tensorrt_plans_and_nothing_else(demo_copy):
    """Building TensorRT plans rewrites the manifest's ``engines``; the tuning (and the
    restore log's bundle) must still match, while any other change must not."""
    path = demo_copy / "manifest.json"
    before = bundle_identity(demo_copy)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "engines": {"k": {"file": "tensorrt/x.plan"}}},
                               indent=3))
    assert bundle_identity(demo_copy) == before
    path.write_text(json.dumps({**data, "eta": 0.7}))
    assert bundle_identity(demo_copy) != before
    path.write_bytes(b"\xff")
    with pytest.raises(SiloError, match="cannot read"):
        bundle_identity(demo_copy)
