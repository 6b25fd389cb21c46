"""This process's resident memory (Linux ``/proc``), stage by stage.

Standard library only: the scaling worker and ``benchmarks/sd15_memory.py`` mark their first
stage before importing anything heavy.
"""

from __future__ import annotations

from contextlib import suppress


def memory_mib() -> dict:
    """``{"rss": now, "hwm": peak since start or the last :func:`reset_peak`}``, MiB (Linux
    ``/proc/self/status``; empty elsewhere)."""
    found = {}
    with suppress(OSError), open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key[2:].lower()] = int(value.split()[0]) / 1024  # kB
    return found


def reset_peak() -> bool:
    """Restart the peak RSS from the current RSS, so the next stage's peak is its own
    (Linux >= 4.0: ``5`` to ``/proc/self/clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class Stages:
    """Per-stage memory: ``rows`` ``[[label, rss, peak of that stage]]`` (MiB, one decimal)
    and ``peak``, the process's peak (the largest stage peak). Empty where ``/proc`` is
    not readable."""

    def __init__(self):
        self.rows, self.peak = [], 0.0

    def mark(self, label: str) -> None:
        """Close the stage that ran since the last mark (or the process start) as ``label``."""
        now = memory_mib()
        if now:
            self.rows.append([label, round(now["rss"], 1), round(now["hwm"], 1)])
            self.peak = max(self.peak, now["hwm"])
        reset_peak()
