"""The environment variables silo-rt reads, each checked in one place (numpy-free, light).

Every variable a silo-rt module reads goes through :func:`env_int` or :func:`cache_root`, or
is listed in :data:`READ` with the function that checks it, so that a bad value ends in one
line naming the variable, never in a traceback:

* ``WORLD_SIZE``, ``RANK``, ``LOCAL_WORLD_SIZE`` (set by ``accelerate launch`` / torchrun):
  whole numbers, and a ``WORLD_SIZE`` above 1 only with the launcher's other variables
  (:func:`silo_rt.datasets.current_processes`);
* ``LOCAL_RANK``: a GPU index (:func:`silo_rt.runtime.tensorrt.cuda_device.device_index`);
* ``XDG_CACHE_HOME``: an absolute path, else ignored as the XDG specification says
  (:func:`cache_root`);
* ``SILO_RT_AUTO_CPU``: ``ort`` or ``openvino`` (:mod:`silo_rt.runtime.backend_choice`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SiloError

READ = ("WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE", "LOCAL_RANK", "XDG_CACHE_HOME",
        "SILO_RT_AUTO_CPU")
"""Every environment variable silo-rt reads (a test holds the source to this list)."""

SAVED = ("CUBLAS_WORKSPACE_CONFIG",)
"""Variables silo-rt only saves and restores around a change of its own (never interprets)."""

LAUNCHER_HINT = "start the command with `accelerate launch` (or torchrun), or unset it"


def env_int(name: str, default: int, lo: int, hi: int | None = None, environ=None) -> int:
    """The whole number in ``$name`` (``default`` when unset or empty), in ``[lo, hi]``;
    anything else is one :class:`SiloError` naming the variable."""
    environ = os.environ if environ is None else environ
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text, 10)
    except ValueError:
        value = None
    if value is None or value < lo or (hi is not None and value > hi):
        bound = f"{lo}…{hi}" if hi is not None else f">= {lo}"
        raise SiloError(f"environment variable {name}={text!r} is not a whole number "
                        f"{bound}; {LAUNCHER_HINT}")
    return value


def cache_root(environ=None) -> Path:
    """``$XDG_CACHE_HOME`` when it is an absolute path (a relative one is ignored, as the
    XDG specification says), else ``~/.cache``."""
    environ = os.environ if environ is None else environ
    root = environ.get("XDG_CACHE_HOME", "")
    if root and os.path.isabs(root):
        return Path(root)
    return Path.home() / ".cache"
