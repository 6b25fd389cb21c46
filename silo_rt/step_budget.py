"""The guidance weight η for a step budget: tuned, exported, or by rule (numpy only).

SILO's update adds ``−η·clamp(∂L/∂z_t, −1, 1)`` once per step. One might expect η to have to
grow as the step count falls (the same total pull in fewer steps). Measured on the demo
(``benchmarks/steps/README.md``: η swept on training crops at 10-999 steps, both samplers,
both tasks), it does not: the best η stays within a factor of two of one value from 10 to
999 steps, and scaling η by ``N_base/N`` ruins a restoration (7 dB at 20 steps). For
``steps`` steps of ``sampler`` with no η given, :func:`choose_eta` takes, in order:

1. **tuned**: the entry for this bundle, step count and sampler in the bundle's
   ``tuning.json``, written by ``silo-rt tune`` from *training* images;
2. **exported**: the η a bundle (or the operator makers' settings) came with, when the step
   count and sampler are the ones it was made for (DDPM);
3. **rule**: that same η at any other step count or with DDIM (the rule the measurement
   supports: η independent of the step count). ``silo-rt tune`` is what finds a better one
   (on the demo, half the authors' η is better at most step counts).

The choice comes back with a one-line reason, which ``restore`` prints.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import SiloError
from .schedule import DEFAULT_SAMPLER, SAMPLERS, check_sampler

TUNING_FILE = "tuning.json"
TUNING_FORMAT = "silo-rt-tuning"


@dataclass(frozen=True)
class EtaChoice:
    """An η and where it came from: ``given``, ``tuned``, ``exported`` or ``rule``."""

    eta: float
    source: str
    why: str

    def describe(self) -> str:
        return f"eta {self.eta:.4g} ({self.why})"


def rule_eta(base_eta: float, base_steps: int, steps: int, sampler: str) -> float:
    """η for ``steps`` steps of ``sampler`` from ``base_eta`` made for ``base_steps`` DDPM
    steps: ``base_eta`` itself (the best η measured does not follow the step count; see the
    module docstring)."""
    check_sampler(sampler)
    if steps < 1 or base_steps < 1:
        raise SiloError(f"step counts must be at least 1, got {steps} and {base_steps}")
    return float(base_eta)


@dataclass(frozen=True)
class TuningEntry:
    """The best η found for one step count and sampler.

    Attributes:
        steps, sampler: the budget tuned for.
        eta: the η with the best mean PSNR on the tuning images.
        psnr: that mean PSNR (dB, [-1, 1] images).
        images: names of the training images used (never held-out ones).
        grid: ``[[η, mean PSNR], …]`` for every η tried.
        seed: the restoration seed used.
    """

    steps: int
    sampler: str
    eta: float
    psnr: float
    images: list[str]
    grid: list[list[float]] = field(default_factory=list)
    seed: int = 0


@dataclass
class TuningRecord:
    """``tuning.json``: tuned η per (steps, sampler) for one bundle, by its
    :func:`~silo_rt.bundle_format.bundle_identity` (``bundle_sha256``: its manifest's
    sha256 without TensorRT plans), so a re-exported bundle never uses another's tuning."""

    bundle_sha256: str
    task: str
    entries: list[TuningEntry] = field(default_factory=list)

    def lookup(self, steps: int, sampler: str) -> TuningEntry | None:
        return next((e for e in self.entries if e.steps == steps and e.sampler == sampler),
                    None)

    def with_entry(self, entry: TuningEntry) -> TuningRecord:
        """This record with ``entry`` replacing any entry for the same steps and sampler."""
        kept = [e for e in self.entries if (e.steps, e.sampler) != (entry.steps, entry.sampler)]
        entries = sorted([*kept, entry], key=lambda e: (e.sampler, e.steps))
        return TuningRecord(self.bundle_sha256, self.task, entries)

    def to_json(self) -> str:
        return json.dumps({"format": TUNING_FORMAT, "format_version": 1,
                           "bundle_sha256": self.bundle_sha256, "task": self.task,
                           "entries": [asdict(e) for e in self.entries]}, indent=1)

    def save(self, path: Path) -> None:
        """Write atomically (a temporary name, then a rename)."""
        from .images import atomic_write

        text = self.to_json()
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))

    @classmethod
    def load(cls, path: Path) -> TuningRecord:
        """Read and check ``path``; a file that is not a valid record is one
        :class:`SiloError` line naming the problem."""
        from .records import read_json_object

        return _parse(read_json_object(path, "tuning file"), path)


