"""What ``--backend auto`` runs a bundle with on a CPU: the fastest backend installed here
whose guided step agrees with ONNX Runtime's on this bundle.

ONNX Runtime is the CPU backend the parity tests hold to the PyTorch reference. Another
(OpenVINO, when installed) is used only after it passed a check on this machine: one step of
the bundle's own ``step`` graph, run by both, must agree, and so must the step's guidance part
(the difference η makes), which is where a wrong gradient shows; then the faster of the two
wins (median of three steps each, one backend after the other).

Memory comes first: a candidate whose restoration would not fit in the memory this machine
has available now (``MemAvailable``) is skipped, and the line says so. Its need is estimated
from the bundle's graph files before it has been checked (:data:`PEAK_PER_GRAPH_BYTE`) and
from the peak the check measured afterwards (:func:`estimated_peak`). Where ONNX Runtime
itself would not fit, it runs with ``memory="low"`` (one copy of most of the step's
weights, slightly slower steps), and the line says that too.

The verdict is cached per bundle, machine and library versions in
``$XDG_CACHE_HOME/silo-rt/auto-backend.json`` (``~/.cache`` by default), so only the first
restoration pays for the check. bf16 is never chosen here: it is not fp32 parity.
``SILO_RT_AUTO_CPU=ort|openvino`` pins the choice instead.
"""

from __future__ import annotations

import json
import os
import platform
import time
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..bench.memory import memory_mib, reset_peak
from ..bundle_format import Manifest
from ..errors import SiloError
from ..images import atomic_write
from . import step_io
from .ort_backend import OrtGraphs, default_providers

Z_TOLERANCE = 1e-4
"""Relative difference allowed in one step's ``z_prev`` (fp32 backends agree to ~1e-7)."""
GUIDANCE_TOLERANCE = 5e-2
"""... and in its guidance part, a small difference of large terms: a correct OpenVINO
step was 1.4e-6 off on the demo and 9.4e-3 on random-weight ``small`` (whose guidance is
0.3 % of the step), the one with wrongly shared conv weights 0.26."""
TIMED_STEPS = 3
RESTORATION_GRAPHS = (step_io.VAE_ENCODER, step_io.STEP, step_io.VAE_DECODER)
"""The graphs a CPU restoration holds open at once."""
PEAK_PER_GRAPH_BYTE = {"ort": 2.6, "ort-low": 2.0, "openvino": 4.5}
"""A restoration's peak RSS per byte of its graph files (:data:`RESTORATION_GRAPHS`), before
a check has measured the step: sd15-random, sr8 at 512 px, attention recomputed in chunks of
512 rows (3.80 GB of graphs; ONNX Runtime peaked at 8.6 GiB, 6.2 GiB with ``--memory low``,
also by tiles, OpenVINO at 15.4; ``benchmarks/memory/``), with some margin."""
PIN_VARIABLE = "SILO_RT_AUTO_CPU"
"""``ort`` or ``openvino``: what ``auto`` runs on a CPU without checking (the same backend
on every machine, e.g. for outputs that must match across machines)."""


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking ``candidate`` against ONNX Runtime on one bundle."""

    candidate: str
    parity: bool
    z_rel: float
    guidance_rel: float
    candidate_ms: float
    ort_ms: float
    checked: str
    candidate_step_mib: float = 0.0
    ort_step_mib: float = 0.0
    """Peak RSS growth while each backend loaded and ran the step (0: not measured here)."""

    @property
    def use_candidate(self) -> bool:
        return self.parity and self.candidate_ms < self.ort_ms

    def describe(self) -> str:
        speed = f"{self.candidate_ms:.0f} vs {self.ort_ms:.0f} ms per step"
        if not self.parity:
            return (f"ort ({self.candidate} disagrees with ONNX Runtime on this bundle: step "
                    f"{self.z_rel:.1e}, guidance {self.guidance_rel:.1e} relative)")
        chosen = self.candidate if self.use_candidate else "ort"
        return (f"{chosen} (checked {self.checked}: {self.candidate} {speed} of ort; "
                f"step agrees to {self.z_rel:.1e})")


def cache_file() -> Path:
    from ..environment import cache_root

    return cache_root() / "silo-rt" / "auto-backend.json"


def _cpu() -> str:
    """This CPU, as precisely as a key needs: model name and id, core count."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
                if len(fields) == 3:
                    break
    except OSError:
        fields["processor"] = platform.processor() or platform.machine()
    return " / ".join(fields.values()) + f" / {os.cpu_count()} cpus"


def _key(bundle: Path, manifest: Manifest, candidate: str, threads: int | None) -> str:
    import onnxruntime
    import openvino

    step_file = manifest.graphs[step_io.STEP].file
    step = manifest.files.get(step_file) or f"{Path(bundle).resolve() / step_file} (unhashed)"
    return " | ".join((step, candidate, f"openvino {openvino.__version__}",
                       f"onnxruntime {onnxruntime.__version__}", _cpu(),
                       f"threads {threads or 'default'}"))


