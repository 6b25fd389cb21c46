"""Degradation tasks, one module each, registered once (see :mod:`.base` for what a task
provides). Adding a task: a new module with a registered :class:`Degradation` subclass,
imported below, plus its tests (the property tests already run over every registered task).
"""

from . import blur, inpainting, jpeg, super_resolution  # noqa: F401  (they register)
from .base import DEFAULT_SIGMA_Y, LATENT_CLAMP, Degradation
from .blur import BLUR_KERNEL_SIZE, BLUR_SIGMA, gaussian_kernel
from .inpainting import box_mask, box_mask_array
from .jpeg import JPEG_QUALITY
from .measurement import add_noise, make_measurement
from .registry import all_degradations, get_degradation, imposable_tasks, task_names

__all__ = [
    "BLUR_KERNEL_SIZE", "BLUR_SIGMA", "DEFAULT_SIGMA_Y", "JPEG_QUALITY", "LATENT_CLAMP",
    "Degradation", "add_noise", "all_degradations", "box_mask", "box_mask_array",
    "gaussian_kernel", "get_degradation", "imposable_tasks", "make_measurement", "task_names",
]
