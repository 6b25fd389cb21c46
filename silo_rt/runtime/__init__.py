"""The lean runtime: runs Algorithm 1 from an exported bundle with numpy + ONNX Runtime.

It must not import torch, diffusers, transformers or kornia (a test enforces this).
"""

from ..bundle_format import read_manifest
from .restore import BundleRunner

__all__ = ["BundleRunner", "read_manifest"]