def _load_cache() -> dict:
    try:
        cached = json.loads(cache_file().read_text())
    except (OSError, ValueError, RecursionError):
        return {}  # none yet, or unreadable: check again
    return cached if isinstance(cached, dict) else {}


VERDICT_TYPES = {"candidate": str, "parity": bool, "z_rel": float, "guidance_rel": float,
                 "candidate_ms": float, "ort_ms": float, "checked": str,
                 "candidate_step_mib": float, "ort_step_mib": float}


def _cached(key: str) -> Verdict | None:
    """The cached verdict for ``key``, or None (then the check runs again) when there is none
    or its record is not exactly :data:`VERDICT_TYPES` (another version, a damaged file)."""
    record = _load_cache().get(key)
    if not isinstance(record, dict) or set(record) != set(VERDICT_TYPES):
        return None
    for name, kind in VERDICT_TYPES.items():
        value = record[name]
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not np.isfinite(value):
                return None
        elif not isinstance(value, kind):
            return None
    return Verdict(**record)


@contextmanager
def _checking_alone():
    """Hold an exclusive lock on the cache's folder itself, so no lock file is left behind
    (none where it cannot be taken: then the check may run twice, harmlessly)."""
    folder = cache_file().parent
    with ExitStack() as stack:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder, os.O_RDONLY)
            stack.callback(os.close, fd)
        except OSError:
            fd = None
        if fd is not None:
            with suppress(ImportError, OSError):  # no fcntl (Windows), no flock here
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes
        yield


def _store(key: str, verdict: Verdict) -> None:
    path = cache_file()
    cached = _load_cache()
    cached[key] = asdict(verdict)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(cached, indent=1)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))  # a failure leaves nothing
    except OSError:
        pass  # a read-only home: the check is simply made again next time


def _probe_inputs(bundle: Path, manifest: Manifest) -> dict:
    """One step's inputs by :mod:`.step_io` name (``eta`` aside): fixed random latents, the
    middle of the bundle's schedule."""
    rng = np.random.default_rng(0)
    shape = tuple(manifest.latent_shape)
    middle = len(manifest.schedule.timesteps) // 2
    z, w = (rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
    context = np.load(bundle / manifest.context.file, allow_pickle=False).astype(np.float32)
    cfg_scale = manifest.cfg_scale if manifest.cfg_scale > 1.0 else None
    return {**step_io.step_inputs(z, manifest.schedule.timesteps[middle],
                                  manifest.schedule.coefficients[middle],
                                  rng.standard_normal(shape, dtype=np.float32)),
            **step_io.step_constants(w, context, 0.0, manifest.sigma_y, cfg_scale)}


def _one_step(graphs, inputs: dict, eta: float):
    """A callable running one step with ``eta``, and its ``z_prev``."""
    io = step_io
    feeds = {**inputs, io.ETA: np.array([eta], np.float32)}
    cfg_scale = feeds[io.CFG_SCALE][0] if io.CFG_SCALE in feeds else None
    call = graphs.single_step(feeds[io.Z_T], feeds[io.W], feeds[io.CONTEXT], feeds[io.TIMESTEP],
                              feeds[io.COEFFICIENTS], feeds[io.NOISE], eta,
                              feeds[io.SIGMA_Y][0], cfg_scale)
    z_prev = graphs.run(io.STEP, **feeds)[0]
    return call, z_prev


def check_candidate(candidate_graphs, ort_graphs: OrtGraphs, bundle: Path,
                    manifest: Manifest, name: str) -> Verdict:
    """Run one step on both, compare (the step and its guidance part), time both.

    One backend at a time: ONNX Runtime's step is measured and its sessions closed before
    the candidate's graph is loaded, so the check never holds two copies of a large model
    (sd15's step: ~6.5 GiB in ONNX Runtime, more in OpenVINO).
    """
    inputs = _probe_inputs(bundle, manifest)
    eta = manifest.eta if manifest.eta > 0 else 1.0
    results, peaks = {}, {}
    for label, graphs in (("ort", ort_graphs), ("candidate", candidate_graphs)):
        reset_peak()
        before = memory_mib()
        call, z = _one_step(graphs, inputs, eta)
        after = memory_mib()
        peaks[label] = (after["hwm"] - before["rss"]) if before and after else 0.0
        _, z_without = _one_step(graphs, inputs, 0.0)
        timed = []
        for _ in range(TIMED_STEPS):
            start = time.perf_counter()
            call()
            timed.append(time.perf_counter() - start)
        del call
        graphs.close()
        results[label] = (z, z - z_without, float(np.median(timed) * 1e3))

    def rel(a, b):
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))

    z_rel = rel(results["candidate"][0], results["ort"][0])
    guidance_rel = rel(results["candidate"][1], results["ort"][1])
    return Verdict(name, z_rel <= Z_TOLERANCE and guidance_rel <= GUIDANCE_TOLERANCE,
                   z_rel, guidance_rel, results["candidate"][2], results["ort"][2],
                   time.strftime("%Y-%m-%d"), round(peaks["candidate"], 1),
                   round(peaks["ort"], 1))


