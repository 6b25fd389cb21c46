"""Timing and machine measurements used by the bench (host clocks; CPU backends)."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from contextlib import suppress

from ..errors import error_summary


def summarize(samples_s: list[float]) -> dict:
    """Median, p90, min and count of latencies given in seconds, reported in ms."""
    ordered = sorted(samples_s)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"median_ms": statistics.median(ordered) * 1e3, "p90_ms": p90 * 1e3,
            "min_ms": ordered[0] * 1e3, "reps": len(ordered)}


def time_calls(fn: Callable[[], object], warmup: int, reps: int) -> dict:
    """Call ``fn`` ``warmup`` times untimed, then ``reps`` times timed."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return summarize(samples)


def interleaved(calls: dict, warmup: int, reps: int, settle: bool = True,
                failed: dict | None = None) -> dict:
    """Time each callable ``reps`` times, round-robin, so machine noise hits all alike.

    Returns ``{name: summarize(...) + samples_ms + output}`` (``output``: the last call's
    return value). Each result keeps its ``samples_ms`` in round order, so rep ``i`` of two
    backends ran back to back and their ratio is a paired measurement.

    With ``settle``, each timed call follows an untimed one of the same backend: ONNX
    Runtime's worker threads spin for a while after a run, which would otherwise slow the
    next backend's short call.

    A callable that raises is dropped from the rounds and its error goes to ``failed`` as
    one line (without ``failed`` the exception propagates).
    """
    samples = {name: [] for name in calls}
    last, active = {}, dict(calls)
    for rep in range(warmup + reps):
        for name, call in list(active.items()):
            try:
                if settle:
                    call()
                start = time.perf_counter()
                last[name] = call()
            except Exception as exc:
                if failed is None:
                    raise
                failed[name] = error_summary(exc)
                del active[name], samples[name]
                continue
            if rep >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: {**summarize(values), "samples_ms": [v * 1e3 for v in values],
                   "output": last.get(name)}
            for name, values in samples.items()}


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(threads: int, size: int = 1024, reps: int = 10) -> float:
    """Measured fp32 matmul rate of this machine with ``threads`` threads (GFLOP/s)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        stats = time_calls(lambda: a @ b, warmup=3, reps=reps)
    finally:
        torch.set_num_threads(previous)
    return 2 * size**3 / (stats["median_ms"] / 1e3) / 1e9


def gpu_matmul_gflops(precision: str = "fp16", size: int = 8192, reps: int = 20) -> float:
    """Measured dense matmul rate of the current GPU (GFLOP/s), timed with CUDA events.

    ``precision``: ``fp16`` (tensor cores) or ``fp32`` with TF32 off, as the fp32 backends
    run (:func:`~silo_rt.torch_cuda.exact_fp32`).
    """
    import torch

    from ..torch_cuda import exact_fp32

    dtype = {"fp16": torch.float16, "fp32": torch.float32}[precision]
    a = torch.randn(size, size, device="cuda", dtype=dtype)
    b = torch.randn(size, size, device="cuda", dtype=dtype)
    with exact_fp32():
        for _ in range(3):
            a @ b
        start, end = (torch.cuda.Event(enable_timing=True),
                      torch.cuda.Event(enable_timing=True))
        start.record()
        for _ in range(reps):
            a @ b
        end.record()
        torch.cuda.synchronize()
    return 2 * size**3 * reps / (start.elapsed_time(end) / 1e3) / 1e9


# The vector extensions that decide which kernels the backends pick (bf16/AMX paths above all).
VECTOR_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")


def machine_info() -> dict:
    """Platform, CPU count, and (Linux) the CPU model and its vector extensions.

    ``cpu_id`` (family/model/stepping) tells CPU generations apart where a virtual machine's
    model name does not ("Intel(R) Xeon(R) Processor").
    """
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    ids = {}
    with suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and "cpu_model" not in info:
                info["cpu_model"] = value
            elif key in ("cpu family", "model", "stepping"):
                ids.setdefault(key, value)
            elif key == "flags":
                present = set(value.split())
                info["cpu_flags"] = [f for f in VECTOR_FLAGS if f in present]
                break
    if ids:
        info["cpu_id"] = " ".join(f"{k} {v}" for k, v in ids.items())
    return info
