"""TensorRT engines for a bundle: checks, build configuration, storage keys, selection, building.

Plans are stored inside the bundle under ``tensorrt/<key>/<graph>.plan`` (the top-level
``engines/`` folder of a checkout holds bundles, not plans); the key is
(TensorRT flavour and version, GPU compute capability, precision) and is recorded with each
plan's sha256 in ``manifest.json`` under ``"engines"``. A read-only bundle's plans go to the
user cache instead, and builders started together build once under a lock
(:mod:`.plan_store`); the GPU is this process's ``LOCAL_RANK``'s (:mod:`.cuda_device`).
A plan only runs where its key matches; one built for another GPU or TensorRT is never
loaded (a clear error says what is there and what is needed; ``silo-rt export --engines
trt`` or the first ``restore`` builds a matching one).

Precision is a property of the ONNX files, not of the builder: every network is created
strongly typed (TensorRT 10.8+, 11 and TensorRT-RTX alike), so an fp32 ONNX graph gives an
fp32 engine and the bundle's ``step_fp16`` graph (fp16 UNet/H_θ with explicit Casts, fp32
inputs, outputs and tail) gives the fp16 step. TF32 is cleared for every build. Before an
fp16 step is built, every layer TensorRT made from the FP32 tail (:func:`fp32_tail`) must
output float32.

Works with ``tensorrt`` (NVIDIA's wheels) and, where only that is installed,
``tensorrt_rtx``. The version-dependent API lookups are small functions of their own, tested
with stand-in objects. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..bundle_format import Manifest, bundle_path, sha256_file, write_manifest
from ..errors import SiloError
from . import cuda_device
from .plan_store import PlanStore

TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")
PRECISIONS = ("fp32", "fp16")
VAE_GRAPHS = ("vae_encoder", "vae_decoder")
ENGINE_GRAPHS = ("vae_encoder", "vae_decoder", "step")
# The bundle graph each engine is built from, per precision: fp16 only changes the step.
STEP_SOURCES = {"fp32": "step", "fp16": "step_fp16"}
# Ops whose inputs end the FP32 "tail" of the step graph: everything after the last of these
# (the loss norm, the clamp, the η-scaled update and the posterior mean) must stay FP32 in
# the fp16 step graph.
HEAVY_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}
# TensorRT data types (by enum name) and ONNX element types narrower than float32.
REDUCED_TRT_FLOATS = frozenset({"HALF", "BF16", "FP8", "FP4", "E8M0"})
REDUCED_ONNX_FLOATS = frozenset({10, 16, 17, 18, 19, 20, 23})  # FLOAT16, BFLOAT16, FLOAT8*, 4
# TensorRT-RTX's ComputeCapability enum and support matrix (1.7): Turing, Ampere, Ada,
# Blackwell consumer/workstation. No Hopper (9.0) and no data-centre Blackwell (10.x).
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.x")
_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


def import_tensorrt(prefer: str = "tensorrt"):
    """``(module, flavour)``: ``prefer`` (``tensorrt`` or ``tensorrt_rtx``) if installed, else
    the other one.

    Engines for a GPU prefer NVIDIA's full ``tensorrt`` (it supports every GPU); the
    GPU-less check prefers ``tensorrt_rtx``, whose ahead-of-time builder needs no GPU
    (full TensorRT's ``Builder`` cannot even be created without one).
    """
    import importlib

    for flavour in sorted(TENSORRT_MODULES, key=lambda name: name != prefer):
        try:
            return importlib.import_module(flavour), flavour
        except ImportError:
            continue
    raise SiloError("TensorRT is not installed: install NVIDIA's `tensorrt` wheel on a GPU "
                    "machine (to only check graphs, no GPU needed: "
                    "pip install 'silo-rt[trt-check]')")


_LOGGERS: dict[str, object] = {}


def trt_logger(trt):
    """The one ``trt.Logger`` of this process for ``trt`` (TensorRT registers the first
    logger it sees and warns when a later builder or runtime brings another)."""
    name = getattr(trt, "__name__", str(id(trt)))
    if name not in _LOGGERS:
        _LOGGERS[name] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[name]


# ---------------------------------------------------------------- ONNX parser rules (static)


@dataclass(frozen=True)
class ParserRule:
    """One documented restriction of TensorRT's ONNX parser, checked on the ONNX file.

    Attributes:
        op: ONNX op type it applies to (``Reduce*`` = every Reduce op).
        rule: the restriction, as the documentation states it.
        flavors: the TensorRT flavours whose parser has it.
        violated: ``violated(node, constants) -> bool``; ``constants`` are the names of
            initializers and Constant-node outputs.
    """

    op: str
    rule: str
    flavors: tuple[str, ...]
    violated: Callable = field(repr=False, compare=False)
    source: str = "onnx/onnx-tensorrt docs/operators.md (TensorRT 10.15 support matrix)"

    def applies(self, op_type: str, flavor: str | None) -> bool:
        op_match = (op_type.startswith(self.op[:-1]) if self.op.endswith("*")
                    else op_type == self.op)
        return op_match and (flavor is None or flavor in self.flavors)


def _attribute(node, name, default=0):
    for attribute in node.attribute:
        if attribute.name == name:
            return attribute.i
    return default


def _axes_not_constant(node, constants) -> bool:
    return len(node.input) > 1 and node.input[1] != "" and node.input[1] not in constants


BOTH = ("tensorrt", "tensorrt_rtx")
# Where full TensorRT's parser and TensorRT-RTX's differ, the rule lists one flavour. No
# documented difference was found (onnx-tensorrt's docs/operators.md describes the parser
# both ship, and TensorRT-RTX 1.7's parser refused exactly these cases when measured), so
# every rule below is one both parsers share and that silo-rt's graphs could trip.
KNOWN_PARSER_DIFFERENCES = (
    ParserRule("Resize", "Antialiasing is not supported.", BOTH,
               lambda node, constants: _attribute(node, "antialias") != 0),
    ParserRule("LayerNormalization", "Only the first output `Y` is supported.", BOTH,
               lambda node, constants: sum(1 for o in node.output if o) > 1),
    ParserRule("Reduce*", "`axes` must be an initializer.", BOTH, _axes_not_constant),
    ParserRule("MaxPool", "`Indices` output tensor unsupported.", BOTH,
               lambda node, constants: len(node.output) > 1 and node.output[1] != ""),
)


def parser_rule_violations(model, flavor: str | None = None) -> list[str]:
    """One line per node of ``model`` that breaks a rule of :data:`KNOWN_PARSER_DIFFERENCES`.

    Pure Python (no TensorRT): ``flavor`` limits the rules to one parser (None = all).
    """
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    lines = []
    for index, node in enumerate(model.graph.node):
        for rule in KNOWN_PARSER_DIFFERENCES:
            if rule.applies(node.op_type, flavor) and rule.violated(node, constants):
                lines.append(f"node {index} {node.name or '(unnamed)'} ({node.op_type}): "
                             f"{rule.rule} [{rule.source}]")
    return lines


# ------------------------------------------------------------------------ FP32 tail (precision)


def fp32_tail(model) -> set[str]:
    """Names of the step graph's nodes downstream of its last heavy op (see HEAVY_OPS).

    Walks back from the graph outputs through producers, stopping at convolutions and
    matrix products: what it collects is the cheap, precision-sensitive end of the step,
    whose outputs must all be float32 in the fp16 step graph.
    """
    producer = {out: node for node in model.graph.node for out in node.output}
    tail, frontier = set(), [o.name for o in model.graph.output]
    while frontier:
        node = producer.get(frontier.pop())
        if node is None or node.name in tail or node.op_type in HEAVY_OPS:
            continue
        tail.add(node.name)
        frontier.extend(node.input)
    return tail


def onnx_tail_violations(model, tail_nodes) -> list[str]:
    """Tail nodes whose ONNX output type (after shape inference) is narrower than float32."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    lines = []
    for node in model.graph.node:
        if node.name not in tail_nodes:
            continue
        for out in node.output:
            elem = types.get(out)
            if elem in REDUCED_ONNX_FLOATS:
                lines.append(f"node {node.name} ({node.op_type}) outputs "
                             f"{onnx.TensorProto.DataType.Name(elem).lower()} in the ONNX "
                             "graph; the step's tail must be float32")
    return lines


def layer_onnx_node(layer, nodes) -> str | None:
    """The ONNX node a TensorRT layer was made from, or None for parser helper layers.

    Layer metadata ``[ONNX Layer: <node>]`` where the parser records it; otherwise the name:
    the parser names a node's first layer ``<node>`` and its extra layers ``<node>_<n>``.
    """
    found = _ONNX_LAYER.search(getattr(layer, "metadata", "") or "")
    if found:
        return found.group(1)
    name = layer.name
    if name in nodes:
        return name
    base = name.rsplit("_", 1)[0]
    return base if base in nodes and name[len(base) + 1:].isdigit() else None


def _dtype_name(dtype) -> str:
    return getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])