def _parse(data, path) -> TuningRecord:
    def bad(what: str):
        return SiloError(f"tuning file {path}: {what}")

    if data.get("format") != TUNING_FORMAT:
        raise bad(f"not a {TUNING_FORMAT} file")
    if data.get("format_version") != 1:
        raise bad(f"unsupported format_version {data.get('format_version')!r}")
    sha, task, entries = data.get("bundle_sha256"), data.get("task"), data.get("entries")
    if not isinstance(sha, str) or not isinstance(task, str) or not isinstance(entries, list):
        raise bad("bundle_sha256 and task must be strings, entries a list")
    parsed = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise bad(f"entries[{i}] is not an object")
        steps, sampler, eta, score = (e.get(k) for k in ("steps", "sampler", "eta", "psnr"))
        if type(steps) is not int or not 1 <= steps <= 1000:
            raise bad(f"entries[{i}].steps must be an integer in [1, 1000], got {steps!r}")
        if sampler not in SAMPLERS:
            raise bad(f"entries[{i}].sampler must be one of {', '.join(SAMPLERS)}")
        if not _finite(eta) or not 0.0 <= eta <= 100.0:
            raise bad(f"entries[{i}].eta must be a number in [0, 100], got {eta!r}")
        if not _finite(score):
            raise bad(f"entries[{i}].psnr must be a finite number, got {score!r}")
        images, grid = e.get("images", []), e.get("grid", [])
        if not (isinstance(images, list) and all(isinstance(n, str) for n in images)):
            raise bad(f"entries[{i}].images must be a list of names")
        if not (isinstance(grid, list) and all(isinstance(p, list) and len(p) == 2
                                               and all(_finite(v) for v in p) for p in grid)):
            raise bad(f"entries[{i}].grid must be a list of [eta, psnr] pairs")
        seed = e.get("seed", 0)
        if type(seed) is not int:
            raise bad(f"entries[{i}].seed must be an integer")
        parsed.append(TuningEntry(steps, sampler, float(eta), float(score), images,
                                  [[float(a), float(b)] for a, b in grid], seed))
    return TuningRecord(sha, task, parsed)


def _finite(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def choose_eta(eta: float | None, steps: int, sampler: str = DEFAULT_SAMPLER, *,
               base_eta: float, base_steps: int, base_name: str,
               tuning: TuningRecord | None = None, tuning_name: str = TUNING_FILE) -> EtaChoice:
    """η for ``steps`` steps of ``sampler`` (see the module docstring for the order).

    Args:
        eta: the η the user gave, or None.
        base_eta, base_steps: the η made for ``base_steps`` DDPM steps (a bundle's exported
            η and steps; the operator makers' settings; the task default at 999).
        base_name: what the base is, for the reason (e.g. ``"the bundle's"``).
        tuning: the bundle's tuning record, if any.
    """
    check_sampler(sampler)
    if eta is not None:
        return EtaChoice(float(eta), "given", "given")
    entry = None if tuning is None else tuning.lookup(steps, sampler)
    if entry is not None:
        return EtaChoice(entry.eta, "tuned",
                         f"tuned for {steps} {sampler} steps on {len(entry.images)} training "
                         f"images, {tuning_name}")
    if steps == base_steps and sampler == DEFAULT_SAMPLER:
        return EtaChoice(float(base_eta), "exported", f"{base_name} for {steps} steps")
    value = rule_eta(base_eta, base_steps, steps, sampler)
    return EtaChoice(value, "rule",
                     f"{base_name} for {base_steps} steps, kept for {steps} {sampler} steps: "
                     "the best eta changes little with the step count; `silo-rt tune` finds "
                     "it")
