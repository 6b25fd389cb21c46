"""Records name paths without the machine's layout: :func:`recorded_path`, and the JSON
committed under ``benchmarks/``."""

import json
import re
from pathlib import Path

from silo_rt.records import recorded_path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
MACHINE_PATH = re.compile(r"(?<![\w.~])(/(work|tmp|root|home|Users|mnt|var)/|[A-Za-z]:\\)")


def test_a_path_is_recorded_relative_to_the_directory_or_home(tmp_path, monkeypatch):
    home, work = tmp_path / "home" / "someone", tmp_path / "elsewhere" / "project"
    work.mkdir(parents=True)
    home.mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    assert recorded_path(work / "engines" / "sr8") == "engines/sr8"
    assert recorded_path("engines/sr8") == "engines/sr8"  # relative stays as given
    assert recorded_path(work) == "."
    assert recorded_path(home / ".cache" / "hub") == "~/.cache/hub"
    assert recorded_path(tmp_path / "data" / "heldout") == "heldout"  # only its name
    for text in ("engines/sr8", "~/.cache/hub", "heldout"):
        assert not MACHINE_PATH.search(text)


def test_the_pattern_finds_machine_paths():
    for text in ('"/work/main/engines"', '"/tmp/heldout6"', "not in /root/.cache/x)",
                 '"C:\\\\data"', '"/home/me/x"'):
        assert MACHINE_PATH.search(json.loads(f"[{text}]")[0] if text[0] == '"' else text)
    for text in ("silo_rt/demo/bundles/ip", "~/.cache/torch/hub/checkpoints", "1/2", "a/tmp/b"):
        assert not MACHINE_PATH.search(text)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def test_committed_records_hold_no_absolute_paths_of_the_machine():
    records = sorted(BENCHMARKS.rglob("*.json"))
    assert len(records) > 10
    found = [(p.relative_to(BENCHMARKS).as_posix(), s) for p in records
             for s in _strings(json.loads(p.read_text())) if MACHINE_PATH.search(s)]
    assert found == []
