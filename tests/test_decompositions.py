"""The backward-op decompositions used for export, against autograd (float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from silo_rt.export.decompositions import gradient_decompositions


def _input_grad(fn, x):
    return torch.func.grad(lambda v: (fn(v) * torch.linspace(-1, 1, fn(v).numel(),
                                                              dtype=v.dtype)
                                      .reshape(fn(v).shape)).sum())(x)


def _check(fn, x):
    """The traced gradient uses no backward op and equals autograd's."""
    expected = _input_grad(fn, x)
    graph = make_fx(lambda v: _input_grad(fn, v), decomposition_table=gradient_decompositions())(x)
    ops = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert not any("backward" in op for op in ops), ops
    torch.testing.assert_close(graph(x), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("stride,padding,dilation,groups,size", [
    (1, 1, 1, 1, 9), (2, 1, 1, 1, 8), (2, 1, 1, 1, 9), (1, 0, 1, 1, 7), (1, 2, 2, 1, 8),
    (1, 1, 1, 2, 8),
])
def test_convolution_backward(stride, padding, dilation, groups, size):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 4 // groups, 3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(2, 4, size, size, generator=g, dtype=torch.float64)
    _check(lambda v: F.conv2d(v, w, stride=stride, padding=padding, dilation=dilation,
                              groups=groups), x)


def test_transposed_convolution_backward():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 5, 3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(1, 4, 6, 6, generator=g, dtype=torch.float64)
    _check(lambda v: F.conv_transpose2d(v, w, padding=1), x)


def test_nearest_and_bilinear_upsampling_backward():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 3, 4, 5, generator=g, dtype=torch.float64)
    _check(lambda v: F.interpolate(v, scale_factor=2.0, mode="nearest"), x)
    _check(lambda v: F.interpolate(v, size=(8, 10), mode="bilinear", align_corners=False), x)
    _check(lambda v: F.interpolate(v, size=(7, 3), mode="bilinear", align_corners=False), x)
