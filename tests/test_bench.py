"""The bench's JSON schema and the ratios it derives."""

import json

import pytest

from silo_rt.bench.report import SCHEMA, derive_ratios, render_markdown, render_table, validate
from silo_rt.bench.timing import summarize
from silo_rt.cli import main


def test_summarize_median_and_p90():
    stats = summarize([0.001 * i for i in range(1, 11)])  # 1..10 ms
    assert stats["median_ms"] == pytest.approx(5.5)
    assert stats["p90_ms"] == pytest.approx(9.0)
    assert stats["min_ms"] == pytest.approx(1.0) and stats["reps"] == 10


def test_derived_ratios():
    result = {
        "measurements": [
            {"backend": "torch", "measure": "step", "median_ms": 30.0},
            {"backend": "ort", "measure": "step", "median_ms": 10.0},
        ],
        "restorations": [{"backend": "torch", "total_s": 6.0},
                         {"backend": "ort", "total_s": 2.0}],
        "baselines": [{"method": "ldps", "median_ms": 60.0}],
        "floor": {"floor_step_ms": 1.0},
    }
    derive_ratios(result)
    ort = result["measurements"][1]
    assert ort["speedup_vs_torch"] == pytest.approx(3.0)
    assert ort["achieved_fraction"] == pytest.approx(0.1)
    assert result["restorations"][1]["speedup_vs_torch"] == pytest.approx(3.0)
    assert result["baselines"][0]["silo_time_ratio"] == pytest.approx(0.5)
    assert "paired_speedup_vs_torch" not in ort  # no per-round samples, no pairs


def test_paired_speedup_is_the_median_of_round_ratios():
    # Steps: the last two rounds run 3x slower for both backends; each pair still says 2x.
    # Restorations: the pairs (4x, 1.25x, 2x) give 2x; the ratio of medians says 1.25x.
    torch_ms, ort_ms = [30.0, 30.0, 30.0, 90.0, 90.0], [15.0, 15.0, 15.0, 45.0, 45.0]
    result = {
        "measurements": [
            {"backend": "torch", "measure": "step", "median_ms": 30.0, "p90_ms": 90.0,
             "samples_ms": torch_ms},
            {"backend": "ort", "measure": "step", "median_ms": 15.0, "p90_ms": 45.0,
             "samples_ms": ort_ms},
        ],
        "restorations": [
            {"backend": "torch", "steps": 10, "total_s": 5.0, "per_step_ms": 500.0,
             "samples_s": [4.0, 5.0, 9.0]},
            {"backend": "ort", "steps": 10, "total_s": 4.0, "per_step_ms": 400.0,
             "samples_s": [1.0, 4.0, 4.5]},
        ],
        "baselines": [], "floor": {"floor_step_ms": 1.0},
    }
    derive_ratios(result)
    assert result["measurements"][1]["paired_speedup_vs_torch"] == pytest.approx(2.0)
    rest = result["restorations"][1]
    assert rest["speedup_vs_torch"] == pytest.approx(1.25)  # 5.0 / 4.0, medians
    assert rest["paired_speedup_vs_torch"] == pytest.approx(2.0)  # rounds: 4, 1.25, 2
    assert "(paired 2.00x)" in render_table({**result, "config": {
        "model": "m", "arch": "cnn", "task": "sr4", "image_size": 64, "threads": 2},
        "peak_rss_mib": {}, "floor": {"step_flops": 1e9, "matmul_gflops": 1.0,
                                      "floor_step_ms": 1.0}})


def test_bench_cli_writes_a_valid_report(tmp_path, capsys):
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    png = tmp_path / "bench.png"
    main(["bench", "--model", "tiny", "--task", "ip", "--backends", "torch", "--reps", "2",
          "--warmup", "0", "--no-restoration", "--baselines", "ldps", "--baseline-reps", "1",
          "--json", str(out), "--markdown", str(md), "--plot", str(png)])
    result = json.loads(out.read_text())
    validate(result)
    assert result["schema"] == SCHEMA
    assert {m["measure"] for m in result["measurements"]} == {"unet_h", "vae_encoder",
                                                             "vae_decoder", "step"}
    assert result["config"]["prior_random_weights"] is True
    assert result["floor"]["step_flops"] > 0 and result["baselines"][0]["method"] == "ldps"
    assert "silo-rt bench: tiny (random weights)" in capsys.readouterr().out
    assert md.read_text().startswith("### silo-rt bench") and png.read_bytes()[:4] == b"\x89PNG"
    assert "step" in render_table(result) and "| torch | step |" in render_markdown(result)


