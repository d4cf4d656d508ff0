"""``verify``: prove that a running server answers what the exporter's Keras reference answered.

The export writes each warmup record's reference response (Keras ``load_img`` ->
``preprocess_input`` -> ``predict``) into ``assets.extra/tf_serving_warmup_requests``. Verify reads
the artifact without TensorFlow (TFRecord framing and CRC32C here, messages in ``_wire``), checks
the served SignatureDefs against ``saved_model.pb``, replays every record and compares. Entry
points: ``Client.verify``, ``AsyncClient.verify``, ``xception-client verify``.
"""

from __future__ import annotations

from .artifact import Artifact, load_artifact, resolve_version_dir
from .plan import DEFAULT_ATOL, Verification
from .report import RecordResult, SignatureResult, VerifyReport
from .tfrecord import masked_crc32c, read_records

__all__ = [
    "DEFAULT_ATOL",
    "Artifact",
    "RecordResult",
    "SignatureResult",
    "Verification",
    "VerifyReport",
    "load_artifact",
    "masked_crc32c",
    "read_records",
    "resolve_version_dir",
]
