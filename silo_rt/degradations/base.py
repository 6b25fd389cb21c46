"""What every degradation task provides, and the defaults shared by all of them.

Images are NCHW arrays in [-1, 1]. A :class:`Degradation` is one task, whole:

* the forward operator ``A`` in PyTorch (differentiable: training targets, the reference
  sampler and the exported encoder graph all call it);
* what the VAE encodes for a measurement (:meth:`~Degradation.encoder_input`);
* the task's sampling defaults (η, the ±4 latent clamp, the measurement's scale);
* for tasks whose measurement can be imposed exactly, ``A`` and ``A⁺`` in numpy
  (``restore --keep-measured``, CPSNR), so the runtime needs no PyTorch;
* its evaluation baseline (bicubic, a biharmonic fill, or the measurement itself).

This module and the task modules import PyTorch only inside the methods that need it.

``sigma_y`` is always given in the [-1, 1] image range used throughout silo-rt: the paper's
sigma_y = 0.01 (for images in [0, 1]) is 0.02 here.
"""

from __future__ import annotations

import numpy as np

from ..errors import SiloError

DEFAULT_SIGMA_Y = 0.02
"""Default measurement noise std in the [-1, 1] range (the paper's 0.01 in [0, 1])."""

LATENT_CLAMP = 4.0
"""Encoded measurements of tasks with ``clamp_latent`` are clamped to ±LATENT_CLAMP."""


