"""The embedded demo's prior and operators as PyTorch modules, read back from its bundles.

The demo ships only as bundles (ONNX). Comparing SILO with the decoder-in-the-loop baselines
(LDPS, GML-DPS, PSLD) on the same prior needs the prior in PyTorch, so this rebuilds it:

* the VAE from the ``vae_encoder``/``vae_decoder`` graphs, whose initializers keep the
  module's parameter names;
* the UNet and the operator from the ``step`` graph, whose initializers are anonymous: a
  step of the same architecture with unique random weights is exported the same way, and each
  of its initializers is matched by value to the parameter it holds (as stored, transposed or
  reshaped); the shipped graph's initializer of that name is the trained value;
* the latent scaling factor from the decoder graph;
* the text context from ``context.npy`` (the demo prior is unconditional: only the empty
  prompt is known).

:func:`check_against_bundle` runs the rebuilt step against the bundle's own ``step`` graph;
a wrong mapping shows there as a large difference. Needs torch, diffusers and onnx.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import SiloError
from ..runtime import step_io
from . import demo_bundle

STEPS_FOR_CHECK = 3


class FixedContext(torch.nn.Module):
    """A text encoder that knows one prompt: the empty one, whose context the bundle stores."""

    def __init__(self, context: np.ndarray, empty_ids: torch.Tensor):
        super().__init__()
        self.register_buffer("context", torch.from_numpy(context[:1].copy()))
        self.empty_ids = empty_ids

    @property
    def device(self) -> torch.device:
        return self.context.device

    def forward(self, input_ids):
        if not all(torch.equal(row, self.empty_ids[0]) for row in input_ids):
            raise SiloError("the demo prior is unconditional: it knows only the empty prompt")
        return (self.context.expand(input_ids.shape[0], -1, -1),)


def _initializers(path: Path) -> dict[str, np.ndarray]:
    """``{name: float32 value}``, undoing the fp16 storage (``name__fp16`` + Cast)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    values = {}
    for init in model.graph.initializer:
        value = numpy_helper.to_array(init)
        name = init.name.removesuffix("__fp16")
        values[name] = value.astype(np.float32) if value.dtype == np.float16 else value
    return values


def _folded(path: Path) -> list[tuple[str, tuple[int, ...]]]:
    """The exporter's folded float constants of 2 or more dimensions (reshaped or transposed
    parameters), initializers named ``val_N``, in the graph's order: ``[(name, shape)]``.
    Their numbers change between exporter versions; their order does not."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    out = []
    for init in model.graph.initializer:
        name = init.name.removesuffix("__fp16")
        dims = tuple(init.dims)
        floating = init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        if name.startswith("val_") and floating and len(dims) >= 2:
            out.append((name, tuple(init.dims)))
    return out


def _scaling_factor(decoder_path: Path) -> float:
    """The latent scaling factor of the decoder graph: the constant ``z0`` is divided by (the
    demo prior's was measured on its training latents, not SD's 0.18215)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(decoder_path))
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if (node.op_type == "Div" and node.input[0] == step_io.Z0
                and node.input[1] in constants):
            return float(constants[node.input[1]])
    raise SiloError(f"{decoder_path.name} does not divide z0 by a scaling factor")


def _value_map(params: dict[str, torch.Tensor], exported: dict[str, np.ndarray]) -> dict:
    """``{parameter: (initializer name, how it is stored)}`` by exact value."""
    by_key = {}
    for name, value in exported.items():
        if value.dtype == np.float32 and value.size >= 2:
            by_key.setdefault(value.tobytes(), []).append((name, value.shape))
    found = {}
    for pname, param in params.items():
        p = param.detach().numpy()
        for how, candidate in (("as is", p), ("transposed", p.T if p.ndim == 2 else None)):
            if candidate is None:
                continue
            hits = by_key.get(np.ascontiguousarray(candidate).tobytes())
            if hits:
                found[pname] = (hits[0][0], how)
                break
    return found


