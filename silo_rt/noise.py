"""The single seeded source of every random number in a restoration.

Each backend (the PyTorch reference, the ONNX Runtime runtime, GPU backends) draws its noise
from here, so one seed means one restoration everywhere. It depends on numpy only.

Convention: ``np.random.SeedSequence(seed).spawn(3)`` gives three independent PCG64 streams,

* stream 0: the VAE encoder's posterior sample noise, shape = latent shape;
* stream 1: the initial latent ``z_T``, shape = latent shape;
* stream 2: the DDPM posterior noise of every step, drawn at once as ``(steps, *latent)``,
  row ``i`` used by the ``i``-th step (``i = 0`` is the first, noisiest step).

All draws are ``standard_normal(..., dtype=float32)``. Streams are independent, so the order
in which a backend asks for them does not matter.
"""

from __future__ import annotations

import numpy as np


class NoiseSource:
    """Seeded Gaussian noise for one restoration (all arrays float32, N(0, 1))."""

    def __init__(self, seed: int):
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        children = np.random.SeedSequence(self.seed).spawn(3)
        self._encoder, self._initial, self._steps = (
            np.random.Generator(np.random.PCG64(c)) for c in children
        )

    def encoder_noise(self, latent_shape: tuple[int, ...]) -> np.ndarray:
        """Noise for ``mean + std * noise`` of the VAE posterior, shape ``latent_shape``."""
        return self._encoder.standard_normal(latent_shape, dtype=np.float32)

    def initial_latent(self, latent_shape: tuple[int, ...]) -> np.ndarray:
        """``z_T``, shape ``latent_shape``."""
        return self._initial.standard_normal(latent_shape, dtype=np.float32)

    def step_noise(self, steps: int, latent_shape: tuple[int, ...]) -> np.ndarray:
        """Posterior noise for all steps, shape ``(steps, *latent_shape)``."""
        return self._steps.standard_normal((steps, *latent_shape), dtype=np.float32)

    def step_noise_rows(self, steps: int, latent_shape: tuple[int, ...]):
        """The rows of :meth:`step_noise` one step at a time (the same numbers: a stream
        drawn in consecutive pieces equals one draw), so a large image holds one row."""
        for _ in range(steps):
            yield self._steps.standard_normal(latent_shape, dtype=np.float32)
