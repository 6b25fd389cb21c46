"""One ``silo-rt restore`` invocation as data: what the command parsed, what every
``restore_*`` module reads (its own module, so those modules import it and not the command)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..tiling import DEFAULT_OVERLAP


@dataclass(frozen=True, kw_only=True)
class RestoreRequest:
    """One ``restore`` invocation: its options as click parsed and range-checked them.

    The field names are the command's parameter names, so the command builds it from its
    keywords; ``None`` means "not given" (each helper applies its documented default).
    """

    measurement: Path
    bundle: Path | None
    task: str | None
    model: str | None
    operator_path: Path | None
    arch: str | None
    time_input: str | None
    backend: str
    precision: str | None
    threads: int | None
    steps: int | None
    sampler: str
    eta: float | None
    seed: int
    prompt: str | None
    cfg_scale: float | None
    sigma_y: float | None
    out: Path
    compare_path: Path | None
    reference: Path | None
    keep_measured: bool
    samples: int | None
    overwrite: bool = False
    tile_overlap: int | None = DEFAULT_OVERLAP
    memory: str = "fast"