def tail_layer_violations(network, tail_nodes) -> list[str]:
    """Layers of the parsed network that belong to the FP32 tail but output a reduced float.

    A layer belongs to the tail when it was made from a tail node (:func:`layer_onnx_node`),
    or it is a parser helper (``ONNXTRT_*``, no ONNX node) fed by a tail layer: the parser
    wraps a low-precision ``ReduceL2`` in such casts. Layers are in topological order.
    """
    tail_nodes = set(tail_nodes)
    tail_tensors: dict[str, str] = {}  # tensor name -> the tail node that produced it
    lines = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        node = layer_onnx_node(layer, tail_nodes)
        node = node if node in tail_nodes else None
        if node is None and layer.name.startswith("ONNXTRT_"):
            inputs = (layer.get_input(j) for j in range(layer.num_inputs))
            node = next((tail_tensors[t.name] for t in inputs
                         if t is not None and t.name in tail_tensors), None)
        if node is None:
            continue
        for j in range(layer.num_outputs):
            tensor = layer.get_output(j)
            tail_tensors[tensor.name] = node
            dtype = _dtype_name(tensor.dtype)
            if dtype in REDUCED_TRT_FLOATS:
                lines.append(f"node {node}: TensorRT layer {layer.name} outputs "
                             f"{dtype.lower()}; the step's tail must be float32")
    return lines


