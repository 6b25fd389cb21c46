"""TensorRT engines for a bundle: build configuration, storage keys, selection, building.

Engines are stored inside the bundle under ``engines/<key>/<graph>.plan``; the key is
(TensorRT flavour and version, GPU compute capability, precision) and is recorded with each
plan's sha256 in ``manifest.json`` under ``"engines"``. A plan only runs where its key
matches; one built for another GPU or TensorRT is never loaded (a clear error says what is
there and what is needed; ``silo-rt export --engines trt`` or the first ``restore`` builds a
matching one).

Works with ``tensorrt`` (NVIDIA's wheels) and, where only that is installed,
``tensorrt_rtx``. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import SiloError
from .manifest import MANIFEST, sha256_file

PRECISIONS = ("fp32", "fp16")
VAE_GRAPHS = ("vae_encoder", "vae_decoder")
ENGINE_GRAPHS = ("vae_encoder", "vae_decoder", "step")
# Ops whose inputs end the FP32 "tail" of the step graph: everything after the last of these
# (the loss norm, the clamp, the η-scaled update and the posterior mean) stays FP32 in FP16
# engines.
HEAVY_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def import_tensorrt():
    """``(module, flavour)``: ``tensorrt`` if installed, else ``tensorrt_rtx``."""
    try:
        import tensorrt as trt

        return trt, "tensorrt"
    except ImportError:
        pass
    try:
        import tensorrt_rtx as trt

        return trt, "tensorrt_rtx"
    except ImportError:
        raise SiloError("TensorRT is not installed: install NVIDIA's `tensorrt` wheel "
                        "(or `tensorrt-rtx`) on a machine with an NVIDIA GPU") from None


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
        precision: ``fp32`` or ``fp16`` (FP16 keeps the step's loss, clamp and update FP32).
        fp32_vae: keep the VAE graphs FP32 in an FP16 build (SD-1.5's VAE can overflow).
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
        if not 0 <= self.optimization_level <= 5:
            raise SiloError(f"builder optimisation level must be 0-5, got "
                            f"{self.optimization_level}")

    def graph_precision(self, graph: str) -> str:
        return "fp32" if (graph in VAE_GRAPHS and self.fp32_vae) else self.precision


def fp32_tail(model) -> set[str]:
    """Names of the step graph's nodes downstream of its last heavy op (see HEAVY_OPS).

    Walks back from the graph outputs through producers, stopping at convolutions and
    matrix products: what it collects is the cheap, precision-sensitive end of the step.
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


def current_key(precision: str) -> EngineKey:
    """The key of this machine (GPU 0) and TensorRT installation."""
    trt, flavor = import_tensorrt()
    major, minor = _compute_capability()
    return EngineKey(flavor, trt.__version__, f"{major}.{minor}", precision)


def _compute_capability() -> tuple[int, int]:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError:
            raise SiloError("cuda-python is not installed (pip install cuda-python)") from None
    err, props = cudart.cudaGetDeviceProperties(0)
    if int(err) != 0:
        raise SiloError(f"no usable CUDA device ({err})")
    return props.major, props.minor


def select_engines(manifest: dict, key: EngineKey) -> dict | None:
    """The manifest's engine entry for ``key``, or None when none was built for it."""
    return manifest.get("engines", {}).get(key.folder)


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
        path = Path(bundle) / info["file"]
        if not path.is_file():
            raise SiloError(f"TensorRT plan missing: {path}")
        if sha256_file(path) != info["sha256"]:
            raise SiloError(f"TensorRT plan {path} does not match its sha256 in the manifest")
        paths[graph] = path
    return paths


def build_plan(onnx_path: Path, plan_path: Path, precision: str, config: EngineBuildConfig,
               timing_cache: Path, fp32_nodes: set[str] = frozenset()) -> float:
    """Build one serialized engine from an ONNX file; returns the build time in seconds."""
    trt, flavor = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise SiloError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    builder_config = builder.create_builder_config()
    builder_config.builder_optimization_level = config.optimization_level
    if config.workspace_gib:
        builder_config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                             int(config.workspace_gib * 2**30))
    if precision == "fp16":
        if flavor == "tensorrt_rtx":
            raise SiloError("TensorRT-RTX builds strongly typed networks: fp16 engines need an "
                            "fp16 ONNX export; use --precision fp32 with tensorrt_rtx")
        builder_config.set_flag(trt.BuilderFlag.FP16)
        builder_config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name in fp32_nodes or layer.name.split(" ")[0] in fp32_nodes:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    cache_bytes = timing_cache.read_bytes() if timing_cache.is_file() else b""
    cache = builder_config.create_timing_cache(cache_bytes)
    builder_config.set_timing_cache(cache, ignore_mismatch=True)
    start = time.perf_counter()
    plan = builder.build_serialized_network(network, builder_config)
    if plan is None:
        raise SiloError(f"TensorRT failed to build an engine for {onnx_path.name}")
    seconds = time.perf_counter() - start
    plan_path.write_bytes(bytes(plan))
    timing_cache.write_bytes(bytes(cache.serialize()))
    return seconds


def build_engines(bundle: Path, manifest: dict, config: EngineBuildConfig,
                  log=lambda line: None) -> dict:
    """Build the bundle's engines for this machine and record them in the manifest.

    Returns the new engine entry. The manifest is rewritten atomically.
    """
    import onnx

    key = current_key(config.precision)
    folder = Path(bundle) / "engines" / key.folder
    folder.mkdir(parents=True, exist_ok=True)
    timing_cache = Path(bundle) / "engines" / f"timing-{key.flavor}-{key.version}.cache"
    plans = {}
    for graph in ENGINE_GRAPHS:
        onnx_path = Path(bundle) / manifest["graphs"][graph]["file"]
        precision = config.graph_precision(graph)
        fp32_nodes = set()
        if graph == "step" and precision == "fp16":
            fp32_nodes = fp32_tail(onnx.load(str(onnx_path), load_external_data=False))
        log(f"building {graph} ({precision}) with {key.flavor} {key.version}…")
        plan_path = folder / f"{graph}.plan"
        seconds = build_plan(onnx_path, plan_path, precision, config, timing_cache,
                             fp32_nodes)
        log(f"  {graph}: {seconds:.1f} s")
        plans[graph] = {"file": str(plan_path.relative_to(bundle)), "precision": precision,
                        "sha256": sha256_file(plan_path), "build_s": seconds}
    entry = {"key": asdict(key), "config": asdict(config), "plans": plans,
             "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest.setdefault("engines", {})[key.folder] = entry
    write_manifest(Path(bundle), manifest)
    return entry


def write_manifest(bundle: Path, manifest: dict) -> None:
    """Replace ``manifest.json`` atomically."""
    tmp = bundle / f".{MANIFEST}.{os.getpid()}.part"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, bundle / MANIFEST)