def test_validate_rejects_foreign_json():
    with pytest.raises(ValueError):
        validate({"schema": "something-else"})


def test_a_failing_backend_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    """ort made to fail on the tiny prior: torch is still timed, the JSON and table say why."""
    from silo_rt.bench import timers
    from silo_rt.bench.report import all_failed
    from silo_rt.errors import SiloError

    def broken(backend, work, out):
        raise SiloError("TensorRT cannot load step.plan: TensorRT says invalid")

    monkeypatch.setitem(timers.TIMERS, "ort", broken)
    out = tmp_path / "bench.json"
    main(["bench", "--model", "tiny", "--task", "ip", "--backends", "torch,ort", "--reps", "2",
          "--warmup", "0", "--no-restoration", "--baselines", "none", "--json", str(out)])
    result = json.loads(out.read_text())
    validate(result)
    assert result["failed"] == {"ort": "TensorRT cannot load step.plan: TensorRT says invalid"}
    assert {m["backend"] for m in result["measurements"]} == {"torch"}
    assert not all_failed(result)
    table = capsys.readouterr().out
    assert "ort" in table and "failed" in table and "TensorRT says invalid" in table
    assert "| ort | failed | - | - | TensorRT cannot load" in render_markdown(result)


def test_a_call_failing_mid_timing_is_dropped_from_the_rounds():
    from silo_rt.bench.timing import interleaved

    calls = {"fine": lambda: 1, "flaky": lambda: 1 / 0}
    failed = {}
    timed = interleaved(calls, 0, 3, settle=False, failed=failed)
    assert set(timed) == {"fine"} and timed["fine"]["reps"] == 3
    assert failed == {"flaky": "ZeroDivisionError: division by zero"}


def test_bench_exits_1_when_every_backend_failed(tmp_path, monkeypatch, capsys):
    """The report is still written, and the exit status says nothing was measured."""
    from silo_rt.bench import timers
    from silo_rt.errors import SiloError

    def broken(backend, work, out):
        raise SiloError("no ONNX Runtime here")

    monkeypatch.setitem(timers.TIMERS, "ort", broken)
    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--model", "tiny", "--task", "ip", "--backends", "ort", "--reps", "2",
              "--warmup", "0", "--no-restoration", "--baselines", "none", "--json", str(out)])
    assert exc.value.code == 1
    assert json.loads(out.read_text())["failed"] == {"ort": "no ONNX Runtime here"}
    assert capsys.readouterr().err.rstrip("\n").split("\n")[-1].startswith(
        "error: every backend failed")


def test_torch_compile_failing_is_one_line_and_the_others_still_run(tmp_path, monkeypatch,
                                                                     capsys):
    """torch.compile made to raise: the bench records why in one line and times torch."""
    import torch

    from silo_rt.bench.report import all_failed

    def broken(*args, **kwargs):
        raise RuntimeError("Inductor cannot compile this\nlong traceback that must not show")

    monkeypatch.setattr(torch, "compile", broken)
    out = tmp_path / "bench.json"
    main(["bench", "--model", "tiny", "--task", "ip", "--backends", "torch,torch-compile",
          "--reps", "2", "--warmup", "0", "--no-restoration", "--baselines", "none",
          "--json", str(out)])
    result = json.loads(out.read_text())
    validate(result)
    assert result["failed"] == {"torch-compile": "RuntimeError: Inductor cannot compile this"}
    assert {m["backend"] for m in result["measurements"]} == {"torch"}
    assert "compiled" not in result and not all_failed(result)
    assert "| torch-compile | failed | - | - | RuntimeError: Inductor" in render_markdown(result)
    assert "long traceback" not in capsys.readouterr().out


