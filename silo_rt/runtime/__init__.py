"""The lean runtime: runs Algorithm 1 from an exported bundle with numpy and one graph
backend (ONNX Runtime, OpenVINO or TensorRT; :mod:`silo_rt.backends` lists them).

It must not import torch, diffusers, transformers or kornia (a test enforces this).
"""

from ..bundle_format import read_manifest
from .restore import BundleRunner

__all__ = ["BundleRunner", "read_manifest"]