class Degradation:
    """One degradation task. Subclasses set the class attributes and :meth:`__call__`.

    Attributes:
        name: short name used on the command line (``gb``, ``sr4``, ...).
        description: one line for ``--help``.
        eta: default consistency scale η of Algorithm 1.
        clamp_latent: whether the encoded measurement ``w`` is clamped to [-4, 4].
        scale: downsampling factor of the measurement (1 for same-size measurements).
        linear: whether ``A`` is linear (it then has :meth:`transpose`).
        imposable: whether :meth:`keep_measured` can impose the measurement exactly.
        baseline_name: what :meth:`baseline` computes, for reports.
        tileable: whether ``A`` acts the same everywhere in the image, so an image of any
            size can be restored by tiles (:mod:`silo_rt.tiled`).
    """

    name: str = ""
    description: str = ""
    eta: float = 0.5
    clamp_latent: bool = False
    scale: int = 1
    linear: bool = True
    imposable: bool = False
    baseline_name: str = "measurement"
    tileable: bool = True
    untileable_reason: str = ""

    def __repr__(self) -> str:
        return f"<degradation {self.name}>"

    # -- PyTorch: the forward operator and what the encoder sees ---------------------------
    def __call__(self, x):  # pragma: no cover - abstract
        """``A(x)``: ``(B, C, S, S)`` torch tensor → ``(B, C, S/scale, S/scale)``."""
        raise NotImplementedError

    def encoder_input(self, y, image_size: int):
        """The image the VAE encodes for measurement ``y``: ``(B, 3, image_size, image_size)``."""
        return y

    def transpose(self, y, image_size: int):
        """Adjoint ``Aᵀ y`` for linear operators (exact, via autograd)."""
        import torch

        if not self.linear:
            raise SiloError(f"task {self.name!r} is not linear: it has no transpose")
        x0 = torch.zeros(y.shape[0], y.shape[1], image_size, image_size, dtype=y.dtype,
                         device=y.device)
        _, vjp = torch.func.vjp(self, x0)
        return vjp(y)[0]

    # -- sizes -------------------------------------------------------------------------------
    def measurement_size(self, image_size: int) -> int:
        """Side of the measurement for a square image of side ``image_size``."""
        return image_size // self.scale

    def check_size(self, image_size: int) -> None:
        """Raise :class:`SiloError` when ``image_size`` does not suit this degradation."""
        if image_size % 8:
            raise SiloError(f"image size must be a multiple of 8, got {image_size}")
        if image_size % (8 * self.scale):
            raise SiloError(
                f"task {self.name} needs an image size divisible by {8 * self.scale}, "
                f"got {image_size}")

    def check_tileable(self, why: str) -> None:
        """Raise :class:`SiloError` (saying ``why`` tiles were needed) unless tileable."""
        if not self.tileable:
            raise SiloError(f"task {self.name} cannot be restored by tiles ({why}): "
                            f"{self.untileable_reason}")

    def check_measurable(self, height: int, width: int) -> None:
        """Raise :class:`SiloError` unless an image of ``height × width`` (any aspect) can be
        degraded: both sides divisible by :attr:`scale`."""
        if height % self.scale or width % self.scale:
            raise SiloError(f"task {self.name} needs image sides divisible by {self.scale}, "
                            f"got {width}x{height}")

    # -- numpy: imposing the measurement exactly (restore --keep-measured) -------------------
    def measured_pixels(self, image_size: int) -> np.ndarray | None:
        """``(1, 1, S, S)`` float32 mask of the pixels the measurement observes as they are
        (1) and those it hides (0), or None when no pixel is observed as it is."""
        return None

    def check_imposable(self) -> None:
        """Raise :class:`SiloError` unless this task has an exact consistency step."""
        if not self.imposable:
            from .registry import imposable_tasks

            raise SiloError(f"--keep-measured needs a task whose measurement can be imposed "
                            f"exactly ({', '.join(imposable_tasks())}), not {self.name}")

    def apply_numpy(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """``A x`` in float64, no noise, no clipping (the numpy twin of :meth:`__call__`)."""
        self.check_imposable()
        raise NotImplementedError

    def measure_numpy(self, x: np.ndarray) -> np.ndarray:
        """``A x`` without noise, clipped to [-1, 1], float32: the measurement
        :func:`~silo_rt.degradations.make_measurement` gives with ``sigma_y = 0``."""
        return np.clip(self.apply_numpy(x), -1.0, 1.0).astype(np.float32)

    def pseudo_inverse_numpy(self, y: np.ndarray, height: int,
                             width: int) -> np.ndarray:  # pragma: no cover - abstract
        """``A⁺ y`` in float64: ``(B, C, h, w)`` → ``(B, C, height, width)``."""
        self.check_imposable()
        raise NotImplementedError

    def keep_measured(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``x`` with the part the measurement determines taken from ``y``.

        For ``y = A x + noise`` every image splits into a part the measurement determines
        (the row space of ``A``) and a part it says nothing about (the null space). The
        restoration keeps its null-space part and takes the determined part from ``y``::

            x' = x + A⁺ (y − A x)            so that  A x' = y

        (the range/null-space decomposition of DDNM, Wang et al. 2022). SILO's own output
        agrees with ``y`` only as well as H_θ imitates ``A``; this makes it exact.

        Args:
            y: ``(B, 3, h, w)`` measurement in [-1, 1] (``h = H/scale``).
            x: ``(B, 3, H, W)`` restoration in [-1, 1].

        Returns:
            ``(B, 3, H, W)`` float32, clipped to [-1, 1] (which can move ``A x'`` off ``y``
            by the clipped amount only).
        """
        self.check_imposable()
        height, width = x.shape[-2:]
        if y.shape[-2:] != (height // self.scale, width // self.scale):
            raise SiloError(f"measurement {y.shape[-1]}x{y.shape[-2]} does not fit a "
                            f"{width}x{height} {self.name} restoration")
        xd = np.asarray(x, np.float64)
        residual = np.asarray(y, np.float64) - self.apply_numpy(xd)
        correction = self.pseudo_inverse_numpy(residual, height, width)
        return np.clip(xd + correction, -1.0, 1.0).astype(np.float32)

    # -- evaluation --------------------------------------------------------------------------
    def baseline(self, y: np.ndarray, image_size: int) -> np.ndarray:
        """The simple restoration of ``y`` ``(1, 3, h, w)``: ``(1, 3, S, S)`` float32."""
        return np.array(y, np.float32, copy=True)
