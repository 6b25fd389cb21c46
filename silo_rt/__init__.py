"""silo-rt: SILO restorations with a latent diffusion prior, fast.

From Python: ``silo_rt.Restorer.from_bundle(path)`` or ``.from_model(model, operator)``,
then ``restorer(y)`` (:mod:`silo_rt.restorer`).

Subpackages and modules, by audience:

* reference (PyTorch): :mod:`degradations`, :mod:`prior`, :mod:`operators`, :mod:`latents`,
  :mod:`step`, :mod:`sampler`, :mod:`baselines`, :mod:`resample`, :mod:`training`,
  :mod:`prior_training`;
* export: :mod:`silo_rt.export` (ONNX graphs + bundle manifest, :mod:`bundle_format`);
* runtime: :mod:`silo_rt.runtime` (numpy and one graph backend: ONNX Runtime, OpenVINO or
  TensorRT, as :mod:`backends` lists them; no torch);
* tiles for any image size: :mod:`tiling` (the plan), :mod:`tiled` (the loop);
* shared, dependency-light: :mod:`errors`, :mod:`noise`, :mod:`schedule`, :mod:`images`,
  :mod:`records`, the task table in :mod:`degradations`;
* front ends: :mod:`cli`, :mod:`bench`, :mod:`evaluation`, :mod:`datasets`, :mod:`posterior`,
  :mod:`tuning`.
"""

__version__ = "0.1.0"

__all__ = ["Restorer", "Restoration"]


def __getattr__(name: str):
    # Imported on first use, so that `import silo_rt` stays light (no numpy, no torch).
    if name in ("Restorer", "Restoration"):
        from . import restorer

        return getattr(restorer, name)
    raise AttributeError(f"module 'silo_rt' has no attribute {name!r}")
