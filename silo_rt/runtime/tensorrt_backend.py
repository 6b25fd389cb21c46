"""Temporary: :mod:`silo_rt.runtime.restore` still imports ``TrtGraphs`` from here, until it
imports it from :mod:`silo_rt.runtime.tensorrt.backend`; then this file goes."""

from .tensorrt.backend import TrtGraphs

__all__ = ["TrtGraphs"]
