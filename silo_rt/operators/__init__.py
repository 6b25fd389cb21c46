"""Latent operators H_θ: networks that imitate a degradation inside the latent space.

``H_θ(ẑ0 | features, t, σ_y) ≈ E(A(x) + n)``: given a (denoised) latent, predict the latent
of the degraded image. Two architectures:

* :class:`~silo_rt.operators.cnn.CnnOperator`: small, time-independent, takes ẑ0;
* :class:`~silo_rt.operators.readout.ReadoutOperator`: a Readout-Guidance head on the UNet's
  up-block features, conditioned on t.

Both are conditioned on σ_y through the UNet's own timestep embedding (see
:meth:`silo_rt.prior.LatentPrior.sigma_embedding`).
"""

from .checkpoint import OperatorConfig, build_operator, load_operator, save_operator
from .features import UpBlockFeatureTap

__all__ = [
           "OperatorConfig",
           "UpBlockFeatureTap",
           "build_operator",
           "load_operator",
           "save_operator",
]
