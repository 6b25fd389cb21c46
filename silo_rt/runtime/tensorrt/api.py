"""The installed TensorRT and the calls that differ between its versions, one code path.

Works with ``tensorrt`` (NVIDIA's wheels, 10.8+ and 11) and, where only that is installed,
``tensorrt_rtx``. Each version-dependent lookup is a small function of its own, tested with
stand-in objects (``tests/fake_gpu.py``). Nothing here imports torch, and TensorRT only when
a function asks for it.
"""

from __future__ import annotations

import importlib
from contextlib import contextmanager
from pathlib import Path

from ...errors import SiloError, first_line

TENSORRT_MODULES = ("tensorrt", "tensorrt_rtx")
# TensorRT-RTX's ComputeCapability enum and support matrix (1.7): Turing, Ampere, Ada,
# Blackwell consumer/workstation. No Hopper (9.0) and no data-centre Blackwell (10.x).
RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.x")

_LOGGERS: dict[str, object] = {}


def first_of(lines: list[str]) -> str:
    """``lines[0]``, saying how many more there are (``lines`` is not empty)."""
    return lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "")


def import_tensorrt(prefer: str = "tensorrt"):
    """``(module, flavour)``: ``prefer`` (``tensorrt`` or ``tensorrt_rtx``) if installed, else
    the other one.

    Engines for a GPU prefer NVIDIA's full ``tensorrt`` (it supports every GPU); the
    GPU-less check prefers ``tensorrt_rtx``, whose ahead-of-time builder needs no GPU
    (full TensorRT's ``Builder`` cannot even be created without one).
    """
    for flavour in sorted(TENSORRT_MODULES, key=lambda name: name != prefer):
        try:
            return importlib.import_module(flavour), flavour
        except ImportError:
            continue
    raise SiloError("TensorRT is not installed: install NVIDIA's `tensorrt` wheel on a GPU "
                    "machine (to only check graphs, no GPU needed: "
                    "pip install 'silo-rt[trt-check]')")


def trt_logger(trt):
    """The one ``trt.Logger`` of this process for ``trt`` (TensorRT registers the first
    logger it sees and warns when a later builder or runtime brings another)."""
    name = getattr(trt, "__name__", str(id(trt)))
    if name not in _LOGGERS:
        _LOGGERS[name] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[name]


@contextmanager
def errors_only(trt):
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


def parse_onnx(trt, onnx_path: Path):
    """``(builder, network, parser, errors)`` for ``onnx_path``, strongly typed; ``errors`` is
    one line per parser error. The parser and builder must outlive the network."""
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    network = strongly_typed_network(trt, builder)
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))
    errors = [] if ok else [format_parser_error(parser.get_error(i))
                            for i in range(parser.num_errors)] or ["unknown parser error"]
    return builder, network, parser, errors


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


def dtype_name(dtype) -> str:
    """``HALF`` for ``trt.DataType.HALF`` (and for a stand-in's plain string)."""
    return getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])


def explain_invalid_plan(trt, runtime, data: bytes) -> str:
    """Why ``runtime`` cannot load the plan ``data``, as far as this TensorRT can tell."""
    validity = getattr(runtime, "get_engine_validity", None)
    if validity is None:
        return ("this TensorRT cannot say why; it was probably built by another TensorRT "
                "version or for another GPU")
    try:
        state, diagnostics = validity(data)
    except Exception as exc:  # a malformed plan can make the query itself fail
        return f"its validity check failed: {first_line(exc)}"
    members = getattr(getattr(trt, "EngineInvalidityDiagnostics", None), "__members__", {})
    names = [name.lower().replace("_", " ") for name, bit in members.items()
             if int(diagnostics) & int(bit)]  # the diagnostics are a bit mask
    return (f"TensorRT says {dtype_name(state).lower()}"
            + (f": {', '.join(names)}" if names else ""))


def format_parser_error(error) -> str:
    """One line from a TensorRT ``ParserError``: node name, op and description."""
    try:
        node, op, desc = error.node_name(), error.node_operator(), error.desc()
    except AttributeError:
        return first_line(error)
    where = f"node {error.node()} {node or '(unnamed)'} ({op})" if op else "the model"
    return f"{where}: {desc}"
