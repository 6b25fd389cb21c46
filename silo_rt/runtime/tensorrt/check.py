"""What TensorRT makes of a bundle's ONNX graphs, without a GPU: one verdict per graph.

Static checks come first (:mod:`.parser_rules`, and for ``step_fp16`` the ONNX types of its
FP32 tail, :mod:`.fp32_tail`), then the installed TensorRT parses and builds each graph ahead
of time: TensorRT-RTX's builder needs no GPU, so ``pip install 'silo-rt[trt-check]'`` is
enough to check a bundle on any machine (``silo-rt export --check trt``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ...errors import SiloError, first_line
from .. import step_io
from . import api
from .fp32_tail import fp32_tail, onnx_tail_violations, tail_layer_violations
from .parser_rules import parser_rule_violations


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


def check_onnx_with_tensorrt(onnx_path: Path, build: bool = True, fp32_nodes=frozenset(),
                             static: bool = True) -> GraphVerdict:
    """Parse ``onnx_path`` with the installed TensorRT and build it ahead of time (no GPU).

    Static checks come first (:func:`.parser_rule_violations`, and with ``fp32_nodes`` the
    ONNX types of the tail), so the verdict says something where TensorRT is not installed
    (``static=False`` leaves them to TensorRT's own parser). The build uses optimisation
    level 0, no timing cache, and TensorRT-RTX's default CPU-only ahead-of-time target.
    """
    import onnx

    onnx_path = Path(onnx_path)
    start = time.perf_counter()

    def verdict(ok, stage, message, flavor=None, version=None):
        return GraphVerdict(onnx_path.stem, ok, stage, message, time.perf_counter() - start,
                            flavor, version)

    model = onnx.load(str(onnx_path), load_external_data=False)
    if static and (rules := parser_rule_violations(model)):
        return verdict(False, "parse", api.first_of(rules))
    if static and fp32_nodes and (typed := onnx_tail_violations(model, fp32_nodes)):
        return verdict(False, "precision", api.first_of(typed))
    try:
        trt, flavor = api.import_tensorrt(prefer="tensorrt_rtx")
    except SiloError as exc:
        return verdict(None, "skipped", f"static checks passed; {exc}")
    version = trt.__version__
    with api.errors_only(trt):  # the verdict line says what matters
        return _check_with(trt, flavor, version, onnx_path, build, fp32_nodes, verdict)


def _check_with(trt, flavor, version, onnx_path, build, fp32_nodes, verdict) -> GraphVerdict:
    try:
        builder, network, parser, errors = api.parse_onnx(trt, onnx_path)
    except (RuntimeError, TypeError) as exc:  # full TensorRT without a GPU: no Builder
        return verdict(None, "skipped", f"static checks passed; {flavor} {version} cannot "
                       f"create a builder here ({first_line(exc)}): install TensorRT-RTX "
                       "(pip install 'silo-rt[trt-check]') to check graphs without a GPU",
                       flavor, version)
    if errors:
        return verdict(False, "parse", api.first_of(errors), flavor, version)
    if fp32_nodes and (layers := tail_layer_violations(network, fp32_nodes)):
        return verdict(False, "precision", api.first_of(layers), flavor, version)
    if build:
        config = builder.create_builder_config()
        api.configure_builder(trt, config, flavor, optimization_level=0)
        if builder.build_serialized_network(network, config) is None:
            return verdict(False, "build", "TensorRT failed to build an engine (run with "
                           "TensorRT's verbose log for the reason)", flavor, version)
    done = "parsed and built" if build else "parsed"
    return verdict(True, "ok", f"{done}, {network.num_layers} layers", flavor, version)


def check_bundle_with_tensorrt(bundle: Path, graph_files: dict[str, str], build: bool = True,
                               log=lambda line: None) -> list[GraphVerdict]:
    """:func:`check_onnx_with_tensorrt` for every graph of the bundle (``graph_files``:
    ``{graph: file}`` as the manifest's ``graphs`` name them), one line each to ``log``.

    ``step_fp16`` is also checked for an all-float32 tail (:func:`.fp32_tail`).
    """
    import onnx

    verdicts = []
    for name, file in graph_files.items():
        path = Path(bundle) / file
        tail = frozenset()
        if name == step_io.STEP_FP16:
            tail = frozenset(fp32_tail(onnx.load(str(path), load_external_data=False)))
        verdict = check_onnx_with_tensorrt(path, build, tail)
        verdict.graph = name
        log(verdict.line())
        verdicts.append(verdict)
    return verdicts
