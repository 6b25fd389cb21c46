"""The CUDA device a process uses, through cuda-python, and why it cannot be used.

One place for: importing the cuda-python runtime module (``cuda.bindings.runtime`` in
cuda-bindings 12.6+/13, ``cuda.cudart`` before), choosing this process's GPU (``LOCAL_RANK``
under accelerate / torchrun, so shards started together do not all share GPU 0), reading its
compute capability, and turning a failure into one line that says what to change:

- cuda-bindings 13.x needs an NVIDIA driver >= 580; 12.x needs >= 525. On an older driver every
  runtime call returns ``cudaErrorInsufficientDriver`` (35).
- TensorRT wheels are built for one CUDA major (``tensorrt-cu12`` / ``-cu13``,
  ``tensorrt-rtx-cu13``); cuda-python must have the same major.

Nothing here imports torch or TensorRT.
"""

from __future__ import annotations

import os
import re
from importlib import metadata

from ...errors import SiloError

INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver
NO_DEVICE = 100  # cudaErrorNoDevice
DRIVER_NEEDED = {12: "525.60", 13: "580.65"}
"""Oldest NVIDIA Linux driver each cuda-bindings major runs on."""
_CUDA_SUFFIX = re.compile(r"^tensorrt(?:[-_]rtx)?[-_]cu(\d+)(?:[-_].*)?$")


def cudart():
    """cuda-python's runtime module (raises a one-line :class:`SiloError` without it)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError:
            raise SiloError("cuda-python is not installed (pip install 'cuda-python>=12,<13' "
                            "for CUDA 12 TensorRT wheels, 'cuda-python>=13,<14' for CUDA 13 "
                            "ones)") from None
    return runtime


def bindings_major() -> int | None:
    """The major version of the installed cuda-python / cuda-bindings (None: unknown)."""
    for name in ("cuda-bindings", "cuda-python"):
        try:
            return int(metadata.version(name).split(".")[0])
        except (metadata.PackageNotFoundError, ValueError):
            continue
    return None


def tensorrt_cuda_major(distributions=None) -> int | None:
    """The CUDA major the installed TensorRT wheels were built for (``tensorrt-cu12`` → 12).

    ``distributions``: installed distribution names (default: this environment's).
    """
    if distributions is None:
        distributions = [d.metadata["Name"] or "" for d in metadata.distributions()]
    majors = {int(m.group(1)) for name in distributions
              if (m := _CUDA_SUFFIX.match(name.lower()))}
    return majors.pop() if len(majors) == 1 else None


def check_cuda_pairing(trt_major: int | None, cuda_major: int | None) -> None:
    """Refuse TensorRT built for one CUDA major next to cuda-python of another."""
    if trt_major and cuda_major and trt_major != cuda_major:
        raise SiloError(f"TensorRT here is built for CUDA {trt_major} but cuda-python is "
                        f"{cuda_major}.x: pip install 'cuda-python>={trt_major},"
                        f"<{trt_major + 1}'")


def device_index(count: int, environ=os.environ) -> int:
    """This process's GPU: ``LOCAL_RANK`` (accelerate, torchrun) modulo the visible GPUs
    (a launcher that gives each process one GPU through ``CUDA_VISIBLE_DEVICES`` leaves one
    visible: index 0), else 0."""
    rank = environ.get("LOCAL_RANK", "0")
    if not rank.isdigit():
        raise SiloError(f"LOCAL_RANK={rank!r} is not a GPU index")
    return int(rank) % max(count, 1)


def _driver(rt) -> str:
    err, version = rt.cudaDriverGetVersion()
    if int(err) != 0 or not version:
        return "no NVIDIA driver was found"
    return f"the driver supports CUDA {version // 1000}.{version % 1000 // 10}"


def explain(err, rt=None) -> str:
    """One line for a failed CUDA runtime call: what is wrong and what to change."""
    code = int(err)
    if code == INSUFFICIENT_DRIVER:
        major = bindings_major()
        needed = DRIVER_NEEDED.get(major)
        where = _driver(rt) if rt is not None else "the driver is too old"
        return (f"cuda-python {major}.x needs an NVIDIA driver >= {needed or '?'} but "
                f"{where}: update the driver, or install the cuda-python (and TensorRT) "
                "of the driver's CUDA major, e.g. pip install 'cuda-python>=12,<13'")
    if code == NO_DEVICE:
        return "no CUDA GPU is visible (check CUDA_VISIBLE_DEVICES and nvidia-smi)"
    return f"CUDA error {err}"


def this_device(rt=None) -> int:
    """This process's GPU (:func:`device_index` of the visible ones); refuses in one line
    where none is usable."""
    rt = rt or cudart()
    err, count = rt.cudaGetDeviceCount()
    if int(err) != 0:
        raise SiloError(f"no usable CUDA device: {explain(err, rt)}")
    if count == 0:
        raise SiloError(f"no usable CUDA device: {explain(NO_DEVICE, rt)}")
    return device_index(count)


def select_device(rt=None) -> int:
    """Make this process's GPU (:func:`this_device`) current; returns its index."""
    rt = rt or cudart()
    index = this_device(rt)
    err, *_ = _as_tuple(rt.cudaSetDevice(index))
    if int(err) != 0:
        raise SiloError(f"cannot use CUDA device {index}: {explain(err, rt)}")
    return index


def compute_capability(device: int, rt=None) -> tuple[int, int]:
    """``(major, minor)`` of ``device``."""
    rt = rt or cudart()
    err, props = rt.cudaGetDeviceProperties(device)
    if int(err) != 0:
        raise SiloError(f"no usable CUDA device: {explain(err, rt)}")
    return props.major, props.minor


def _as_tuple(result):
    return result if isinstance(result, tuple) else (result,)
