"""``silo-rt bench``'s settings: what to time, on which backends, how often."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..backends import check_backends
from ..degradations import get_degradation
from ..errors import SiloError
from .subject import Subject

BASELINE_METHODS = ("ldps", "gml-dps", "psld")


@dataclass
class BenchConfig:
    """What to benchmark (see ``silo-rt bench --help``)."""

    model: str = "small"
    task: str = "sr4"
    arch: str = "cnn"
    operator: Path | None = None
    bundle: Path | None = None
    image_size: int | None = None
    backends: tuple[str, ...] = ("torch", "ort")
    steps: int = 20
    reps: int = 10
    warmup: int = 2
    threads: int = 2
    baselines: tuple[str, ...] = ("ldps", "psld")
    baseline_reps: int = 3
    restoration: bool = True
    restore_reps: int = 3
    cache: Path = Path("engines")
    log: object = field(default=None, repr=False)  # callable(str) for progress lines

    def validate(self) -> None:
        get_degradation(self.task)
        check_backends(self.backends, "bench")
        unknown = set(self.baselines) - set(BASELINE_METHODS)
        if unknown:
            raise SiloError(f"unknown baseline(s) {sorted(unknown)}; choose from "
                            f"{', '.join(BASELINE_METHODS)}")
        for name in ("steps", "reps", "threads", "baseline_reps", "restore_reps"):
            if getattr(self, name) < 1:
                raise SiloError(f"--{name.replace('_', '-')} must be at least 1")
        if self.warmup < 0:
            raise SiloError("--warmup must be >= 0")

    @property
    def subject(self) -> Subject:
        return Subject(self.model, self.task, self.arch, self.operator, self.steps,
                       Path(self.cache))

    def say(self, text: str) -> None:
        """A progress line to ``log`` (nothing without one)."""
        if self.log is not None:
            self.log(text)

    def given_manifest(self):
        """The ``--bundle``'s checked manifest (None without one); refuses another task's."""
        from ..bundle_format import load_manifest

        if self.bundle is None:
            return None
        manifest = load_manifest(self.bundle, verify=False)
        if manifest.task != self.task:
            raise SiloError(f"bundle {self.bundle} is for task {manifest.task!r}, not "
                            f"--task {self.task!r}")
        return manifest

    def bundle_for(self, prior, operator, op_config, image_size: int,
                   precision: str = "fp32") -> tuple[Path, float | None]:
        """``(path, export seconds or None)``: the ``--bundle``, else the subject's cached or
        freshly exported one (:meth:`Subject.bundle`)."""
        if self.bundle is not None:
            return Path(self.bundle), None
        return self.subject.bundle(prior, operator, op_config, image_size,
                                   precision=precision, log=self.say)
