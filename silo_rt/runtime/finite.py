"""Detecting NaN/Inf in a restoration, reported with the step where it first appeared."""

from __future__ import annotations

import numpy as np

from ..errors import SiloError


def check_losses(losses: np.ndarray, timesteps) -> None:
    """Raise :class:`SiloError` naming the first step whose loss is NaN or Inf.

    A non-finite latent makes that step's loss non-finite, so the losses locate it.
    """
    bad = np.flatnonzero(~np.isfinite(np.asarray(losses, np.float64)))
    if bad.size:
        i = int(bad[0])
        raise SiloError(f"non-finite value at step {i} (timestep {int(timesteps[i])}); on a "
                        "GPU try fp32 engines or keep the VAE in fp32")
