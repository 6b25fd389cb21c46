"""Pixel-space degradations A, by task name (PyTorch, differentiable).

Images are NCHW float tensors in [-1, 1]. A :class:`Degradation` maps a clean image ``x`` to
a noiseless measurement ``A(x)``; :func:`add_noise` adds Gaussian noise of std ``sigma_y``
(in the [-1, 1] range: the paper's sigma_y = 0.01 is 0.02 here); ``encoder_input`` turns a
measurement into the full-size image the VAE encodes (SR measurements are upsampled back).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .errors import SiloError
from .resize import DEFAULT_RESIZER, bicubic_aa_matrix, check_resizer, downsampling_matrix
from .tasks import get_task, measured_pixels

BLUR_KERNEL_SIZE = 61
BLUR_SIGMA = 3.0
JPEG_QUALITY = 10


def gaussian_kernel(size: int = BLUR_KERNEL_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Normalised 2-D Gaussian kernel, ``(size, size)`` float32, sums to 1."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


class Degradation:
    """A named measurement operator. Subclasses implement :meth:`__call__`."""

    name: str = ""
    linear: bool = True

    @property
    def spec(self):
        return get_task(self.name)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def measurement_size(self, image_size: int) -> int:
        """Side of the measurement for a square image of side ``image_size``."""
        return image_size // self.spec.scale

    def encoder_input(self, y: torch.Tensor, image_size: int) -> torch.Tensor:
        """The image the VAE encodes for measurement ``y`` (full size, ``image_size``²)."""
        return y

    def transpose(self, y: torch.Tensor, image_size: int) -> torch.Tensor:
        """Adjoint ``A^T y`` for linear operators (exact, via autograd)."""
        if not self.linear:
            raise SiloError(f"task {self.name!r} is not linear: it has no transpose")
        x0 = torch.zeros(y.shape[0], y.shape[1], image_size, image_size, dtype=y.dtype,
                         device=y.device)
        _, vjp = torch.func.vjp(self, x0)
        return vjp(y)[0]

    def check_size(self, image_size: int) -> None:
        """Raise :class:`SiloError` when ``image_size`` does not suit this degradation."""
        if image_size % 8:
            raise SiloError(f"image size must be a multiple of 8, got {image_size}")
        if image_size % (8 * self.spec.scale):
            raise SiloError(
                f"task {self.name} needs an image size divisible by {8 * self.spec.scale}, "
                f"got {image_size}")


class GaussianBlur(Degradation):
    """Depthwise convolution with a 61×61 Gaussian (σ = 3), reflection padding 30."""

    name = "gb"

    def __call__(self, x):
        kernel = gaussian_kernel().to(x)
        c = x.shape[1]
        weight = kernel.expand(c, 1, *kernel.shape)
        pad = BLUR_KERNEL_SIZE // 2
        return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), weight, groups=c)

    def check_size(self, image_size):
        super().check_size(image_size)
        if image_size <= BLUR_KERNEL_SIZE // 2:
            raise SiloError(f"task gb needs images larger than {BLUR_KERNEL_SIZE // 2} px")


def resize_with_matrices(x: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """``rows · x · colsᵀ`` over the last two axes: ``(…, H, W)`` → ``(…, h, w)``."""
    r = torch.tensor(rows, dtype=x.dtype, device=x.device)
    c = torch.tensor(cols, dtype=x.dtype, device=x.device)
    return torch.matmul(torch.matmul(r, x), c.t())


class SuperResolution(Degradation):
    """Downsampling by ``factor`` with the named resizer (:mod:`silo_rt.resize`: ``dps``, the
    paper's, or ``torch-bicubic``); antialiased bicubic upsampling back to full size to encode.

    Both directions are matrix products (the same matrices as the exported graph and
    ``--keep-measured``), so there is no ``Resize`` op for an exporter to translate.
    """

    def __init__(self, factor: int, resizer: str = DEFAULT_RESIZER):
        self.factor = factor
        self.resizer = check_resizer(resizer)
        self.name = f"sr{factor}"

    def __call__(self, x):
        h, w = x.shape[-2:]
        return resize_with_matrices(
            x, downsampling_matrix(self.resizer, h, h // self.factor),
            downsampling_matrix(self.resizer, w, w // self.factor))

    def encoder_input(self, y, image_size):
        # As F.interpolate(mode="bicubic", antialias=True) upsamples (the authors' choice).
        h, w = y.shape[-2:]
        return resize_with_matrices(y, bicubic_aa_matrix(h, image_size),
                                    bicubic_aa_matrix(w, image_size))


def box_mask(image_size: int) -> torch.Tensor:
    """``(1, 1, S, S)`` float mask: 0 inside the centred box of side S/2, 1 elsewhere."""
    return torch.from_numpy(measured_pixels("ip", image_size))


class BoxInpainting(Degradation):
    """Zero (grey, in [-1, 1]) a centred box of half the side: 256×256 on 512×512."""

    name = "ip"

    def __call__(self, x):
        return x * box_mask(x.shape[-1]).to(x)


class Jpeg(Degradation):
    """JPEG at quality 10 through kornia's differentiable codec (on [0, 1] images)."""

    name = "jpeg"
    linear = False

    def __call__(self, x):
        from kornia.enhance import jpeg_codec_differentiable

        quality = torch.full((x.shape[0],), float(JPEG_QUALITY), dtype=x.dtype, device=x.device)
        out = jpeg_codec_differentiable((x + 1) / 2, quality)
        return (out * 2 - 1).clamp(-1, 1)

    def check_size(self, image_size):
        super().check_size(image_size)
        if image_size % 16:
            raise SiloError(f"task jpeg needs an image size divisible by 16, got {image_size}")


def get_degradation(name: str, resizer: str = DEFAULT_RESIZER) -> Degradation:
    """The degradation for a task name (``gb``, ``sr4``, ``sr8``, ``ip``, ``jpeg``).

    ``resizer`` chooses the SR measurement model (ignored by the other tasks).
    """
    get_task(name)  # clear error for unknown names
    return {"gb": GaussianBlur, "ip": BoxInpainting, "jpeg": Jpeg,
            "sr4": lambda: SuperResolution(4, resizer),
            "sr8": lambda: SuperResolution(8, resizer)}[name]()


def add_noise(y: torch.Tensor, sigma_y: float, rng: np.random.Generator) -> torch.Tensor:
    """``y + sigma_y * n`` with ``n ~ N(0, I)`` drawn from numpy ``rng`` (float32)."""
    if not (sigma_y >= 0 and math.isfinite(sigma_y)):
        raise SiloError(f"sigma_y must be a finite number >= 0, got {sigma_y}")
    n = torch.from_numpy(rng.standard_normal(tuple(y.shape), dtype=np.float32)).to(y)
    return y + sigma_y * n


def make_measurement(x: np.ndarray, task: str, sigma_y: float, seed: int,
                     resizer: str = DEFAULT_RESIZER) -> np.ndarray:
    """``y = A(x) + sigma_y·n`` clipped to [-1, 1], as ``silo-rt degrade`` writes it.

    ``x``: ``(B, 3, S, S)`` float32 in [-1, 1]; the noise comes from ``default_rng(seed)``;
    ``resizer``: the SR measurement model.
    """
    degradation = get_degradation(task, resizer)
    degradation.check_size(x.shape[-1])
    with torch.no_grad():
        y = degradation(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    return add_noise(y, sigma_y, np.random.default_rng(seed)).clamp(-1, 1).numpy()