# ------------------------------------------------- TensorRT 10 / 11 / RTX API, one code path


def rtx_supports(compute_capability: str) -> bool:
    """Whether TensorRT-RTX runs on ``compute_capability`` ("8.6"); see the table above."""
    major = compute_capability.split(".")[0]
    return any(cc == compute_capability or cc == f"{major}.x" for cc in RTX_COMPUTE_CAPABILITIES)


def check_flavor_supports(flavor: str, version: str, compute_capability: str) -> None:
    """Refuse TensorRT-RTX on a GPU it does not support (its plans would never load there)."""
    if flavor == "tensorrt_rtx" and not rtx_supports(compute_capability):
        raise SiloError(f"TensorRT-RTX {version} does not support compute capability "
                        f"{compute_capability} (it supports {', '.join(RTX_COMPUTE_CAPABILITIES)});"
                        " install NVIDIA's `tensorrt` wheel for this GPU")


def strongly_typed_network(trt, builder):
    """A network whose tensor types come from the ONNX file (the only mode TensorRT 11 has)."""
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))


def configure_builder(trt, config, flavor: str, optimization_level: int,
                      workspace_gib: float | None = None) -> None:
    """Flags every build gets: TF32 cleared (fp32 means fp32), user allocation on RTX.

    ``BuilderFlag.TF32`` is on by default where it exists; TensorRT-RTX needs
    ``REQUIRE_USER_ALLOCATION`` for its engines to be captured into CUDA graphs.
    """
    config.builder_optimization_level = optimization_level
    flags = trt.BuilderFlag
    if hasattr(flags, "TF32"):
        config.clear_flag(flags.TF32)
    if flavor == "tensorrt_rtx" and hasattr(flags, "REQUIRE_USER_ALLOCATION"):
        config.set_flag(flags.REQUIRE_USER_ALLOCATION)
    if workspace_gib:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * 2**30))


def uses_timing_cache(flavor: str) -> bool:
    """TensorRT-RTX's timing cache is a no-op that makes the build query for a GPU."""
    return flavor == "tensorrt"


def engine_device_memory(engine) -> int:
    """Activation memory an engine needs (``device_memory_size`` is gone in TensorRT 11)."""
    size = getattr(engine, "device_memory_size_v2", None)
    return int(size if size is not None else engine.device_memory_size)


