"""``--backend auto`` never picks a CPU backend whose restoration would not fit in the memory
available now, and says so (the available figure is faked; the demo bundle is real)."""

import json
from pathlib import Path

import pytest

from silo_rt.bundle_format import load_manifest
from silo_rt.demo import demo_bundle
from silo_rt.runtime import BundleRunner, backend_choice
from silo_rt.runtime.ort_backend import OrtGraphs


@pytest.fixture
def auto(tmp_path, monkeypatch):
    """The demo's sr4 bundle and its manifest, with auto unpinned and a private cache."""
    pytest.importorskip("openvino")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SILO_RT_AUTO_CPU", raising=False)
    bundle = demo_bundle("sr4")
    return bundle, load_manifest(bundle)


def _fake_available(monkeypatch, size):
    monkeypatch.setattr(backend_choice, "available_memory", lambda: size)


def _no_check(monkeypatch):
    def refuse(*args):
        raise AssertionError("the candidate was checked")

    monkeypatch.setattr(backend_choice, "check_candidate", refuse)


def _auto_unchecked(monkeypatch, bundle, available):
    """``auto``'s runner with ``available`` bytes free and no check allowed."""
    _fake_available(monkeypatch, available)
    _no_check(monkeypatch)
    return BundleRunner(bundle, backend="auto", threads=1)


def test_the_unmeasured_estimate_is_the_graph_files_times_the_backend_factor(auto):
    bundle, manifest = auto
    files = [f for f in manifest.files
             if Path(f).name.split(".")[0] in backend_choice.RESTORATION_GRAPHS]
    assert any(f.startswith("step") for f in files) and len(files) >= 3
    size = sum((bundle / f).stat().st_size for f in files)
    for backend, factor in backend_choice.PEAK_PER_GRAPH_BYTE.items():
        assert backend_choice.estimated_peak(bundle, manifest, backend) == int(factor * size)
    assert backend_choice.available_memory() > 0  # Linux: /proc/meminfo


def test_auto_skips_a_candidate_that_would_not_fit_without_checking_it(auto, monkeypatch):
    bundle, manifest = auto
    ort_need = backend_choice.estimated_peak(bundle, manifest, "ort")
    openvino_need = backend_choice.estimated_peak(bundle, manifest, "openvino")
    assert ort_need < openvino_need
    runner = _auto_unchecked(monkeypatch, bundle, ort_need)
    assert runner.backend == "ort" and isinstance(runner.graphs, OrtGraphs)
    gib = f"{openvino_need / 2**30:.1f} GiB"
    assert runner.label == (f"auto: ort (openvino skipped: it needs about {gib}, "
                            f"{ort_need / 2**30:.1f} GiB available)")
    assert not backend_choice.cache_file().exists()  # nothing was checked, nothing cached


def test_the_check_measures_both_steps_and_later_choices_use_the_measurement(auto,
                                                                             monkeypatch):
    bundle, manifest = auto
    _fake_available(monkeypatch, 2**50)
    first = BundleRunner(bundle, backend="auto", threads=1)
    assert "skipped" not in first.label
    (record,) = json.loads(backend_choice.cache_file().read_text()).values()
    assert record["ort_step_mib"] > 0 and record["candidate_step_mib"] > 0
    verdict = backend_choice.Verdict(**record)
    measured = backend_choice.estimated_peak(bundle, manifest, "openvino", verdict)
    vae = sum((bundle / f).stat().st_size for f in manifest.files if f.startswith("vae_"))
    assert measured == int(record["candidate_step_mib"] * 2**20
                           + backend_choice.PEAK_PER_GRAPH_BYTE["openvino"] * vae)

    # Less memory now than the measured need: skipped by the cached measurement, unchecked.
    again = _auto_unchecked(monkeypatch, bundle, measured - 1)
    assert again.backend == "ort"
    assert again.label.startswith(f"auto: ort (openvino skipped: it needs about "
                                  f"{measured / 2**30:.1f} GiB")


def test_auto_runs_onnx_runtime_in_low_memory_where_only_that_fits(auto, monkeypatch):
    bundle, manifest = auto
    ort_need = backend_choice.estimated_peak(bundle, manifest, "ort")
    low_need = backend_choice.estimated_peak(bundle, manifest, "ort-low")
    assert low_need < ort_need
    runner = _auto_unchecked(monkeypatch, bundle, low_need)
    assert runner.backend == "ort" and runner.graphs.memory == "low"
    assert runner.label.endswith(f"; ort in low memory (fast, it needs about "
                                 f"{ort_need / 2**30:.1f} GiB, "
                                 f"{low_need / 2**30:.1f} GiB available)")
    _fake_available(monkeypatch, ort_need)
    assert BundleRunner(bundle, backend="auto", threads=1).graphs.memory == "fast"


def test_auto_says_when_not_even_onnx_runtime_fits(auto, monkeypatch):
    bundle, manifest = auto
    runner = _auto_unchecked(monkeypatch, bundle, 1)
    low_need = backend_choice.estimated_peak(bundle, manifest, "ort-low")
    assert runner.backend == "ort" and runner.graphs.memory == "low"
    assert runner.label.endswith(f"; ort in low memory, and even so it needs about "
                                 f"{low_need / 2**30:.1f} GiB, 0.0 GiB available: expect "
                                 "swapping")


def test_low_memory_asked_of_auto_runs_onnx_runtime_so(auto, monkeypatch):
    bundle, _ = auto
    _no_check(monkeypatch)
    runner = BundleRunner(bundle, backend="auto", threads=1, memory="low")
    assert runner.backend == "ort" and runner.graphs.memory == "low"
    assert "low memory" in runner.label


def test_unknown_available_memory_skips_nothing(auto, monkeypatch):
    bundle, _ = auto
    _fake_available(monkeypatch, None)
    runner = BundleRunner(bundle, backend="auto", threads=1)
    assert "skipped" not in runner.label and "swapping" not in runner.label