def available_memory() -> int | None:
    """Bytes this machine can give a new process without swapping (Linux ``MemAvailable``;
    None where unknown, and then nothing is skipped for memory)."""
    with suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return None


def _graph_bytes(bundle: Path, manifest: Manifest, graphs) -> int:
    """Bytes of the files (ONNX and external data) of ``graphs``."""
    stems = tuple(manifest.graphs[g].file for g in graphs if g in manifest.graphs)
    return sum((Path(bundle) / f).stat().st_size for f in manifest.files if f.startswith(stems))


def estimated_peak(bundle: Path, manifest: Manifest, backend: str,
                   verdict: Verdict | None = None) -> int:
    """Bytes a restoration of ``bundle`` with ``backend`` (``ort`` or the verdict's candidate)
    is expected to peak at: the step's measured growth (``verdict``) plus the VAE graphs'
    share, or, unmeasured, :data:`PEAK_PER_GRAPH_BYTE` times the graph files' size."""
    factor = PEAK_PER_GRAPH_BYTE[backend]
    measured = 0.0
    if verdict is not None:
        measured = verdict.ort_step_mib if backend == "ort" else verdict.candidate_step_mib
    if measured > 0:
        vae = _graph_bytes(bundle, manifest, (step_io.VAE_ENCODER, step_io.VAE_DECODER))
        return int(measured * 2**20 + factor * vae)
    return int(factor * _graph_bytes(bundle, manifest, RESTORATION_GRAPHS))


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def _too_big(bundle, manifest, backend, verdict, available) -> str | None:
    """Why ``backend`` would not fit in ``available`` bytes, or None."""
    need = estimated_peak(bundle, manifest, backend, verdict)
    if available is None or need <= available:
        return None
    return f"needs about {_gib(need)}, {_gib(available)} available"


def choose_cpu_backend(bundle: Path, manifest: Manifest, threads: int | None = None,
                       providers: list[str] | None = None, log=lambda line: None):
    """``(name, graphs, line)``: the backend ``auto`` runs the bundle with on this CPU, its
    opened graphs, and one line saying which and why."""
    from .openvino_backend import OpenVinoGraphs, openvino_available

    pinned = os.environ.get(PIN_VARIABLE, "")
    if pinned not in ("", "ort", "openvino"):
        raise SiloError(f"{PIN_VARIABLE}={pinned}: choose ort or openvino (or unset it)")
    on_gpu = "CUDAExecutionProvider" in (providers or default_providers())[:1]
    if pinned == "openvino" and not on_gpu:  # the pin chooses among CPU backends only
        graphs = OpenVinoGraphs(bundle, manifest, threads)
        return "openvino", graphs, f"openvino ({PIN_VARIABLE}=openvino)"
    ort_graphs = OrtGraphs(bundle, manifest, providers, threads)
    if ort_graphs.device != "cpu":
        return "ort", ort_graphs, f"ort ({ort_graphs.providers[0]})"
    if pinned == "ort":
        return "ort", ort_graphs, f"ort ({PIN_VARIABLE}=ort)"
    available = available_memory()

    def ort(line: str, verdict: Verdict | None):
        """ONNX Runtime, in low memory where only that fits."""
        too_big = _too_big(bundle, manifest, "ort", verdict, available)
        if too_big is None:
            return "ort", ort_graphs, line
        ort_graphs.close()
        low = OrtGraphs(bundle, manifest, providers, threads, memory="low")
        low_too_big = _too_big(bundle, manifest, "ort-low", None, available)
        if low_too_big is None:
            return "ort", low, f"{line}; ort in low memory (fast, it {too_big})"
        return "ort", low, f"{line}; ort in low memory, and even so it {low_too_big}: " \
                           "expect swapping"

    if not openvino_available():
        return ort("ort (OpenVINO is not installed)", None)
    key = _key(bundle, manifest, "openvino", threads)

    try:
        with _checking_alone():  # processes starting together (accelerate) check once
            verdict = _cached(key)
            too_big = _too_big(bundle, manifest, "openvino", verdict, available)
            if too_big is not None:  # not even checked: the check would not fit either
                return ort(f"ort (openvino skipped: it {too_big})", verdict)
            candidate = None
            if verdict is None or verdict.use_candidate:
                candidate = OpenVinoGraphs(bundle, manifest, threads)
            if verdict is None:
                log("auto: checking OpenVINO against ONNX Runtime on this bundle (once per "
                    "machine)")
                verdict = check_candidate(candidate, ort_graphs, bundle, manifest, "openvino")
                _store(key, verdict)
    except SiloError as exc:
        return "ort", ort_graphs, f"ort (OpenVINO cannot run this bundle: {exc})"
    too_big = _too_big(bundle, manifest, "openvino", verdict, available)  # as measured
    if verdict.use_candidate and too_big is None:
        ort_graphs.close()
        return "openvino", candidate, verdict.describe()
    if candidate is not None:
        candidate.close()
    if verdict.use_candidate:
        return ort(f"ort (openvino skipped: it {too_big})", verdict)
    return ort(verdict.describe(), verdict)
