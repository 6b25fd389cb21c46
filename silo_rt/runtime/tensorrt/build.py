"""Building a bundle's TensorRT plans for this machine, and recording them.

Plans are stored inside the bundle under ``tensorrt/<key>/<graph>.plan`` (the top-level
``engines/`` folder of a checkout holds bundles, not plans), or for a read-only bundle in
the user cache; builders started together build once, under a lock (:mod:`.plan_store`).
Every network is strongly typed, so an fp32 ONNX graph gives an fp32 engine and
``step_fp16`` the fp16 step; TF32 is cleared for every build, and the fp16 step is built
only if its FP32 tail stays float32 (:mod:`.fp32_tail`). A timing cache is kept per
TensorRT version and GPU.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path

from ...bundle_format import Manifest, sha256_file, write_manifest
from ...errors import SiloError
from .. import step_io
from . import api
from .fp32_tail import fp32_tail, tail_layer_violations
from .keys import EngineBuildConfig, EngineKey, current_key, engine_sources
from .plan_store import PlanStore


def build_plan(onnx_path: Path, plan_path: Path, config: EngineBuildConfig,
               timing_cache: Path | None, fp32_nodes=frozenset()) -> float:
    """Build one serialized engine from an ONNX file; returns the build time in seconds.

    The network is strongly typed (its precision is the ONNX file's); with ``fp32_nodes``
    the layers made from them must output float32, else nothing is built.
    """
    trt, flavor = api.import_tensorrt()
    builder, network, parser, errors = api.parse_onnx(trt, onnx_path)
    if errors:
        raise SiloError(f"TensorRT cannot parse {onnx_path.name}: {api.first_of(errors)}")
    if fp32_nodes and (layers := tail_layer_violations(network, fp32_nodes)):
        raise SiloError(f"{onnx_path.name} would not keep its FP32 tail: "
                        f"{api.first_of(layers)}")
    builder_config = builder.create_builder_config()
    api.configure_builder(trt, builder_config, flavor, config.optimization_level,
                          config.workspace_gib)
    cache = None
    if timing_cache is not None and api.uses_timing_cache(flavor):
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
        if source == step_io.STEP_FP16:
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
