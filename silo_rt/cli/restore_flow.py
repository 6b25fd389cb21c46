"""What ``restore`` does with a :class:`RestoreRequest`: a folder or one image, the demo
fallback, the backend choice, and writing the result."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import click

from ..backends import AUTO, BUNDLE_BACKENDS, CPU_BUNDLE_BACKENDS, REFERENCE_BACKENDS
from ..errors import SiloError
from .restore_backends import (
    refuse_options,
    refuse_torch_options,
    restore_with_bundle,
    restore_with_torch,
    with_demo,
)
from .restore_folder import restore_folder
from .restore_samples import restore_samples

if TYPE_CHECKING:
    from .restore_request import RestoreRequest


def run_restore(request: RestoreRequest) -> None:
    """Restore a folder / list of measurements, or one measurement, as ``request`` asks."""
    from ..datasets import is_dataset

    if request.bundle is not None:
        refuse_torch_options(model=request.model, operator=request.operator_path,
                             prompt=request.prompt, cfg=request.cfg_scale, arch=request.arch,
                             time_input=request.time_input)
    if is_dataset(request.measurement):
        restore_folder(request)
    else:
        refuse_options("one measurement (it restores a folder's images again)",
                       overwrite=request.overwrite or None)
        restore_image(request)


def restore_image(request: RestoreRequest) -> None:
    """Restore one measurement (or draw ``--samples`` of it); every output checked first."""
    from ..images import OutputPlan, image_format

    sample_files: list = []
    std_path = None
    if request.samples is not None:
        from ..posterior import sample_paths

        sample_files, std_path = sample_paths(request.out, request.samples)
    outputs = OutputPlan([request.out, request.compare_path, *sample_files, std_path],
                         inputs=[request.measurement, request.reference, request.bundle])
    for path in outputs.targets:
        image_format(path)
    if wants_demo(request):
        request = with_demo(request)
    if request.samples is not None:
        restore_samples(request, outputs=outputs, sample_files=sample_files, std_path=std_path)
        return
    request = replace(request, backend=choose_backend(request))
    _restore_one(request, outputs=outputs)


def wants_demo(request: RestoreRequest) -> bool:
    """Given no bundle, model nor operator, a CPU bundle backend (auto, ort, openvino) runs the
    embedded demo."""
    return (request.bundle is None and request.model is None
            and request.operator_path is None
            and (request.backend == AUTO or request.backend in CPU_BUNDLE_BACKENDS))


def choose_backend(request: RestoreRequest) -> str:
    """The backend that restores one measurement (auto without a bundle is torch), refusing
    a backend that lacks what it runs."""
    backend = request.backend
    if backend == AUTO and request.bundle is None:
        backend = "torch"
    if backend in BUNDLE_BACKENDS and request.bundle is None:
        raise SiloError(f"the {backend} backend runs a bundle: give --bundle "
                        "(see `silo-rt export`)")
    if backend in REFERENCE_BACKENDS and (request.model is None or request.operator_path is None):
        raise SiloError(f"the {backend} backend needs --model and --operator")
    return backend


def _restore_one(request: RestoreRequest, *, outputs) -> None:
    """Restore the measurement with ``request.backend``, write it (and the comparison) and
    report it, with the PSNR when there is a reference."""
    from ..images import psnr, read_image

    y = read_image(request.measurement)
    truth = None if request.reference is None else read_image(request.reference)
    if request.backend in REFERENCE_BACKENDS:
        x, label = restore_with_torch(request, y=y, cuda=request.backend == "torch-cuda")
    else:
        x, label = restore_with_bundle(request, y=y)
    if truth is not None and truth.shape != x.shape:
        raise SiloError(f"--reference is {truth.shape[-1]}x{truth.shape[-2]}, the restoration "
                        f"{x.shape[-1]}x{x.shape[-2]}")
    _write_restoration(outputs, out=request.out, compare_path=request.compare_path, y=y, x=x,
                       truth=truth)
    click.echo(f"wrote {request.out} ({x.shape[-1]}x{x.shape[-2]}, backend {label})")
    if truth is not None:
        click.echo(f"PSNR against {request.reference}: {psnr(x, truth):.2f} dB")
    if request.compare_path is not None:
        click.echo(f"wrote {request.compare_path}")


def _write_restoration(outputs, *, out, compare_path, y, x, truth) -> None:
    """Write the restoration (and the comparison) together: both or neither."""
    from ..images import write_image

    with outputs:
        outputs.stage(out, lambda path: write_image(path, x))
        if compare_path is not None:
            from ..compare import write_comparison

            outputs.stage(compare_path, lambda path: write_comparison(path, y, x, truth))
