"""silo-rt: SILO restorations with a latent diffusion prior, fast.

Subpackages and modules, by audience:

* reference (PyTorch): :mod:`degradations`, :mod:`prior`, :mod:`operators`, :mod:`sampler`,
  :mod:`baselines`, :mod:`training`;
* export: :mod:`silo_rt.export` (ONNX graphs + bundle manifest);
* runtime: :mod:`silo_rt.runtime` (numpy + ONNX Runtime, no torch);
* shared, dependency-light: :mod:`errors`, :mod:`noise`, :mod:`tasks`, :mod:`images`.
"""

__version__ = "0.1.0"
