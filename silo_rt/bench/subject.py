"""What the bench times: a prior (by name), a task, an operator, and the bundle exported from
them, cached between runs. Shared by ``silo-rt bench`` and its scaling sweep."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import SiloError
from ..runtime import step_io


@dataclass(frozen=True)
class Subject:
    """The prior's name, the task and the operator (a file, or a seeded random ``arch``), and
    the step count of exported bundles; ``cache`` is where they are kept."""

    model: str
    task: str
    arch: str = "cnn"
    operator_path: Path | None = None
    steps: int = 20
    cache: Path = Path("engines")

    def operator(self, prior, image_size: int):
        """``(operator, OperatorConfig, label)``: the given file's, or a random-init ``arch``
        operator (seed 0, the same in every process) for ``image_size``."""
        import torch

        from ..operators import OperatorConfig, build_operator, load_operator

        if self.operator_path is not None:
            op, op_config = load_operator(self.operator_path, prior, self.task, self.arch,
                                          image_size)
            return op, op_config, str(self.operator_path)
        op_config = OperatorConfig.for_prior(prior, self.arch, self.task, image_size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            op = build_operator(op_config).eval().requires_grad_(False)
        return op, op_config, f"random-init {self.arch} operator (benchmark only)"

    def bundle_name(self, image_size: int, batch: int = 1, precision: str = "fp32") -> str:
        """``bench-<model>-<arch>-<task>-<size>px-<steps>st[-b<batch>][-<precision>]``."""
        name = f"bench-{self.model}-{self.arch}-{self.task}-{image_size}px-{self.steps}st"
        name += f"-b{batch}" if batch > 1 else ""
        return name + (f"-{precision}" if precision != "fp32" else "")

    def bundle(self, prior, operator, op_config, image_size: int, batch: int = 1,
               precision: str = "fp32", log: Callable[[str], None] | None = None):
        """``(path, export seconds or None)``: the cached bundle for these settings if it was
        exported from this prior and operator, else a fresh export into ``cache``.

        ``precision`` ``fp16`` exports with ``--precision fp16`` (the ``step_fp16`` graph
        ``trt-fp16`` builds) under its own name; the other backends use fp32 bundles.
        """
        from ..bundle_format import load_manifest
        from ..export import ExportOptions, export_bundle
        from ..sampler import SamplingOptions

        say = log or (lambda line: None)
        name = self.bundle_name(image_size, batch, precision)
        path = Path(self.cache) / name
        if path.exists():
            try:
                m = load_manifest(path, verify=False)
                if (m.prior.get("fingerprint") == prior.fingerprint() and
                        m.operator == json.loads(op_config.to_json()) and
                        (precision == "fp32" or step_io.STEP_FP16 in m.graphs)):
                    return path, None
            except SiloError:
                pass  # unreadable or stale: exported again below
        Path(self.cache).mkdir(parents=True, exist_ok=True)
        say(f"exporting {name} (cached for later runs)")
        start = time.perf_counter()
        export_bundle(prior, operator, op_config,
                      ExportOptions(SamplingOptions(self.task, steps=self.steps), image_size,
                                    batch, precision=precision),
                      path, on_stage=lambda s, sec: say(f"  {s}: {sec:.1f} s"))
        return path, time.perf_counter() - start