def set_context_memory(context, ptr: int, nbytes: int) -> None:
    """Give a USER_MANAGED context its activation block (TensorRT 10.1+ takes the size)."""
    if hasattr(context, "set_device_memory"):
        context.set_device_memory(ptr, nbytes)
    else:
        context.device_memory = ptr


def explain_invalid_plan(trt, runtime, data: bytes) -> str:
    """Why ``runtime`` cannot load the plan ``data``, as far as this TensorRT can tell."""
    validity = getattr(runtime, "get_engine_validity", None)
    if validity is None:
        return ("this TensorRT cannot say why; it was probably built by another TensorRT "
                "version or for another GPU")
    try:
        state, diagnostics = validity(data)
    except Exception as exc:  # a malformed plan can make the query itself fail
        return f"its validity check failed: {str(exc).splitlines()[0] if str(exc) else exc}"
    members = getattr(getattr(trt, "EngineInvalidityDiagnostics", None), "__members__", {})
    names = [name.lower().replace("_", " ") for name, bit in members.items()
             if int(diagnostics) & int(bit)]  # the diagnostics are a bit mask
    return (f"TensorRT says {_dtype_name(state).lower()}"
            + (f": {', '.join(names)}" if names else ""))


def format_parser_error(error) -> str:
    """One line from a TensorRT ``ParserError``: node name, op and description."""
    try:
        node, op, desc = error.node_name(), error.node_operator(), error.desc()
    except AttributeError:
        return str(error).splitlines()[0]
    where = f"node {error.node()} {node or '(unnamed)'} ({op})" if op else "the model"
    return f"{where}: {desc}"


# ----------------------------------------------------------------------- check (no GPU needed)


@dataclass
class GraphVerdict:
    """What TensorRT makes of one ONNX graph.

    ``ok`` is None (stage ``skipped``) when the static checks passed but TensorRT is not
    installed here; ``stage`` is where it stopped: ``parse`` (including the static parser
    rules), ``precision`` (the FP32 tail), ``build``, ``skipped`` or ``ok``.
    """

    graph: str
    ok: bool | None
    stage: str
    message: str
    seconds: float
    flavor: str | None = None
    version: str | None = None

    def line(self) -> str:
        state = {True: "ok", False: f"refused ({self.stage})", None: "skipped"}[self.ok]
        where = f"{self.flavor} {self.version}" if self.flavor else "static checks only"
        return f"{self.graph}: {state}: {self.message} [{where}, {self.seconds:.1f} s]"


def _parse(trt, logger, onnx_path: Path):
    """``(builder, network, parser, errors)``; parser and network must outlive the network."""
    builder = trt.Builder(logger)
    network = strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    errors = [] if ok else [format_parser_error(parser.get_error(i))
                            for i in range(parser.num_errors)] or ["unknown parser error"]
    return builder, network, parser, errors


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _first(lines: list[str]) -> str:
    return lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")


def check_onnx_with_tensorrt(onnx_path: Path, build: bool = True, fp32_nodes=frozenset(),
                             static: bool = True) -> GraphVerdict:
    """Parse ``onnx_path`` with the installed TensorRT and build it ahead of time (no GPU).

    Static checks come first (:func:`parser_rule_violations`, and with ``fp32_nodes`` the ONNX
    types of the tail), so the verdict says something where TensorRT is not installed
    (``static=False`` leaves them to TensorRT's own parser). The
    build uses optimisation level 0, no timing cache, and TensorRT-RTX's default CPU-only
    ahead-of-time target.
    """
    import onnx

    onnx_path = Path(onnx_path)
    start = time.perf_counter()

    def verdict(ok, stage, message, flavor=None, version=None):
        return GraphVerdict(onnx_path.stem, ok, stage, message, time.perf_counter() - start,
                            flavor, version)

    model = onnx.load(str(onnx_path), load_external_data=False)
    if static and (rules := parser_rule_violations(model)):
        return verdict(False, "parse", _first(rules))
    if static and fp32_nodes and (typed := onnx_tail_violations(model, fp32_nodes)):
        return verdict(False, "precision", _first(typed))
    try:
        trt, flavor = import_tensorrt(prefer="tensorrt_rtx")
    except SiloError as exc:
        return verdict(None, "skipped", f"static checks passed; {exc}")
    version = trt.__version__
    with _errors_only(trt):  # the verdict line says what matters
        return _check_with(trt, flavor, version, onnx_path, build, fp32_nodes, verdict)


