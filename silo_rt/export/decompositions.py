"""Decompositions that turn the backward ops of a traced gradient into forward ONNX ops.

``torch.onnx`` has no converters for ``aten.*_backward`` ops. After ``make_fx`` with this
table, the gradient graph contains only forward ops:

* core ATen's own decompositions of every ``*_backward`` op it knows;
* ``convolution_backward`` → the input gradient as a transposed convolution with the same
  weights (and a plain convolution for a transposed one); weights are frozen constants, so
  no weight gradient is ever needed;
* ``upsample_nearest2d_backward`` (integer scales) → reshape + sum;
* ``upsample_bilinear2d_backward`` → ``Mᵀ_h · G · M_w`` with the static interpolation
  matrices (the readout operator's feature resizing).
"""

from __future__ import annotations

import operator

import numpy as np
import torch

aten = torch.ops.aten


def _convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
                          transposed, output_padding, groups, output_mask):
    if output_mask[1] or output_mask[2]:
        raise NotImplementedError("weight/bias gradients: freeze all parameters before tracing")
    if transposed:
        # The adjoint of a transposed convolution is the plain convolution with its weights.
        if groups != 1:
            raise NotImplementedError("gradient through a grouped transposed convolution")
        grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation,
                                      False, [0, 0], 1)
        return grad_input, None, None
    extra = [input.shape[2 + i] - ((grad_output.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                   + dilation[i] * (weight.shape[2 + i] - 1) + 1)
             for i in range(2)]
    reach = [dilation[i] * (weight.shape[2 + i] - 1) for i in range(2)]
    if (groups == 1 and list(stride) == [1, 1] and extra == [0, 0]
            and all(padding[i] <= reach[i] for i in range(2))):
        # Stride 1: the same as a plain convolution with the flipped, transposed kernel,
        # which runtimes execute faster than a transposed convolution.
        flipped = weight.flip(2, 3).transpose(0, 1)
        grad_input = aten.convolution(grad_output, flipped, None, [1, 1],
                                      [reach[0] - padding[0], reach[1] - padding[1]], dilation,
                                      False, [0, 0], 1)
        return grad_input, None, None
    grad_input = aten.convolution(grad_output, weight, None, stride, padding, dilation, True,
                                  extra, groups)
    return grad_input, None, None


def _upsample_nearest2d_backward(grad_output, output_size, input_size, scales_h=None,
                                 scales_w=None):
    b, c, h, w = input_size
    sh, sw = output_size[0] // h, output_size[1] // w
    if sh * h != output_size[0] or sw * w != output_size[1]:
        raise NotImplementedError("nearest upsampling backward needs integer scales")
    return grad_output.reshape(b, c, h, sh, w, sw).sum(dim=(3, 5))


def bilinear_matrix(out_size: int, in_size: int) -> np.ndarray:
    """``(out, in)`` matrix of 1-D bilinear resizing, ``align_corners=False`` (PyTorch's)."""
    m = np.zeros((out_size, in_size), dtype=np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        src = max(scale * (i + 0.5) - 0.5, 0.0)
        i0 = min(int(src), in_size - 1)
        i1 = min(i0 + 1, in_size - 1)
        frac = src - i0
        m[i, i0] += 1.0 - frac
        m[i, i1] += frac
    return m


def _upsample_bilinear2d_backward(grad_output, output_size, input_size, align_corners,
                                  scales_h=None, scales_w=None):
    if align_corners:
        raise NotImplementedError("bilinear backward with align_corners=True")
    mh = torch.tensor(bilinear_matrix(output_size[0], input_size[2]), dtype=grad_output.dtype)
    mw = torch.tensor(bilinear_matrix(output_size[1], input_size[3]), dtype=grad_output.dtype)
    return torch.matmul(torch.matmul(mh.t(), grad_output), mw)


def gradient_decompositions() -> dict:
    """The ``decomposition_table`` for ``make_fx`` when tracing a gradient for ONNX."""
    table = {op: fn for op, fn in torch._decomp.core_aten_decompositions().items()
             if "backward" in str(op)}
    table[aten.convolution_backward.default] = _convolution_backward
    table[aten.upsample_nearest2d_backward.default] = _upsample_nearest2d_backward
    table[aten.upsample_bilinear2d_backward.default] = _upsample_bilinear2d_backward
    return table


def recompute_layer_norm_statistics(graph: torch.fx.GraphModule) -> int:
    """Make every ``native_layer_norm`` in ``graph`` a single-output op; returns how many.

    The traced backward of a LayerNorm reads the forward's saved mean and inverse standard
    deviation (``native_layer_norm``'s 2nd and 3rd outputs). ONNX's LayerNormalization has
    those outputs too, but TensorRT's parser accepts only one ("doesn't support more than 1
    outputs for LayerNormalization nodes"). This pass computes them again from the input
    with plain reductions (``mean``, population ``var``, ``rsqrt``), the definition
    ``native_layer_norm`` itself uses, so the result is unchanged and the LayerNorm keeps
    its fused forward.
    """
    rewritten = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target != aten.native_layer_norm.default:
            continue
        stats = [user for user in node.users
                 if user.target is operator.getitem and user.args[1] in (1, 2)]
        if not stats:
            continue
        x, normalized_shape, eps = node.args[0], node.args[1], node.args[4]
        dims = list(range(-len(normalized_shape), 0))
        with graph.graph.inserting_after(node):
            mean = graph.graph.call_function(aten.mean.dim, (x, dims, True))
        with graph.graph.inserting_after(mean):
            var = graph.graph.call_function(aten.var.correction, (x, dims),
                                            {"correction": 0, "keepdim": True})
        with graph.graph.inserting_after(var):
            shifted = graph.graph.call_function(aten.add.Tensor, (var, eps))
        with graph.graph.inserting_after(shifted):
            rstd = graph.graph.call_function(aten.rsqrt.default, (shifted,))
        for user in stats:
            user.replace_all_uses_with(mean if user.args[1] == 1 else rstd)
            graph.graph.erase_node(user)
        rewritten += 1
    graph.graph.lint()
    graph.recompile()
    return rewritten
