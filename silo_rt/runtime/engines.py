"""Temporary: the names :mod:`silo_rt.runtime.restore` still imports from here, until it
imports them from :mod:`silo_rt.runtime.tensorrt` (``api`` and ``keys``); then this file
goes. Everything else lives in that package."""

from .tensorrt.api import TENSORRT_MODULES
from .tensorrt.keys import default_precision, tensorrt_unavailable_reason

__all__ = ["TENSORRT_MODULES", "default_precision", "tensorrt_unavailable_reason"]