@contextmanager
def _errors_only(trt):
    """Lower the process's TensorRT logger to errors for the enclosed work."""
    logger = trt_logger(trt)
    saved = getattr(logger, "min_severity", None)
    if saved is not None:
        logger.min_severity = trt.Logger.ERROR
    try:
        yield
    finally:
        if saved is not None:
            logger.min_severity = saved


def _check_with(trt, flavor, version, onnx_path, build, fp32_nodes, verdict) -> GraphVerdict:
    try:
        builder, network, parser, errors = _parse(trt, trt_logger(trt), onnx_path)
    except (RuntimeError, TypeError) as exc:  # full TensorRT without a GPU: no Builder
        return verdict(None, "skipped", f"static checks passed; {flavor} {version} cannot "
                       f"create a builder here ({_first_line(exc)}): install TensorRT-RTX "
                       "(pip install 'silo-rt[trt-check]') to check graphs without a GPU",
                       flavor, version)
    if errors:
        return verdict(False, "parse", _first(errors), flavor, version)
    if fp32_nodes and (layers := tail_layer_violations(network, fp32_nodes)):
        return verdict(False, "precision", _first(layers), flavor, version)
    if build:
        config = builder.create_builder_config()
        configure_builder(trt, config, flavor, optimization_level=0)
        if builder.build_serialized_network(network, config) is None:
            return verdict(False, "build", "TensorRT failed to build an engine (run with "
                           "TensorRT's verbose log for the reason)", flavor, version)
    done = "parsed and built" if build else "parsed"
    return verdict(True, "ok", f"{done}, {network.num_layers} layers", flavor, version)


def check_bundle_with_tensorrt(bundle: Path, graph_files: dict[str, str], build: bool = True,
                               log=lambda line: None) -> list[GraphVerdict]:
    """:func:`check_onnx_with_tensorrt` for every graph of the bundle (``graph_files``:
    :attr:`Manifest.graph_files <silo_rt.bundle_format.Manifest.graph_files>`), one line each
    to ``log``.

    ``step_fp16`` is also checked for an all-float32 tail (:func:`fp32_tail`).
    """
    import onnx

    verdicts = []
    for name, file in graph_files.items():
        path = Path(bundle) / file
        tail = frozenset()
        if name == STEP_SOURCES["fp16"]:
            tail = frozenset(fp32_tail(onnx.load(str(path), load_external_data=False)))
        verdict = check_onnx_with_tensorrt(path, build, tail)
        verdict.graph = name
        log(verdict.line())
        verdicts.append(verdict)
    return verdicts


# --------------------------------------------------------------- keys, selection, building


@dataclass(frozen=True)
class EngineKey:
    """Where a plan may run: TensorRT flavour + version, GPU compute capability, precision."""

    flavor: str
    version: str
    compute_capability: str  # "9.0" for H100/H200
    precision: str

    @property
    def folder(self) -> str:
        return (f"{self.flavor}-{self.version}-sm{self.compute_capability.replace('.', '')}-"
                f"{self.precision}")

    def describe(self) -> str:
        return (f"{self.flavor} {self.version}, compute capability {self.compute_capability}, "
                f"{self.precision}")


@dataclass(frozen=True)
class EngineBuildConfig:
    """How engines are built.

    Attributes:
        precision: ``fp32`` or ``fp16``: which step graph is built (``step`` or
            ``step_fp16``); the VAE graphs are exported in fp32 and built as they are.
        fp32_vae: must stay True: precision comes from the ONNX files and bundles hold fp32
            VAE graphs only.
        optimization_level: TensorRT builder optimisation level, 0-5.
        workspace_gib: builder workspace limit (None = TensorRT's default).
    """

    precision: str = "fp16"
    fp32_vae: bool = True
    optimization_level: int = 3
    workspace_gib: float | None = None

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise SiloError(f"precision must be one of {', '.join(PRECISIONS)}, "
                            f"got {self.precision!r}")
        if not self.fp32_vae:
            raise SiloError("fp16 VAE engines need fp16 VAE graphs; bundles hold fp32 VAE "
                            "graphs (engine precision comes from the ONNX files)")
        if not 0 <= self.optimization_level <= 5:
            raise SiloError(f"builder optimisation level must be 0-5, got "
                            f"{self.optimization_level}")

    def graph_precision(self, graph: str) -> str:
        return "fp32" if graph in VAE_GRAPHS else self.precision


