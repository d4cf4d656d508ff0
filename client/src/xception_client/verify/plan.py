"""One verification, without I/O: which calls to make and how to judge each answer. The sync and
async clients make the calls (``Client.verify``, ``AsyncClient.verify``)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

from .. import _wire as client_wire
from ..errors import XceptionClientError
from ..metadata import ModelMetadata
from . import _wire
from .artifact import Artifact, load_artifact
from .compare import compare_outputs, indistinct_classes, signature_differences
from .records import Record
from .report import RecordResult, VerifyReport

__all__ = ["DEFAULT_ATOL", "Verification", "report_warnings"]

# Probabilities must match within this. A CPU server on the same TensorFlow lands within ~1e-7;
# see the operator's guide for GPUs (TF32).
DEFAULT_ATOL = 1e-4


class Verification:
    """The artifact's records, addressed to ``model``, judged within ``atol``."""

    def __init__(
        self,
        artifact: str | os.PathLike[str],
        model: client_wire.ModelRef,
        target: str,
        atol: float = DEFAULT_ATOL,
    ) -> None:
        if not (isinstance(atol, (int, float)) and math.isfinite(atol) and atol >= 0):
            raise ValueError(f"atol must be a finite number >= 0; received: atol={atol!r}")
        self.artifact = load_artifact(artifact)  # first: a bad path fails before any call
        self.model = model
        self.target = target
        self.atol = float(atol)

    def calls(self) -> Iterator[tuple[Record, client_wire.Method[Any, Any], Any]]:
        """(record, gRPC method, request) for each record, in file order."""
        for record in self.artifact.records:
            method = client_wire.CLASSIFY if record.method == "classify" else client_wire.PREDICT
            yield record, method, _wire.replay_request(record, self.model)

    def result(
        self, record: Record, response: Any, error: XceptionClientError | None, seconds: float
    ) -> RecordResult:
        """Judge one answer (or the call's error) against the record's reference."""
        latency_ms = seconds * 1000.0
        if error is not None:
            return _unanswered(record, latency_ms, f"call failed: {error}")
        try:
            observed = _wire.parse_response(record, response)
        except client_wire.WireError as wire_error:
            return _unanswered(record, latency_ms, f"unreadable answer: {wire_error}")
        outcome = compare_outputs(record.expected, observed, self.atol)
        return RecordResult(
            record.number,
            record.signature,
            record.describe(),
            outcome.rows,
            outcome.rows_agreeing,
            outcome.max_abs_diff,
            latency_ms,
            outcome.difference,
        )

    def report(self, served: ModelMetadata, results: list[RecordResult]) -> VerifyReport:
        return VerifyReport(
            artifact=str(self.artifact.version_dir),
            artifact_version=self.artifact.version,
            model=self.model.name,
            served_version=served.version,
            target=self.target,
            atol=self.atol,
            signature_problems=tuple(
                signature_differences(served.signatures, self.artifact.signatures)
            ),
            records=tuple(results),
            warnings=tuple(
                report_warnings(self.artifact, self.model.name, served.version, self.atol)
            ),
        )


def report_warnings(
    artifact: Artifact, model: str, served_version: int | None, atol: float
) -> list[str]:
    """What a pass would not prove: the server answered with another version than the
    artifact's, or the reference answers cannot tell classes apart."""
    found = []
    if None not in (artifact.version, served_version) and artifact.version != served_version:
        found.append(
            f"the artifact is version {artifact.version} but {model} answered as version "
            f"{served_version}: the records were replayed against another version"
        )
    flat = [(r, k) for r in artifact.records if (k := indistinct_classes(r.expected, atol))]
    if flat:
        first, k = flat[0]
        found.append(
            f"{len(flat)} of {len(artifact.records)} reference records cannot tell classes "
            f"apart: the top {k} scores of each image lie within atol {atol:g} of each other "
            f"(first: {first.describe()}); random weights? A pass then proves little about "
            "the classes"
        )
    return found


def _unanswered(record: Record, latency_ms: float, failure: str) -> RecordResult:
    """A record with no answer to judge (the call failed or its answer was unreadable)."""
    return RecordResult(
        record.number,
        record.signature,
        record.describe(),
        record.batch,
        0,
        math.inf,
        latency_ms,
        failure,
    )
