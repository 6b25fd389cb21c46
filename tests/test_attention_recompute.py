"""The step whose backward recomputes attention (``export --attention recompute``): the
chunked attention and its hand-written backward equal autograd's, the exported step equals
the PyTorch step (value and gradient) on ``tiny`` and on the demo prior's architecture with
several uneven query chunks, ONNX Runtime keeps the recomputation (no merge with the
forward), and NVIDIA's parser and builder accept it."""

import importlib.util

import numpy as np
import onnx
import pytest
import torch

from silo_rt.export.attention import (
    ATTENTION_MODES,
    DEFAULT_ATTENTION,
    RecomputedAttention,
    attention_processor,
)
from silo_rt.export.bundle import ExportOptions, example_inputs
from silo_rt.export.onnx_writer import export_step
from silo_rt.operators import OperatorConfig, build_operator
from silo_rt.prior import build_random_prior
from silo_rt.runtime import step_io
from silo_rt.sampler import SamplingOptions
from silo_rt.step import GuidedStep

CHUNK = 24  # tiny's 8x8 latent has 64 query rows: chunks of 24, 24 and 16


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize("rows, keys, chunk", [(10, 10, 4), (10, 7, 3), (6, 6, 16)])
def test_recomputed_attention_and_its_backward_equal_autograd(rows, keys, chunk):
    g = torch.Generator().manual_seed(rows * keys)
    q, k, v = (torch.randn(3, n, 5, generator=g, dtype=torch.float64, requires_grad=True)
               for n in (rows, keys, keys))
    d_out = torch.randn(3, rows, 5, generator=g, dtype=torch.float64)
    ours = RecomputedAttention.apply(q, k, v, chunk, False)
    plain = torch.bmm(torch.bmm(q, k.transpose(1, 2)).softmax(-1), v)
    torch.testing.assert_close(ours, plain, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(ours, (q, k, v), d_out)
    expected = torch.autograd.grad(plain, (q, k, v), d_out)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_the_modes_and_their_refusals():
    assert DEFAULT_ATTENTION in ATTENTION_MODES == ("recompute", "keep")
    with pytest.raises(ValueError, match="recompute, keep"):
        attention_processor("flash")
    with pytest.raises(ValueError, match="at least 1"):
        attention_processor("recompute", 0)
    from silo_rt.errors import SiloError

    with pytest.raises(SiloError, match="attention must be one of"):
        ExportOptions(SamplingOptions("sr8", steps=2), 64, attention="flash")
    with pytest.raises(SiloError, match="attention chunk"):
        ExportOptions(SamplingOptions("sr8", steps=2), 64, attention_chunk=0)


def test_the_cli_offers_the_modes_export_knows():
    from silo_rt.cli.export import export

    (option,) = [p for p in export.params if p.name == "attention"]
    assert tuple(option.type.choices) == ATTENTION_MODES
    assert option.default == DEFAULT_ATTENTION


def _export_recompute(prior, tmp_path, size, task="sr8", chunk=CHUNK):
    torch.manual_seed(0)
    config = OperatorConfig.for_prior(prior, "cnn", task)
    operator = build_operator(config).eval().requires_grad_(False)
    options = SamplingOptions(task, steps=4)
    context = prior.encode_prompt(options.prompt, 1.0)
    example = example_inputs(prior, ExportOptions(options, size), context)
    names = step_io.GRAPHS[step_io.STEP].input_names(False)
    path = tmp_path / "step.onnx"
    export_step(GuidedStep(prior, operator), [example[n] for n in names], names,
                step_io.GRAPHS[step_io.STEP].output_names, path, "recompute", chunk)
    return GuidedStep(prior, operator), names, path


def _check_parity(step, names, path):
    """z_prev and the loss against the PyTorch step, and the gradient alone (η = 1 minus
    η = 0) against autograd, as tests/test_export.py holds the default export."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = np.random.default_rng(5)
    feeds = {}
    for i in session.get_inputs():
        if i.name == "timestep":
            feeds[i.name] = np.array([g.integers(1, 1000)], np.float32)
        elif i.name == "coefficients":
            feeds[i.name] = np.array([1.3, -0.8, 0.2, 0.8, 0.1], np.float32)
        elif i.name in ("eta", "sigma_y"):
            feeds[i.name] = np.array([g.uniform(0.01, 2.0)], np.float32)
        else:
            feeds[i.name] = g.standard_normal(i.shape).astype(np.float32)
    args = [torch.from_numpy(feeds[n]) for n in names]
    z_prev, loss = step(*args)
    ours = session.run(None, feeds)
    assert rel(ours[0], z_prev) <= 1e-4 and rel(ours[1], loss) <= 1e-4
    grad_ort = -(session.run(None, dict(feeds, eta=np.ones(1, np.float32)))[0]
                 - session.run(None, dict(feeds, eta=np.zeros(1, np.float32)))[0])
    z = args[0].clone().requires_grad_()
    kw = dict(zip(names, args))
    ref_loss, _ = step.measurement_loss(z, kw["timestep"], kw["coefficients"], kw["w"],
                                        kw["context"], kw["sigma_y"])
    (grad,) = torch.autograd.grad(ref_loss, z)
    assert grad.abs().max() < 1  # unclamped, so the comparison sees the whole gradient
    assert rel(grad_ort, grad.clamp(-1, 1)) <= 1e-4
    return session


@pytest.fixture(scope="module")
def tiny_recompute(tiny_prior, tmp_path_factory):
    return _export_recompute(tiny_prior, tmp_path_factory.mktemp("recompute"), 64)


def test_the_recomputing_step_matches_pytorch_and_autograd_on_tiny(tiny_recompute):
    _check_parity(*tiny_recompute)


def test_onnx_runtime_keeps_the_recomputation(tiny_recompute, tmp_path):
    """Every backward chunk's Softmax survives ONNX Runtime's optimisations (a
    common-subexpression merge with the forward's would bring the stored maps back), and
    each reads the scores of a query chunk offset by a zero-weighted term of its gradient."""
    import onnxruntime as ort

    _, _, path = tiny_recompute
    model = onnx.load(str(path))
    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    producers = {out: n for n in model.graph.node for out in n.output}

    def anchored(node, depth=0):  # an Add of a Mul by the constant 0 above this node
        if node is None or depth > 4:
            return False
        if node.op_type == "Add" and any(
                (p := producers.get(i)) is not None and p.op_type == "Mul"
                and any(_is_zero(model, producers, x) for x in p.input) for i in node.input):
            return True
        return any(anchored(producers.get(i), depth + 1) for i in node.input)

    # every backward chunk, and every forward chunk after an attention's first (chained
    # to its predecessor), is anchored; one forward chunk per attention is not
    anchored_count = sum(anchored(n) for n in softmax)
    assert len(softmax) / 2 < anchored_count < len(softmax)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath)
    assert sum(n.op_type == "Softmax" for n in optimized.graph.node) == len(softmax)


def _is_zero(model, producers, name):
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name == name:
            return not numpy_helper.to_array(init).any()
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        return not numpy_helper.to_array(node.attribute[0].t).any()
    return False


@pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                    reason="needs TensorRT-RTX (pip install 'silo-rt[trt-check]')")
def test_tensorrt_parses_and_builds_the_recomputing_step(tiny_recompute):
    from silo_rt.runtime.tensorrt.check import check_onnx_with_tensorrt

    verdict = check_onnx_with_tensorrt(tiny_recompute[2])
    assert verdict.ok is True, f"{verdict.stage}: {verdict.message}"


def test_the_recomputing_step_matches_pytorch_on_the_demo_architecture(tmp_path):
    """The demo prior's architecture (random weights; its 16x16 latent gives 256 query rows:
    chunks of 96, 96 and 64)."""
    prior = build_random_prior("demo").freeze()
    _check_parity(*_export_recompute(prior, tmp_path, 64, "sr4", chunk=96))


def test_the_chunks_of_an_attention_run_one_after_another(tmp_path):
    """Within the forward and within the backward, every chunk's Softmax depends on the
    previous chunk's results. Independent chunks let ONNX Runtime's order compute them side
    by side, keeping many chunks' maps at once (SD-1.x's 64×64 attention: 0.8 GiB at any
    chunk size, ``benchmarks/memory/README.md``)."""
    class Vjp(torch.nn.Module):
        def forward(self, q, k, v, grad_out):
            def attention(q, k, v):
                return RecomputedAttention.apply(q, k, v, 8, False)

            return torch.func.vjp(attention, q, k, v)[1](grad_out)

    path = tmp_path / "attention.onnx"
    inputs = [torch.randn(2, 37, 5) for _ in range(4)]  # 37 rows: chunks of 8, the last 5
    export_step(Vjp(), inputs, ["q", "k", "v", "grad_out"], ["dq", "dk", "dv"], path,
                "recompute")
    model = onnx.load(str(path))
    consumers = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def below(start_names):  # every node downstream of these tensors
        seen, todo = {}, list(start_names)
        while todo:
            for node in consumers.get(todo.pop(), []):
                if id(node) not in seen:
                    seen[id(node)] = node
                    todo.extend(node.output)
        return seen

    softmax = [n for n in model.graph.node if n.op_type == "Softmax"]
    from_gradient = below(["grad_out"])
    for chunks in ([n for n in softmax if id(n) not in from_gradient],
                   [n for n in softmax if id(n) in from_gradient]):
        assert len(chunks) == 5
        after = {id(n): below(n.output) for n in chunks}
        for a in chunks:
            for b in chunks:
                assert a is b or id(b) in after[id(a)] or id(a) in after[id(b)]