def engine_sources(graph_names, precision: str) -> dict[str, str]:
    """``{engine graph: bundle graph it is built from}`` for ``precision``, given the names
    of the bundle's graphs.

    fp16 needs the strongly typed ``step_fp16`` graph of an fp16 export.
    """
    source = STEP_SOURCES[precision]
    if source not in graph_names:
        raise SiloError(f"this bundle has no {source} graph, so it cannot give {precision} "
                        "TensorRT engines; re-export it with `--precision fp16` (or use "
                        "--precision fp32)")
    return {"vae_encoder": "vae_encoder", "vae_decoder": "vae_decoder", "step": source}


def default_precision(graph_names) -> str:
    """The step precision TensorRT runs a bundle in when none is asked for: fp16 where the
    bundle has its ``step_fp16`` graph (an fp16 export), else fp32 (the default export and
    the demo bundles)."""
    return "fp16" if STEP_SOURCES["fp16"] in graph_names else "fp32"


def current_key(precision: str, device: int | None = None) -> EngineKey:
    """The key of this process's GPU (``device``, default :func:`~.cuda_device.device_index`
    of ``LOCAL_RANK``) and TensorRT installation.

    Refuses TensorRT-RTX on compute capabilities it does not support, and TensorRT built for
    another CUDA major than cuda-python's.
    """
    trt, flavor = import_tensorrt()
    rt = cuda_device.cudart()
    cuda_device.check_cuda_pairing(cuda_device.tensorrt_cuda_major(),
                                   cuda_device.bindings_major())
    if device is None:
        device = cuda_device.this_device(rt)
    major, minor = cuda_device.compute_capability(device, rt)
    key = EngineKey(flavor, trt.__version__, f"{major}.{minor}", precision)
    check_flavor_supports(flavor, key.version, key.compute_capability)
    return key


def tensorrt_unavailable_reason() -> str | None:
    """None where TensorRT and a CUDA GPU are usable here, else one line saying why not."""
    try:
        current_key("fp32")
    except SiloError as exc:
        return str(exc)
    return None


def select_engines(engines: dict, key: EngineKey) -> dict | None:
    """The engine entry for ``key`` in a manifest's ``engines``, or None when none was built
    for it."""
    return engines.get(key.folder)


def check_plan_entry(entry: dict, key: EngineKey) -> None:
    """Refuse an engine entry recorded for another key (a plan built elsewhere)."""
    recorded = EngineKey(**entry["key"])
    if recorded != key:
        raise SiloError(f"TensorRT plans in this bundle were built for {recorded.describe()}; "
                        f"this machine is {key.describe()}. Build matching ones with "
                        "`silo-rt export --engines trt` (or let `restore` build them)")


def verify_engine_files(bundle: Path, entry: dict) -> dict[str, Path]:
    """Check each plan's sha256; returns ``{graph: path}``."""
    paths = {}
    for graph, info in entry["plans"].items():
        path = bundle_path(Path(bundle), info["file"], f"engines plan {graph}")
        if not path.is_file():
            raise SiloError(f"TensorRT plan missing: {path}")
        if sha256_file(path) != info["sha256"]:
            raise SiloError(f"TensorRT plan {path} does not match its sha256 in the manifest")
        paths[graph] = path
    return paths


def build_plan(onnx_path: Path, plan_path: Path, config: EngineBuildConfig,
               timing_cache: Path | None, fp32_nodes=frozenset()) -> float:
    """Build one serialized engine from an ONNX file; returns the build time in seconds.

    The network is strongly typed (its precision is the ONNX file's); with ``fp32_nodes``
    the layers made from them must output float32, else nothing is built.
    """
    trt, flavor = import_tensorrt()
    builder, network, parser, errors = _parse(trt, trt_logger(trt), onnx_path)
    if errors:
        raise SiloError(f"TensorRT cannot parse {onnx_path.name}: {_first(errors)}")
    if fp32_nodes and (layers := tail_layer_violations(network, fp32_nodes)):
        raise SiloError(f"{onnx_path.name} would not keep its FP32 tail: {_first(layers)}")
    builder_config = builder.create_builder_config()
    configure_builder(trt, builder_config, flavor, config.optimization_level,
                      config.workspace_gib)
    cache = None
    if timing_cache is not None and uses_timing_cache(flavor):
        cache = attach_timing_cache(builder_config, timing_cache)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise SiloError(f"TensorRT failed to build an engine for {onnx_path.name}")
    seconds = time.perf_counter() - start
    plan_path.write_bytes(bytes(plan))
    if cache is not None:
        timing_cache.write_bytes(bytes(cache.serialize()))
    return seconds


