"""Export: ONNX graphs of the VAE, the UNet + H_θ forward and the fused guided step, collected
with a manifest in a bundle folder that :mod:`silo_rt.runtime` runs without PyTorch."""

from .bundle import ExportOptions, export_bundle

__all__ = ["ExportOptions", "export_bundle"]
