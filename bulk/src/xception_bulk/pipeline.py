# Beam's API has no type annotations, so calling it is an untyped call.
# mypy: disable-error-code="no-untyped-call"
"""The Beam pipeline: inputs -> read -> local checks -> RunInference -> predictions | errors.

Every input leaves through exactly one of the two sinks: each stage sends what it cannot handle
to its ``failed`` output, the model handlers return a per-image outcome (a refused batch is
bisected, see ``isolate``), and a batch that fails for another reason (a server away longer
than the retries last) comes back from RunInference's dead-letter output and becomes one error
record per image. The image bytes stop at RunInference: results carry only the ImageRef.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference

from .local_model import SavedModelHandler
from .manifest import ManifestFormat
from .progress import COUNTER_NAMESPACE, Progress
from .records import (
    Classified,
    Failure,
    code_name,
    error_record,
    prediction_record,
    to_json_line,
)
from .remote_model import RemoteTarget, ServedModelHandler
from .stages import FAILED, DecodeImage, ListInputs, ReadImage

__all__ = ["ERRORS_PREFIX", "PREDICTIONS_PREFIX", "JobConfig", "build_pipeline", "parquet_schema"]

PREDICTIONS_PREFIX: Final = "predictions"
ERRORS_PREFIX: Final = "errors"
OutputFormat = Literal["jsonl", "parquet"]


@dataclass(frozen=True, slots=True)
class LocalModel:
    """In-process mode: the version directory every worker loads."""

    version_dir: str
    model_copies: int | None = None


@dataclass(frozen=True, slots=True)
class JobConfig:
    patterns: tuple[str, ...]
    manifests: tuple[ManifestFormat, ...]
    output: str
    model: LocalModel | RemoteTarget
    model_name: str
    version: int
    top_k: int
    probabilities: bool = False
    output_format: OutputFormat = "jsonl"
    batch_size: int = 8
    max_image_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000

    def handler(self) -> ModelHandler[Any, PredictionResult, Any]:
        if isinstance(self.model, RemoteTarget):
            return ServedModelHandler(
                self.model,
                top_k=self.top_k,
                with_probabilities=self.probabilities,
                batch_size=self.batch_size,
            )
        return SavedModelHandler(
            self.model.version_dir,
            top_k=self.top_k,
            with_probabilities=self.probabilities,
            batch_size=self.batch_size,
            model_copies=self.model.model_copies,
        )


def failure_code(error: BaseException) -> str:
    """The status name of a dead-lettered batch's error: gRPC's, TensorFlow's, or UNKNOWN."""
    code = getattr(error, "code", None)
    if code is not None and hasattr(code, "name"):
        return str(code.name)  # the client's errors carry grpc.StatusCode
    number = getattr(error, "error_code", None)  # TensorFlow's OpError
    return code_name(number) if isinstance(number, int) else "UNKNOWN"


def dead_letter(item: tuple[Sequence[Any], BaseException]) -> Iterator[Failure]:
    """A batch RunInference gave up on -> one inference Failure per image in it."""
    batch, error = item
    message = f"{type(error).__name__}: {error}"[:1000]
    for ref, _data in batch:
        yield Failure(ref, "inference", failure_code(error), message)


class CountOutcomes(beam.DoFn):
    """Counts every image on its way to a sink (Metrics for the summary, Progress for the bar)."""

    def __init__(self, kind: Literal["classified", "errors"]) -> None:
        self._kind = kind

    def setup(self) -> None:
        self._counter = Metrics.counter(COUNTER_NAMESPACE, self._kind)
        self._progress = Progress.shared()

    def process(self, element: Any) -> Iterator[Any]:
        self._counter.inc()
        self._progress.add(**{self._kind: 1})
        yield element


def split_outcomes(result: PredictionResult) -> Iterator[Any]:
    outcome = result.inference
    if isinstance(outcome, Failure):
        yield beam.pvalue.TaggedOutput(FAILED, outcome)
    else:
        yield outcome


def parquet_schema(with_probabilities: bool) -> Any:
    """The Parquet columns, the same as the JSON Lines keys."""
    import pyarrow as pa

    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("id", pa.string()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field(
            "top_k",
            pa.list_(
                pa.struct(
                    [
                        pa.field("label", pa.string()),
                        pa.field("class_id", pa.int64()),
                        pa.field("score", pa.float64()),
                        pa.field("key", pa.string()),
                    ]
                )
            ),
        ),
    ]
    if with_probabilities:
        fields.append(pa.field("probabilities", pa.list_(pa.float32())))
    return pa.schema(fields)


def build_pipeline(pipeline: beam.Pipeline, config: JobConfig) -> None:
    """Add the whole job to ``pipeline``."""
    refs, manifest_failures = pipeline | "List" >> ListInputs(config.patterns, config.manifests)
    read = refs | "Read" >> beam.ParDo(ReadImage(config.max_image_bytes)).with_outputs(
        FAILED, main="images"
    )
    checked = read.images | "Check" >> beam.ParDo(DecodeImage(config.max_pixels)).with_outputs(
        FAILED, main="prepared"
    )
    results, dlq = (
        checked.prepared | "Classify" >> RunInference(config.handler()).with_exception_handling()
    )
    split = results | "Split" >> beam.FlatMap(split_outcomes).with_outputs(FAILED, main="ok")
    given_up = dlq.failed_inferences | "DeadLetter" >> beam.FlatMap(dead_letter)
    failures = (
        manifest_failures,
        read[FAILED],
        checked[FAILED],
        split[FAILED],
        given_up,
    ) | "AllFailures" >> beam.Flatten()

    def record(result: Classified) -> dict[str, Any]:
        return prediction_record(
            result,
            model=config.model_name,
            version=config.version,
            with_probabilities=config.probabilities,
        )

    predictions = (
        split.ok
        | "CountClassified" >> beam.ParDo(CountOutcomes("classified"))
        | "PredictionRecord" >> beam.Map(record)
    )
    prefix = FileSystems.join(config.output, PREDICTIONS_PREFIX)
    if config.output_format == "parquet":
        _ = predictions | "WriteParquet" >> beam.io.WriteToParquet(
            prefix, parquet_schema(config.probabilities), file_name_suffix=".parquet"
        )
    else:
        _ = (
            predictions
            | "PredictionJson" >> beam.Map(to_json_line)
            | "WritePredictions" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
        )
    _ = (
        failures
        | "CountErrors" >> beam.ParDo(CountOutcomes("errors"))
        | "ErrorJson" >> beam.Map(lambda failure: to_json_line(error_record(failure)))
        | "WriteErrors"
        >> beam.io.WriteToText(
            FileSystems.join(config.output, ERRORS_PREFIX), file_name_suffix=".jsonl"
        )
    )