def timing_cache_name(key: EngineKey) -> str:
    """A timing cache per TensorRT version *and* GPU: timings of another GPU are not reused."""
    return (f"timing-{key.flavor}-{key.version}-"
            f"sm{key.compute_capability.replace('.', '')}.cache")


def attach_timing_cache(builder_config, path: Path):
    """Give the build the timing cache stored at ``path`` (a fresh one when it is missing or
    TensorRT refuses it as another device's); returns the cache object to save after."""
    cache_bytes = path.read_bytes() if path.is_file() else b""
    cache = builder_config.create_timing_cache(cache_bytes)
    if not builder_config.set_timing_cache(cache, ignore_mismatch=False) and cache_bytes:
        cache = builder_config.create_timing_cache(b"")
        if not builder_config.set_timing_cache(cache, ignore_mismatch=False):
            raise SiloError("TensorRT refused an empty timing cache")
    return cache


def build_engines(bundle: Path, manifest: Manifest, config: EngineBuildConfig,
                  log=lambda line: None, store: PlanStore | None = None,
                  key: EngineKey | None = None) -> tuple[Manifest, dict]:
    """The bundle's engines for this machine (``key``), built unless another process built
    them while this one waited for the build lock, and recorded in the manifest (or, for a
    read-only bundle, beside the plans in the user cache: :mod:`.plan_store`).

    Returns the (re-read or updated, rewritten atomically) manifest and the engine entry.
    """
    bundle = Path(bundle)
    store = store or PlanStore.for_bundle(bundle)
    key = key or current_key(config.precision)
    engine_sources(manifest.graphs, config.precision)
    if not store.in_bundle:
        log(store.describe())
    with store.building(key.folder):
        manifest = store.reload(manifest)
        entry = store.entry(manifest, key.folder)
        if entry is not None:
            log(f"TensorRT engines for {key.describe()} were built by another process")
            return manifest, entry
        return _build_engines(bundle, manifest, config, log, store, key)


def _build_engines(bundle: Path, manifest: Manifest, config: EngineBuildConfig, log,
                   store: PlanStore, key: EngineKey) -> tuple[Manifest, dict]:
    import onnx

    sources = engine_sources(manifest.graphs, config.precision)
    folder = store.plan_folder(key.folder)
    timing_cache = store.timing_cache(timing_cache_name(key))
    plans = {}
    for graph, source in sources.items():
        onnx_path = Path(bundle) / manifest.graphs[source].file
        tail = frozenset()
        if source == STEP_SOURCES["fp16"]:
            tail = frozenset(fp32_tail(onnx.load(str(onnx_path), load_external_data=False)))
        precision = config.graph_precision(graph)
        log(f"building {graph} from {source} ({precision}) with {key.flavor} {key.version}…")
        plan_path = folder / f"{graph}.plan"
        seconds = build_plan(onnx_path, plan_path, config, timing_cache, tail)
        log(f"  {graph}: {seconds:.1f} s")
        plans[graph] = {"file": str(plan_path.relative_to(store.root)), "source": source,
                        "precision": precision, "sha256": sha256_file(plan_path),
                        "build_s": seconds}
    entry = {"key": asdict(key), "config": asdict(config), "plans": plans,
             "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if not store.in_bundle:
        store.record(key.folder, entry)
        return manifest, entry
    passes = {**manifest.export_passes, "tensorrt engines": f"applied: {key.describe()}"}
    manifest = dataclasses.replace(manifest, engines={**manifest.engines, key.folder: entry},
                                   export_passes=passes)
    write_manifest(bundle, manifest)
    return manifest, entry


