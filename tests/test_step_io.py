"""The graph I/O contract (silo_rt.runtime.step_io): its input order is the exported modules'
``forward`` order, its shapes resolve from a manifest's, the feeds the backends build carry
its names and shapes, and the names it owns are written nowhere else in silo_rt. The exported
graphs themselves are checked against it in tests/test_export.py
(``test_exported_graphs_follow_the_io_contract``)."""

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import silo_rt
from silo_rt.errors import SiloError
from silo_rt.runtime import step_io

# B=2, C=4, latent 8x8, image 64, SR x4 measurement, CFG context (2B), CLIP-like context.
DIMS = step_io.dims(2, [2, 4, 8, 8], 64, [2, 3, 16, 16], [4, 77, 32])


def test_the_input_order_is_the_exported_modules_forward_order():
    from silo_rt.export.graphs import UNetOperatorGraph
    from silo_rt.latents import LatentDecoder, MeasurementEncoder
    from silo_rt.step import GuidedStep

    modules = {step_io.VAE_ENCODER: MeasurementEncoder, step_io.VAE_DECODER: LatentDecoder,
               step_io.UNET_H: UNetOperatorGraph, step_io.STEP: GuidedStep,
               step_io.STEP_FP16: GuidedStep}
    assert set(modules) == set(step_io.GRAPHS)
    for graph, module in modules.items():
        parameters = list(inspect.signature(module.forward).parameters)[1:]  # after self
        assert step_io.GRAPHS[graph].input_names(cfg=True) == tuple(parameters), graph


def test_every_graph_the_bundle_format_knows_has_a_contract():
    from silo_rt.bundle_format import OPTIONAL_GRAPHS, REQUIRED_GRAPHS

    assert set(step_io.GRAPHS) == set(REQUIRED_GRAPHS) | set(OPTIONAL_GRAPHS)


def test_cfg_scale_is_a_step_input_only_with_guidance():
    step = step_io.STEP_IO
    assert step.input_names()[-1] == "sigma_y" and step.input_names(cfg=True)[-1] == "cfg_scale"
    assert len(step.input_names(cfg=True)) == len(step.input_names()) + 1
    # the other graphs take no CFG-only input
    for graph in (step_io.VAE_ENCODER, step_io.VAE_DECODER, step_io.UNET_H):
        io = step_io.GRAPHS[graph]
        assert io.input_names() == io.input_names(cfg=True)


def test_shapes_resolve_from_the_dimensions():
    step = step_io.STEP_IO
    assert step.spec(step_io.Z_T).resolve(DIMS) == (2, 4, 8, 8)
    assert step.spec(step_io.CONTEXT).resolve(DIMS) == (4, 77, 32)
    assert step.spec(step_io.COEFFICIENTS).resolve(DIMS) == (5,)
    assert step.spec(step_io.LOSS).resolve(DIMS) == () and step.spec(step_io.LOSS).rank == 0
    encoder = step_io.GRAPHS[step_io.VAE_ENCODER]
    assert encoder.spec(step_io.MEASUREMENT).resolve(DIMS) == (2, 3, 16, 16)
    decoder = step_io.GRAPHS[step_io.VAE_DECODER]
    assert decoder.spec(step_io.IMAGE).resolve(DIMS) == (2, 3, 64, 64)
    with pytest.raises(SiloError, match="needs dimension Bc"):
        step.spec(step_io.CONTEXT).resolve({"L": 77, "D": 32})
    with pytest.raises(SiloError, match="no tensor 'image'"):
        step.spec(step_io.IMAGE)


def test_example_inputs_have_the_contracts_shapes_dtypes_and_ranges():
    for graph, io in step_io.GRAPHS.items():
        for cfg in (False, True):
            feeds = io.example_inputs(DIMS, cfg=cfg, seed=1)
            assert tuple(feeds) == io.input_names(cfg), graph
            for spec in io.input_specs(cfg):
                array = feeds[spec.name]
                assert array.shape == spec.resolve(DIMS) and array.dtype == np.float32
                low, high = spec.value_range
                assert low <= array.min() and array.max() <= high, (graph, spec.name)
    timestep = step_io.STEP_IO.example_inputs(DIMS, seed=2)[step_io.TIMESTEP]
    assert timestep[0] > 1.0  # drawn from the timestep's range, not [-1, 1]


def test_the_backends_feeds_are_the_step_contract():
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((2, 4, 8, 8))  # float64: the feeds convert
    context = rng.standard_normal((4, 77, 32))
    feeds = {**step_io.step_inputs(latent, 500, rng.standard_normal(5), latent),
             **step_io.step_constants(latent, context, 0.5, 0.02, 2.5)}
    step = step_io.STEP_IO
    assert set(feeds) == set(step.input_names(cfg=True))
    assert set(step_io.STEP_PER_STEP) | set(step_io.step_constants(
        latent, context, 0.5, 0.02, 2.5)) == set(feeds)
    for name, array in feeds.items():
        assert array.dtype == np.float32 and array.flags.c_contiguous
        assert array.shape == step.spec(name).resolve(DIMS), name
    assert step_io.CFG_SCALE not in step_io.step_constants(latent, context, 0.5, 0.02, None)
    assert step_io.STEP_OUTPUTS == (step_io.Z_PREV, step_io.LOSS)
    measurement = rng.standard_normal((2, 3, 16, 16))
    encoder = step_io.encoder_inputs(measurement, latent)
    assert tuple(encoder) == step_io.GRAPHS[step_io.VAE_ENCODER].input_names()
    assert encoder[step_io.MEASUREMENT] is measurement and encoder[step_io.NOISE] is latent
    assert tuple(step_io.decoder_inputs(latent)) == \
        step_io.GRAPHS[step_io.VAE_DECODER].input_names()


def test_manifest_dims_of_the_demo_bundle():
    from silo_rt.bundle_format import load_manifest
    from silo_rt.demo import demo_bundle

    manifest = load_manifest(demo_bundle("sr4"), verify=False)
    dims = step_io.manifest_dims(manifest)
    assert [dims[d] for d in ("B", "C", "h", "w")] == manifest.latent_shape
    assert (dims["Hy"], dims["H"]) == (manifest.image_size // 4, manifest.image_size)
    for name, shape in manifest.graphs[step_io.STEP].inputs.items():
        assert list(step_io.STEP_IO.spec(name).resolve(dims)) == shape, name


# Names that are graph tensors and nothing else in silo_rt: written out only in step_io.
OWNED = {step_io.Z_T, step_io.Z_PREV, step_io.W_HAT, step_io.TIMESTEP}


def _spelled_out(path: Path) -> list[str]:
    """Where ``path`` writes an owned name: as a string, or as a keyword of a ``.run(...)``
    call (a backend's graph run)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and node.value in OWNED:
            found.append(f"{path.name}:{node.lineno} {node.value!r}")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "run"):
            found += [f"{path.name}:{node.lineno} {k.arg}=" for k in node.keywords
                      if k.arg in OWNED]
    return found


def test_graph_tensor_names_are_written_only_in_step_io(tmp_path):
    root = Path(silo_rt.__file__).parent
    contract = root / "runtime" / "step_io.py"
    offenders = [hit for path in sorted(root.rglob("*.py")) if path != contract
                 for hit in _spelled_out(path)]
    assert offenders == []
    assert len(_spelled_out(contract)) == len(OWNED)  # the check sees the definitions
    planted = tmp_path / "planted.py"
    planted.write_text("graphs.run('step', z_t=z)\nbuffers['z_prev']\n")
    assert _spelled_out(planted) == ["planted.py:1 z_t=", "planted.py:2 'z_prev'"]
