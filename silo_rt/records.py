"""Reading back the small JSON files silo-rt itself writes (logs, progress records), never
trusting them: a damaged or foreign file is one :class:`SiloError` line or a skipped line,
never a traceback (numpy-free, light); and the paths those records name.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .errors import SiloError


def json_lines(path: Path) -> Iterator[tuple[str, dict | None]]:
    """``(line, its JSON object or None)`` for each line of ``path``; None for a line that
    is not valid UTF-8 JSON of an object (the caller skips or refuses it)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SiloError(f"cannot read {path}: {exc.strerror or exc}") from None
    for raw in data.splitlines():
        text = raw.decode("utf-8", errors="replace")
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            record = None
        yield text, record if isinstance(record, dict) else None


def read_json_object(path: Path, what: str, fields: dict[str, type] | None = None) -> dict:
    """The JSON object in ``path`` (``what`` it is, for the message), each of ``fields``
    present with its type (``int`` excludes booleans; ``float`` takes integers)."""
    try:
        data = json.loads(Path(path).read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise SiloError(f"{what} {path} is missing") from None
    except OSError as exc:
        raise SiloError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SiloError(f"{what} {path} is not valid JSON (damaged?)") from None
    if not isinstance(data, dict):
        raise SiloError(f"{what} {path} is not a JSON object (damaged?)")
    for name, kind in (fields or {}).items():
        value = data.get(name)
        ok = isinstance(value, int | float) if kind is float else isinstance(value, kind)
        if not ok or (kind in (int, float) and isinstance(value, bool)):
            raise SiloError(f"{what} {path}: {name} is {value!r}, not "
                            f"{'a number' if kind in (int, float) else kind.__name__}")
    return data


def recorded_path(path: Path | str) -> str:
    """``path`` as a record (a report, a bench result) names it, without the machine's
    absolute layout: relative to the current directory when inside it, ``~/…`` under the
    home directory, otherwise its last component alone (what a reader elsewhere can use)."""
    path = Path(path).expanduser().absolute()
    for base, shown in ((Path.cwd(), None), (Path.home(), "~")):
        try:
            relative = path.relative_to(base)
        except ValueError:
            continue
        return relative.as_posix() if shown is None else f"{shown}/{relative.as_posix()}"
    return path.name


def load_record(path: Path) -> dict:
    """A benchmark's JSON record, or ``{}`` when it is not written yet (scripts resume)."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {}


def save_record(path: Path, data: dict) -> None:
    """Write a benchmark's JSON record atomically (indented, as committed)."""
    from .images import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))


def record_header(script: str, argv: list[str]) -> dict:
    """What every benchmark record starts with: the command that wrote it, the date and the
    machine (:func:`silo_rt.bench.timing.machine_info`)."""
    import datetime

    from .bench.timing import machine_info

    return {"command": " ".join(["python", script, *argv]),
            "date": datetime.date.today().isoformat(), "machine": machine_info()}
