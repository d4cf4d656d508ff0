"""What a SavedModel's graph shows when it carries no Keras metadata (``tf.saved_model.save`` of a
Keras model, Keras 3's ``model.export``): the op that produces its ``serving_default`` output
(softmax or a linear head) and the layer names in its op names (which base it was built on).

Read from ``saved_model.pb`` alone: the output tensor is followed through Identity ops and into
the called functions of the graph's function library until a computing op is reached.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from xception_export import artifact

_PASS_THROUGH: Final = frozenset({"Identity", "IdentityN", "StopGradient", "EnsureShape"})
_CALLS: Final = frozenset({"StatefulPartitionedCall", "PartitionedCall"})
# Ops a Dense/linear head ends in, and ops that end a softmax head.
LINEAR_OPS: Final = frozenset({"BiasAdd", "MatMul", "AddV2", "Add", "BatchMatMulV2"})
SOFTMAX_OPS: Final = frozenset({"Softmax"})
_MAX_STEPS: Final = 10_000


@dataclass(frozen=True)
class GraphFacts:
    output_op: str | None  # the op that computes serving_default's (single) output
    names: frozenset[str]  # every "/"-separated component of every op name


def facts(path: Path) -> GraphFacts:
    """The output op of serving_default and the op-name components of the whole graph."""
    meta = artifact.read_saved_model(path).meta_graphs[0]
    library = {f.signature.name: f for f in meta.graph_def.library.function}
    names: set[str] = set()
    for node in meta.graph_def.node:
        names.update(node.name.split("/"))
    for function in library.values():
        for node in function.node_def:
            names.update(node.name.split("/"))
    sig = meta.signature_def.get("serving_default")
    if sig is None or len(sig.outputs) != 1:
        return GraphFacts(None, frozenset(names))
    tensor = next(iter(sig.outputs.values())).name  # "node:0" in the top-level graph
    top = {n.name: n for n in meta.graph_def.node}
    return GraphFacts(_output_op(tensor, top, library), frozenset(names))


def _output_op(tensor: str, top: dict[str, Any], library: dict[str, Any]) -> str | None:
    """Follow ``tensor`` to the first op that computes something (None if it cannot be told)."""
    nodes, ref = top, tensor
    for _ in range(_MAX_STEPS):
        name, _, rest = ref.lstrip("^").partition(":")
        node = nodes.get(name)
        if node is None:
            return None
        if node.op in _PASS_THROUGH:
            ref = node.input[0]
            continue
        if node.op in _CALLS:
            function = library.get(node.attr["f"].func.name)
            if function is None:
                return None
            index = _output_index(rest)
            outputs = function.signature.output_arg
            if index >= len(outputs):
                return None
            ref = function.ret[outputs[index].name]
            nodes = {n.name: n for n in function.node_def}
            continue
        return str(node.op)
    return None


def _output_index(rest: str) -> int:
    """The output index of a tensor reference's tail: "0" (graph) or "output:0" (function)."""
    tail = rest.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def head_kind(output_op: str | None) -> str | None:
    """The head kind: probabilities for a softmax op, logits for a linear head's op, else None."""
    if output_op in SOFTMAX_OPS:
        return "probabilities"
    if output_op in LINEAR_OPS:
        return "logits"
    return None
