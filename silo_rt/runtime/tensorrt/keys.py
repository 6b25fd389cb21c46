"""Where a TensorRT plan may run (its key), how engines are built, and the checks before one
is loaded.

A plan only runs where its key matches: (TensorRT flavour and version, GPU compute
capability, precision). The key is recorded with each plan's sha256 in the bundle's
``manifest.json`` under ``"engines"`` (or in the user cache: :mod:`.plan_store`); a plan
built for another GPU or TensorRT is never loaded, and the error says what is there and
what is needed (``silo-rt export --engines trt`` or the first ``restore`` builds a matching
one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...bundle_format import bundle_path, sha256_file
from ...errors import SiloError
from .. import step_io
from . import api, cuda_device

PRECISIONS = tuple(step_io.STEP_GRAPHS)
VAE_GRAPHS = (step_io.VAE_ENCODER, step_io.VAE_DECODER)


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

    fp16 needs the strongly typed ``step_fp16`` graph of an fp16 export; other precisions
    (bf16) are refused.
    """
    if precision not in PRECISIONS:
        raise SiloError(f"TensorRT runs a bundle's {' or '.join(PRECISIONS)} step, not "
                        f"{precision}")
    source = step_io.STEP_GRAPHS[precision]
    if source not in graph_names:
        raise SiloError(f"this bundle has no {source} graph, so it cannot give {precision} "
                        "TensorRT engines; re-export it with `--precision fp16` (or use "
                        "--precision fp32)")
    return {**{graph: graph for graph in VAE_GRAPHS}, step_io.STEP: source}


def default_precision(graph_names) -> str:
    """The step precision TensorRT runs a bundle in when none is asked for: fp16 where the
    bundle has its ``step_fp16`` graph (an fp16 export), else fp32 (the default export and
    the demo bundles)."""
    return "fp16" if step_io.STEP_FP16 in graph_names else "fp32"


def current_key(precision: str, device: int | None = None) -> EngineKey:
    """The key of this process's GPU (``device``, default :func:`~.cuda_device.this_device`:
    ``LOCAL_RANK``'s) and TensorRT installation.

    Refuses TensorRT-RTX on compute capabilities it does not support, and TensorRT built for
    another CUDA major than cuda-python's.
    """
    trt, flavor = api.import_tensorrt()
    rt = cuda_device.cudart()
    cuda_device.check_cuda_pairing(cuda_device.tensorrt_cuda_major(),
                                   cuda_device.bindings_major())
    if device is None:
        device = cuda_device.this_device(rt)
    major, minor = cuda_device.compute_capability(device, rt)
    key = EngineKey(flavor, trt.__version__, f"{major}.{minor}", precision)
    api.check_flavor_supports(flavor, key.version, key.compute_capability)
    return key


def tensorrt_unavailable_reason() -> str | None:
    """None where TensorRT and a CUDA GPU are usable here, else one line saying why not."""
    try:
        current_key("fp32")
    except SiloError as exc:
        return str(exc)
    return None


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
