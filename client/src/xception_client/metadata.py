"""What the server says about a model (GetModelMetadata, GetModelStatus), as plain dataclasses,
and the check of a served signature against what this client sends and reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import xception_contract as contract

__all__ = ["ModelMetadata", "ModelVersionStatus", "Signature", "TensorSpec", "signature_problems"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One signature input or output: TF dtype name ("DT_STRING") and shape (None = any size)."""

    dtype: str
    shape: tuple[int | None, ...] | None  # None: unknown rank

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype} <unknown rank>"
        dims = ", ".join("-1" if d is None else str(d) for d in self.shape)
        return f"{self.dtype} [{dims}]"


@dataclass(frozen=True, slots=True)
class Signature:
    """A SignatureDef: TF Serving method name, inputs and outputs keyed by alias."""

    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """GetModelMetadata's answer: the served model name, version and its signatures."""

    name: str
    version: int | None
    signatures: Mapping[str, Signature]


@dataclass(frozen=True, slots=True)
class ModelVersionStatus:
    """One entry of GetModelStatus: a version, its state ("AVAILABLE", ...) and its error if any."""

    version: int
    state: str
    error_code: int
    error_message: str


_INT_DTYPES = frozenset({"DT_INT32", "DT_INT64"})

# What the client needs from each signature it can call: input alias and dtype, and the outputs
# it reads with their accepted dtypes (rank 2: [batch, K]).
_EXPECTED_INPUTS: Mapping[str, tuple[str, str]] = {
    contract.BYTES_SIGNATURE: (contract.IMAGE_BYTES_INPUT, "DT_STRING"),
    contract.PIXELS_SIGNATURE: (contract.PIXELS_INPUT, "DT_UINT8"),
}
_EXPECTED_OUTPUTS: Mapping[str, frozenset[str]] = {
    contract.TOP_K_SCORES_OUTPUT: frozenset({"DT_FLOAT"}),
    contract.TOP_K_CLASS_IDS_OUTPUT: _INT_DTYPES,
    contract.TOP_K_LABELS_OUTPUT: frozenset({"DT_STRING"}),
}


def signature_problems(metadata: ModelMetadata, signature_name: str) -> list[str]:
    """Explain, one sentence each, how the served signature differs from what the client expects.

    An empty list means the client can call ``signature_name`` on this model.
    """
    signature = metadata.signatures.get(signature_name)
    if signature is None:
        served = ", ".join(sorted(k for k in metadata.signatures if not k.startswith("__")))
        return [f"model {metadata.name!r} has no signature {signature_name!r} (it has: {served})"]
    if signature_name not in _EXPECTED_INPUTS:
        return [
            f"this client can call {sorted(_EXPECTED_INPUTS)}, not signature {signature_name!r}"
        ]
    problems: list[str] = []
    alias, dtype = _EXPECTED_INPUTS[signature_name]
    spec = signature.inputs.get(alias)
    if spec is None:
        problems.append(
            f"signature {signature_name!r}: expected input {alias!r} {dtype}, server has inputs "
            f"{_describe(signature.inputs)}"
        )
    elif spec.dtype != dtype:
        problems.append(
            f"signature {signature_name!r}: expected input {alias!r} {dtype}, server has {spec}"
        )
    if len(signature.inputs) > 1:
        problems.append(
            f"signature {signature_name!r}: expected one input, server has "
            f"{_describe(signature.inputs)}"
        )
    for name, dtypes in _EXPECTED_OUTPUTS.items():
        out = signature.outputs.get(name)
        wanted = " or ".join(sorted(dtypes))
        if out is None:
            problems.append(
                f"signature {signature_name!r}: expected output {name!r} {wanted} [-1, K], "
                f"server has outputs {_describe(signature.outputs)}"
            )
        elif out.dtype not in dtypes or (out.shape is not None and len(out.shape) != 2):
            problems.append(
                f"signature {signature_name!r}: expected output {name!r} {wanted} [-1, K], "
                f"server has {out}"
            )
    return problems


def _describe(tensors: Mapping[str, TensorSpec]) -> str:
    if not tensors:
        return "none"
    return ", ".join(f"{k!r} {v}" for k, v in sorted(tensors.items()))
