"""Device memory for the TensorRT backend: checked cuda-python calls, device buffers, and
cleanup that goes on after a failure.

Every cuda-python status is checked (:func:`cuda_ok`); :class:`Cleanup` lets a ``close()``
free everything after a failing call (after a sticky CUDA error every later call fails too)
and then raise the first failure once. No torch, no TensorRT.
"""

from __future__ import annotations

import numpy as np

from ...errors import SiloError, first_line
from . import api, cuda_device


class Cleanup:
    """Runs cleanup calls, goes on after one fails, and raises the first failure once."""

    def __init__(self):
        self.errors: list[BaseException] = []

    def call(self, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.errors.append(exc)

    def raise_first(self, what: str) -> None:
        if self.errors:
            lines = [first_line(exc) for exc in self.errors]
            raise SiloError(f"{what}: {api.first_of(lines)}") from self.errors[0]


def cuda_ok(result, what: str = "CUDA call"):
    """Unpack a cuda-python ``(error, *values)`` tuple, raising on error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise SiloError(f"{what} failed: {err}")
    return values[0] if len(values) == 1 else values


class DeviceBuffer:
    """``nbytes`` of device memory; :meth:`free` releases it (checked)."""

    def __init__(self, nbytes: int):
        self._cudart = cuda_device.cudart()
        self.nbytes = max(int(nbytes), 4)
        self.ptr = cuda_ok(self._cudart.cudaMalloc(self.nbytes), "cudaMalloc")

    def upload(self, array: np.ndarray, stream) -> None:
        array = np.ascontiguousarray(array)
        if array.nbytes > self.nbytes:
            raise SiloError(f"{array.nbytes} bytes do not fit a {self.nbytes}-byte buffer")
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        cuda_ok(self._cudart.cudaMemcpyAsync(self.ptr, array.ctypes.data, array.nbytes, kind,
                                             stream), "cudaMemcpyAsync (upload)")
        # the host array must outlive the copy: synchronise before it can be freed
        cuda_ok(self._cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def download(self, shape, dtype, stream, ptr: int | None = None) -> np.ndarray:
        out = np.empty(shape, dtype)
        kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_ok(self._cudart.cudaMemcpyAsync(out.ctypes.data, self.ptr if ptr is None else ptr,
                                             out.nbytes, kind, stream),
                "cudaMemcpyAsync (download)")
        cuda_ok(self._cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return out

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, None
            cuda_ok(self._cudart.cudaFree(ptr), "cudaFree")

    def __del__(self):  # a fallback for buffers never closed; errors cannot be raised here
        if getattr(self, "ptr", None):
            self._cudart.cudaFree(self.ptr)
            self.ptr = None