def _recover(params: dict[str, torch.Tensor], write_fresh, shipped_path: Path) -> None:
    """Give ``params`` the values the shipped graph holds for them.

    ``write_fresh(path)`` exports the same graph from modules whose ``params`` have unique
    random values; each initializer found there is matched to its parameter by value, then
    read from ``shipped_path`` under the same name (folded reshapes: by their order).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fresh.onnx"
        write_fresh(path)
        exported, folded = _initializers(path), _folded(path)
    mapping = _value_map(params, exported)
    missing = sorted(set(params) - set(mapping))
    if missing:
        raise SiloError(f"cannot place {len(missing)} parameters, e.g. {missing[:3]}")
    shipped, shipped_folded = _initializers(shipped_path), _folded(shipped_path)
    if [shape for _, shape in folded] != [shape for _, shape in shipped_folded]:
        raise SiloError(f"{shipped_path.name} does not have this architecture's folded "
                        "constants")
    renamed = {mine: theirs for (mine, _), (theirs, _) in zip(folded, shipped_folded)}
    for pname, (iname, how) in mapping.items():
        param, iname = params[pname], renamed.get(iname, iname)
        if iname not in shipped and shipped_path.stem == step_io.VAE_ENCODER:
            # the demo's vae_encoder graph was exported when the module named its VAE
            # ``encoder`` (silo-rt before the latents module)
            iname = "encoder." + iname.removeprefix("vae.")
        if iname not in shipped:
            raise SiloError(f"{shipped_path.name} has no {iname} (for {pname})")
        value = shipped[iname].T if how == "transposed" else shipped[iname]
        if value.size != param.numel():
            raise SiloError(f"{shipped_path.name}'s {iname} does not fit {pname}")
        param.data.copy_(torch.from_numpy(np.array(value, np.float32)).reshape(param.shape))


def rebuild_demo(task: str = "sr4"):
    """``(prior, operator, operator config)`` of the embedded demo for ``task``, in PyTorch
    (frozen, float32, the bundle's fp16-rounded weights)."""
    from ..bundle_format import load_manifest
    from ..export.bundle import ExportOptions, example_inputs
    from ..export.onnx_writer import export_forward, export_step
    from ..latents import LatentDecoder, MeasurementEncoder
    from ..operators import OperatorConfig, build_operator
    from ..prior import build_random_prior
    from ..sampler import SamplingOptions
    from ..step import GuidedStep

    bundle = demo_bundle(task)
    manifest = load_manifest(bundle)
    config = OperatorConfig.from_json(json.dumps(manifest.operator))
    prior = build_random_prior("demo").freeze()
    operator = build_operator(config).eval().requires_grad_(False)
    unique = torch.Generator().manual_seed(0)
    for module in (prior.unet, prior.vae, operator):
        for param in module.parameters():
            param.data.copy_(torch.randn(param.shape, generator=unique))
    options = ExportOptions(SamplingOptions(task, steps=1), manifest.image_size)
    context = torch.from_numpy(np.load(bundle / manifest.context.file))
    example = example_inputs(prior, options, context)
    names = step_io.STEP_IO.input_names(cfg=False)
    step = GuidedStep(prior, operator)
    encoder = MeasurementEncoder(prior, task, manifest.image_size)
    decoder = LatentDecoder(prior)

    def forward_graph(module, graph):
        io = step_io.GRAPHS[graph]
        inputs = [example[n] for n in io.input_names()]
        return lambda path: export_forward(module, inputs, io.input_names(), io.output_names,
                                           path)

    _recover({**{f"unet.{n}": p for n, p in prior.unet.named_parameters()},
              **{f"operator.{n}": p for n, p in operator.named_parameters()}},
             lambda path: export_step(step, [example[n] for n in names], names,
                                      step_io.STEP_OUTPUTS, path),
             bundle / manifest.graphs[step_io.STEP].file)
    vae = dict(prior.vae.named_parameters())
    _recover({n: p for n, p in vae.items() if n.startswith(("encoder.", "quant_conv."))},
             forward_graph(encoder, step_io.VAE_ENCODER),
             bundle / manifest.graphs[step_io.VAE_ENCODER].file)
    _recover({n: p for n, p in vae.items() if n.startswith(("decoder.", "post_quant_conv."))},
             forward_graph(decoder, step_io.VAE_DECODER),
             bundle / manifest.graphs[step_io.VAE_DECODER].file)
    prior.vae.register_to_config(
        scaling_factor=_scaling_factor(bundle / manifest.graphs[step_io.VAE_DECODER].file))
    empty_ids = prior.tokenizer([""], padding="max_length", truncation=True,
                                max_length=prior.tokenizer.model_max_length,
                                return_tensors="pt").input_ids
    prior = dataclasses.replace(prior, name="silo-demo-prior (rebuilt from the bundles)",
                                text_encoder=FixedContext(np.load(bundle / "context.npy"),
                                                          empty_ids))
    return prior.freeze(), operator, config


def check_against_bundle(prior, operator, task: str = "sr4", seed: int = 0) -> float:
    """Relative difference of the rebuilt step's ``z_prev`` against the bundle's ``step``
    graph (ONNX Runtime) on random inputs, worst of :data:`STEPS_FOR_CHECK` draws."""
    from ..runtime import BundleRunner
    from ..step import GuidedStep

    runner = BundleRunner(demo_bundle(task), threads=2)
    step = GuidedStep(prior, operator)
    timesteps, coefficients = runner.schedule()
    rng = np.random.default_rng(seed)
    shape = tuple(runner.manifest.latent_shape)
    worst = 0.0
    for i in rng.choice(len(timesteps), STEPS_FOR_CHECK, replace=False):
        z, noise, w = (rng.standard_normal(shape).astype(np.float32) for _ in range(3))
        feeds = {**step_io.step_inputs(z, timesteps[i], coefficients[i], noise),
                 **step_io.step_constants(w, runner.context, 0.5, 0.02, None)}
        expected = runner.graphs.run(step_io.STEP, **feeds)[0]
        with torch.no_grad():
            got = step(*(torch.from_numpy(a) for a in (
                z, np.array([timesteps[i]], np.float32), coefficients[i], noise, w,
                np.array([0.5], np.float32), runner.context,
                np.array([0.02], np.float32))))[0].numpy()
        worst = max(worst, float(np.linalg.norm(got - expected) / np.linalg.norm(expected)))
    return worst
