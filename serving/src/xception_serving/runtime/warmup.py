"""SavedModel warmup as TF Serving does it: replay assets.extra/tf_serving_warmup_requests at load.

The file is a TFRecord of PredictionLog protos; predict/classify/regress/multi_inference logs are
run against the version being loaded (their model_spec name/version are not used for routing, the
signature is). Any failure fails the load of that version. At most 1000 records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import grpc
from tensorflow_serving.apis import prediction_log_pb2
from xception_contract import layout

from xception_serving.observability.metrics import Metrics
from xception_serving.runtime.errors import ServingError
from xception_serving.runtime.servable import Servable

log = logging.getLogger("xception_serving")

MAX_RECORDS = 1000

# (servable, PredictionLog) -> None; raises ServingError when the replayed request fails.
Replay = Callable[[Servable, prediction_log_pb2.PredictionLog], None]


def _records(path: Path) -> list[bytes]:
    import tensorflow as tf

    records: list[bytes] = []
    try:
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            records.append(bytes(record))
            if len(records) > MAX_RECORDS:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}",
                )
    except tf.errors.OpError as err:
        raise ServingError(
            grpc.StatusCode.DATA_LOSS,
            f"{err.message}. Please verify your warmup data is in TFRecord format.",
        ) from err
    return records


def run_warmup(
    servable: Servable, replay: Replay, metrics: Metrics, *, iterations: int = 1
) -> None:
    path = servable.path / layout.WARMUP_RELPATH
    if not path.exists():
        log.info("No warmup data file found at %s", path)
        return
    started = time.monotonic()
    status = "OK"
    try:
        records = _records(path)
        for raw in records:
            entry = prediction_log_pb2.PredictionLog()
            try:
                entry.ParseFromString(raw)
            except Exception as err:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Failed to parse warmup record: {raw!r:.64}"
                ) from err
            kind = entry.WhichOneof("log_type")
            if kind not in ("predict_log", "classify_log", "regress_log", "multi_inference_log"):
                number = entry.DESCRIPTOR.fields_by_name[kind].number if kind is not None else 0
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}"
                )
            for _ in range(max(1, iterations)):
                replay(servable, entry)
        metrics.warmup_records_read.inc(str(servable.path), amount=len(records))
        log.info(
            "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
            "Elapsed time (microseconds): %d.",
            path,
            len(records),
            (time.monotonic() - started) * 1e6,
        )
    except Exception:
        status = "FAILED"
        raise
    finally:
        metrics.warmup_latency.observe(
            (time.monotonic() - started) * 1e6, str(servable.path), status
        )
