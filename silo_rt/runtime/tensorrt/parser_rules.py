"""Documented restrictions of TensorRT's ONNX parser, checked on an ONNX file without TensorRT.

Pure Python over the ``onnx`` protobuf: a graph that breaks one of these is refused before
any TensorRT is imported, so the verdict says something where TensorRT is not installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


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
# Where full TensorRT's parser and TensorRT-RTX's differ, a rule lists one flavour. No
# documented difference was found (onnx-tensorrt's docs/operators.md describes the parser
# both ship, and TensorRT-RTX 1.7's parser refused exactly these cases when measured), so
# every rule below is one both parsers share and that silo-rt's graphs could trip.
PARSER_RESTRICTIONS = (
    ParserRule("Resize", "Antialiasing is not supported.", BOTH,
               lambda node, constants: _attribute(node, "antialias") != 0),
    ParserRule("LayerNormalization", "Only the first output `Y` is supported.", BOTH,
               lambda node, constants: sum(1 for o in node.output if o) > 1),
    ParserRule("Reduce*", "`axes` must be an initializer.", BOTH, _axes_not_constant),
    ParserRule("MaxPool", "`Indices` output tensor unsupported.", BOTH,
               lambda node, constants: len(node.output) > 1 and node.output[1] != ""),
)


def parser_rule_violations(model, flavor: str | None = None) -> list[str]:
    """One line per node of ``model`` that breaks a rule of :data:`PARSER_RESTRICTIONS`.

    ``flavor`` limits the rules to one parser (None = all).
    """
    constants = {i.name for i in model.graph.initializer}
    constants |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    lines = []
    for index, node in enumerate(model.graph.node):
        for rule in PARSER_RESTRICTIONS:
            if rule.applies(node.op_type, flavor) and rule.violated(node, constants):
                lines.append(f"node {index} {node.name or '(unnamed)'} ({node.op_type}): "
                             f"{rule.rule} [{rule.source}]")
    return lines