def test_torch_compile_cuda_graph_is_skipped_without_a_gpu(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "bench.json"
    main(["bench", "--model", "tiny", "--task", "ip", "--backends",
          "torch,torch-compile-cuda-graph", "--reps", "2", "--warmup", "0", "--no-restoration",
          "--baselines", "none", "--json", str(out)])
    failed = json.loads(out.read_text())["failed"]
    assert list(failed) == ["torch-compile-cuda-graph"]
    assert "GPU" in failed["torch-compile-cuda-graph"]


def test_machine_info_names_the_cpu_and_its_vector_extensions():
    from pathlib import Path

    from silo_rt.bench.timing import machine_info

    info = machine_info()
    if Path("/proc/cpuinfo").exists():
        assert info["cpu_model"] and isinstance(info["cpu_flags"], list)
        assert "avx2" in info["cpu_flags"] or info["processor"] != "x86_64"


@pytest.mark.slow
def test_torch_compile_backend_on_tiny(tmp_path):
    """Inductor really compiles the guided step (minutes): timed interleaved, parity vs eager."""
    out = tmp_path / "bench.json"
    main(["bench", "--model", "tiny", "--task", "ip", "--backends", "torch,torch-compile",
          "--steps", "2", "--reps", "3", "--warmup", "1", "--restore-reps", "1",
          "--baselines", "none", "--json", str(out), "--markdown", str(tmp_path / "b.md")])
    result = json.loads(out.read_text())
    validate(result)
    assert not result["failed"]
    compiled = result["compiled"]["torch-compile"]
    assert compiled["compile_s"] > 0 and compiled["rel_err_vs_torch"] < 1e-4
    step = {m["backend"]: m for m in result["measurements"] if m["measure"] == "step"}
    assert step["torch-compile"]["reps"] == 3 and "paired_speedup_vs_torch" in step["torch-compile"]
    rest = {r["backend"]: r for r in result["restorations"]}
    assert rest["torch-compile"]["rel_diff_vs_torch"] < 1e-4
    assert "torch-compile: compiled in" in (tmp_path / "b.md").read_text()


def test_scaling_sweep_runs_each_point_in_its_own_process(tmp_path):
    """torch on tiny, one size, batches 1 and 2: per-image time, peak RSS and stages."""
    from silo_rt.bench.scaling import (
        ScalingConfig,
        render_scaling_markdown,
        run_scaling,
        write_scaling_plot,
    )

    result = run_scaling(ScalingConfig(model="tiny", task="ip", backends=("torch",),
                                       sizes=(64,), batches=(1, 2), reps=1, warmup=0))
    assert not result["failed"] and result["schema"] == "silo-rt-bench-scaling/1"
    points = {p["batch"]: p for p in result["points"]}
    assert set(points) == {1, 2} and points[2]["pixels"] == 2 * 64 * 64
    assert points[2]["per_image_ms"] == pytest.approx(points[2]["median_ms"] / 2)
    assert all(p["peak_rss_mib"] > 0 and p["stages_mib"] for p in points.values())
    assert "| torch | 64 | 2 | step |" in render_scaling_markdown(result)
    write_scaling_plot(result, tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_scaling_refuses_unknown_backends():
    from silo_rt.bench.scaling import ScalingConfig, run_scaling
    from silo_rt.errors import SiloError

    with pytest.raises(SiloError, match=r"unknown backend\(s\) \['trt-fp16'\]; choose from "
                                        "torch, torch-compile, ort, openvino, "
                                        "openvino-bf16"):
        run_scaling(ScalingConfig(model="tiny", backends=("trt-fp16",)))


def test_one_registry_of_backend_names():
    """The CLI, the bundle runner and the bench take their backend names from one table."""
    import click

    from silo_rt.backends import BACKENDS, RESTORE_CHOICES, check_backends, names
    from silo_rt.bench import BenchConfig
    from silo_rt.cli import cli
    from silo_rt.errors import SiloError
    from silo_rt.runtime import BundleRunner

    restore_backend = next(p for p in cli.commands["restore"].params if p.name == "backend")
    assert isinstance(restore_backend.type, click.Choice)
    assert tuple(restore_backend.type.choices) == RESTORE_CHOICES
    assert RESTORE_CHOICES == ("auto", "torch", "torch-cuda", "ort", "openvino", "trt")
    assert set(names("bench")) <= set(BACKENDS) and "trt" not in names("bench")
    with pytest.raises(SiloError, match="unknown backend"):
        BenchConfig(backends=("onnx",)).validate()
    with pytest.raises(SiloError, match="unknown backend 'torch'; a bundle runs with auto"):
        BundleRunner("unused", backend="torch")
    assert check_backends(["ort", "torch"], "bench") == ("ort", "torch")
    from silo_rt.backends import BUNDLE_BACKENDS, RUNNER_BACKENDS, runner_backend

    assert {runner_backend(b)[0] for b in BUNDLE_BACKENDS} == set(RUNNER_BACKENDS)
    assert [runner_backend(b) for b in ("ort", "openvino-bf16", "trt-fp16")] == [
        ("ort", None), ("openvino", "bf16"), ("trt", "fp16")]
    with pytest.raises(SiloError, match="a bundle runs with auto, ort, openvino, trt$"):
        BundleRunner("unused", backend="trt-fp16")  # a bench name, not a runner's


def test_a_backend_is_opened_by_its_registry_row():
    """Each runner backend's row names a class that opens a bundle; the runner opens ort
    through it (the same numbers as the class opened by hand), and a row refuses a precision
    it does not run before importing anything."""
    from importlib import import_module

    import numpy as np

    from silo_rt.backends import BACKENDS, RUNNER_BACKENDS
    from silo_rt.bundle_format import load_manifest
    from silo_rt.demo import demo_bundle
    from silo_rt.errors import SiloError
    from silo_rt.runtime import BundleRunner
    from silo_rt.runtime.ort_backend import OrtGraphs

    for name in RUNNER_BACKENDS:
        module, _, cls = BACKENDS[name].opens.partition(":")
        assert isinstance(getattr(import_module(module), cls).__dict__["open"], classmethod)
    bundle = demo_bundle("sr4")
    runner = BundleRunner(bundle, backend="ort", threads=1)
    assert isinstance(runner.graphs, OrtGraphs) and runner.label == runner.graphs.label
    y = np.random.default_rng(0).uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    by_hand = BundleRunner(bundle, backend="ort", threads=1)
    by_hand.graphs = OrtGraphs(by_hand.path, load_manifest(bundle), threads=1)
    np.testing.assert_array_equal(runner.restore(y, steps=2), by_hand.restore(y, steps=2))
    with pytest.raises(SiloError, match="TensorRT runs a bundle's fp16 or fp32 step, not bf16"):
        BACKENDS["trt"].open(bundle, load_manifest(bundle), precision="bf16")


def test_bench_times_openvino_beside_onnx_runtime_on_tiny(tmp_path):
    """Both bundle backends in the same rounds; their restorations equal the reference's."""
    pytest.importorskip("openvino")
    from silo_rt.bench import BenchConfig, run_bench

    result = run_bench(BenchConfig(model="tiny", task="ip", backends=("torch", "ort", "openvino"),
                                   steps=3, reps=2, warmup=1, restore_reps=1, threads=2,
                                   baselines=(), cache=tmp_path))
    assert not result["failed"]
    steps = {m["backend"] for m in result["measurements"] if m["measure"] == "step"}
    assert steps == {"torch", "ort", "openvino"}
    rel = {r["backend"]: r["rel_diff_vs_torch"] for r in result["restorations"]
           if r["backend"] != "torch"}
    assert set(rel) == {"ort", "openvino"} and max(rel.values()) < 1e-4


def test_int_lists_of_the_scaling_options():
    from silo_rt.bench.scaling import parse_int_list
    from silo_rt.errors import SiloError

    assert parse_int_list("128, 256", "--sizes") == (128, 256)
    for bad in ("", "a,2", "0"):
        with pytest.raises(SiloError, match="--batches takes positive integers"):
            parse_int_list(bad, "--batches")


# ------------------------------------------------------------------ the GPU backends' plumbing


def test_trt_fp16_times_an_fp16_bundle_cached_under_its_own_name(tmp_path, monkeypatch):
    """``trt-fp16`` builds ``step_fp16``: its bench bundle is exported with --precision fp16
    and cached apart from the fp32 one (which has no step_fp16)."""
    from types import SimpleNamespace

    import silo_rt.export as export
    from silo_rt.bench import BenchConfig
    from silo_rt.bench.timers import time_bundle

    exported = []
    monkeypatch.setattr(export, "export_bundle", lambda prior, op, cfg, options, path, **kw:
                        exported.append((path.name, options.precision)))
    prior = SimpleNamespace(fingerprint=lambda: "p")
    op_config = SimpleNamespace(to_json=lambda: "{}")
    config = BenchConfig(model="tiny", task="sr4", steps=4, cache=tmp_path)
    config.bundle_for(prior, None, op_config, 64, precision="fp16")
    config.bundle_for(prior, None, op_config, 64)
    assert exported == [("bench-tiny-cnn-sr4-64px-4st-fp16", "fp16"),
                        ("bench-tiny-cnn-sr4-64px-4st", "fp32")]
    asked = []

    def stop(*args, precision="fp32", **kw):
        asked.append(precision)
        raise RuntimeError("stop after the export")

    monkeypatch.setattr(BenchConfig, "bundle_for", stop)
    work = SimpleNamespace(config=config, prior=prior, operator=None, op_config=op_config,
                           image_size=64)
    for backend in ("trt-fp16", "trt-fp32", "ort", "openvino-bf16"):
        with pytest.raises(RuntimeError, match="stop"):
            time_bundle(backend, work, None)
    assert asked == ["fp16", "fp32", "fp32", "fp32"]


def test_gpu_backends_are_held_to_the_floor_of_their_own_precision():
    result = {
        "measurements": [
            {"backend": "torch-cuda-graph", "measure": "step", "median_ms": 4.0},
            {"backend": "trt-fp32", "measure": "step", "median_ms": 8.0},
            {"backend": "trt-fp16", "measure": "step", "median_ms": 1.0},
            {"backend": "ort", "measure": "step", "median_ms": 10.0},
        ],
        "restorations": [], "baselines": [],
        "floor": {"floor_step_ms": 1.0, "gpu_floor_step_ms_fp32": 2.0,
                  "gpu_floor_step_ms_fp16": 0.25},
    }
    derive_ratios(result)
    fractions = [m["achieved_fraction"] for m in result["measurements"]]
    assert fractions == pytest.approx([0.5, 0.25, 0.25, 0.1])


def test_gpu_memory_goes_back_before_the_next_backend(monkeypatch):
    """torch's cached GPU blocks are returned after a torch-cuda backend, also after a
    failure, so TensorRT's engines (next in the same process) find the memory."""
    from types import SimpleNamespace

    import torch

    import silo_rt.torch_cuda as torch_cuda
    from silo_rt.bench import timers

    emptied = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    monkeypatch.setattr(torch_cuda, "require_cuda", lambda: torch.device("cpu"))

    def fail(*args):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(timers, "_time_cuda_loop", fail)
    moved = []
    module = SimpleNamespace(to=moved.append)
    prior = SimpleNamespace(unet=module, vae=module, text_encoder=module)
    with pytest.raises(RuntimeError, match="out of memory"):
        timers.time_torch_cuda("torch-cuda", SimpleNamespace(prior=prior, operator=module), None)
    assert emptied == [True] and moved[-4:] == ["cpu"] * 4


def test_the_bench_bundle_is_reused_only_for_the_same_prior_and_operator(tmp_path,
                                                                         monkeypatch):
    from types import SimpleNamespace

    import silo_rt.bundle_format as bundle_format
    import silo_rt.export as export
    from silo_rt.bench.subject import Subject

    exported = []

    def fake_export(prior, op, cfg, options, path, **kw):
        path.mkdir(parents=True, exist_ok=True)
        exported.append((path.name, options.precision))

    monkeypatch.setattr(export, "export_bundle", fake_export)
    monkeypatch.setattr(bundle_format, "load_manifest", lambda path, verify: SimpleNamespace(
        prior={"fingerprint": "p"}, operator={"a": 1}, graphs={"step": {}}))
    subject = Subject("tiny", "sr4", steps=4, cache=tmp_path)
    prior = SimpleNamespace(fingerprint=lambda: "p")
    same, other = (SimpleNamespace(to_json=lambda v=v: f'{{"a": {v}}}') for v in (1, 2))
    path, seconds = subject.bundle(prior, None, same, 64)
    assert path == tmp_path / "bench-tiny-cnn-sr4-64px-4st" and seconds is not None
    assert subject.bundle(prior, None, same, 64) == (path, None)  # cached
    assert subject.bundle(prior, None, other, 64)[1] is not None  # another operator
    assert subject.bundle(SimpleNamespace(fingerprint=lambda: "q"), None, same, 64)[1] is not None
    for _ in range(2):  # the cached fp16 folder's manifest has no step_fp16: exported again
        assert subject.bundle(prior, None, same, 64, precision="fp16")[1] is not None
    assert len(exported) == 5 and exported[-1] == ("bench-tiny-cnn-sr4-64px-4st-fp16", "fp16")
