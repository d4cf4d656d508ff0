"""What verify replays: one warmup record, its request (serialized) and its reference answer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]
# Output alias -> array. Predict: the response's tensors. Classify: "classes" (bytes [N, C]) and
# "scores" (float32 [N, C]), the rows of its ClassificationResult.
Outputs = Mapping[str, Array]


@dataclass(frozen=True)
class Record:
    """One warmup record (numbered from 1 in file order)."""

    number: int
    signature: str
    method: str  # "predict" or "classify"
    request: bytes  # the serialized PredictRequest / ClassificationRequest
    expected: Outputs  # the Keras reference answer written by the export
    batch: int  # images (or examples) in the request
    formats: tuple[str, ...]  # sniffed formats of encoded images; empty for pixel inputs

    def describe(self) -> str:
        what = ", ".join(self.formats) if self.formats else f"{self.batch} tensor row(s)"
        return f"record {self.number} ({self.signature}, {what})"
