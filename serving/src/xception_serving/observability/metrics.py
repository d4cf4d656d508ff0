"""TF Serving's metrics under TF Serving's exported names, in a registry of our own.

TF Serving exports `/tensorflow/serving/request_count` as `:tensorflow:serving:request_count`
(every char outside [a-zA-Z0-9_] becomes `:`), counters without a `_total` suffix and latency
histograms in microseconds with buckets 10 * 1.8**k. prometheus_client's own Counter would rename
them (`_total`, `_created`) and its exposition appends `_total` to counter TYPE lines, so this
module keeps its own small thread-safe families and writes the text exposition format itself.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

# TF Serving's latency buckets: 10 * 1.8**k, k = 0..32 (microseconds).
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10.0 * 1.8**k for k in range(33))
BATCH_SIZE_BUCKETS: tuple[float, ...] = tuple(float(2**k) for k in range(14))


def exported_name(tf_name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else ":" for c in tf_name)


class _Family:
    def __init__(self, tf_name: str, doc: str, kind: str, labels: Sequence[str]) -> None:
        self.name = exported_name(tf_name)
        self.doc = doc
        self.kind = kind
        self.labels = tuple(labels)
        self.lock = threading.Lock()


class _Counter(_Family):
    def __init__(self, tf_name: str, doc: str, labels: Sequence[str]) -> None:
        super().__init__(tf_name, doc, "counter", labels)
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, *label_values: str, amount: float = 1.0) -> None:
        with self.lock:
            self.values[label_values] = self.values.get(label_values, 0.0) + amount

    def get(self, *label_values: str) -> float:
        with self.lock:
            return self.values.get(label_values, 0.0)

    def total(self) -> float:
        with self.lock:
            return sum(self.values.values())

    def render(self, out: list[str]) -> None:
        with self.lock:
            items = sorted(self.values.items())
        if not items:
            return
        out.append(f"# HELP {self.name} {self.doc}")
        out.append(f"# TYPE {self.name} counter")
        for labels, value in items:
            out.append(f"{self.name}{_labels(self.labels, labels)} {_number(value)}")


class _Histogram(_Family):
    def __init__(
        self, tf_name: str, doc: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> None:
        super().__init__(tf_name, doc, "histogram", labels)
        self.buckets = tuple(buckets)
        # per label set: [count per bucket..., +Inf count], sum
        self.values: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, *label_values: str) -> None:
        with self.lock:
            counts, total = self.values.setdefault(
                label_values, ([0] * (len(self.buckets) + 1), [0.0])
            )
            index = len(self.buckets)
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    index = i
                    break
            counts[index] += 1
            total[0] += value

    def count(self, *label_values: str) -> int:
        with self.lock:
            entry = self.values.get(label_values)
            return sum(entry[0]) if entry else 0

    def observations(self) -> dict[tuple[str, ...], dict[float, int]]:
        """Non-cumulative counts per bucket upper bound (inf for the overflow bucket)."""
        with self.lock:
            return {
                labels: dict(zip((*self.buckets, float("inf")), counts, strict=True))
                for labels, (counts, _total) in self.values.items()
            }

    def render(self, out: list[str]) -> None:
        with self.lock:
            items = [(k, (list(c), t[0])) for k, (c, t) in sorted(self.values.items())]
        if not items:
            return
        out.append(f"# HELP {self.name} {self.doc}")
        out.append(f"# TYPE {self.name} histogram")
        for labels, (counts, total) in items:
            cumulative = 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else _number(round(bound, 6))
                names = (*self.labels, "le")
                out.append(f"{self.name}_bucket{_labels(names, (*labels, le))} {cumulative}")
            out.append(f"{self.name}_sum{_labels(self.labels, labels)} {_number(total)}")
            out.append(f"{self.name}_count{_labels(self.labels, labels)} {cumulative}")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class Metrics:
    """All metrics of one server process. Thread-safe."""

    content_type = "text/plain; version=0.0.4; charset=utf-8"

    def __init__(self) -> None:
        self.request_count = _Counter(
            "/tensorflow/serving/request_count",
            "The total number of requests.",
            ("model_name", "status"),
        )
        self.request_latency = _Histogram(
            "/tensorflow/serving/request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ("model_name", "API", "entrypoint"),
            LATENCY_BUCKETS_US,
        )
        self.runtime_latency = _Histogram(
            "/tensorflow/serving/runtime_latency",
            "Distribution of wall time (in microseconds) for Tensorflow runtime.",
            ("model_name", "API", "runtime"),
            LATENCY_BUCKETS_US,
        )
        self.wrapped_run_count = _Counter(
            "/tensorflow/serving/batching_session/wrapped_run_count",
            "Total count of run calls on a wrapped session",
            (),
        )
        self.queuing_latency = _Histogram(
            "/tensorflow/serving/batching_session/queuing_latency",
            "Distribution of wall time spent (in microseconds) in queuing",
            ("thread_pool_name",),
            LATENCY_BUCKETS_US,
        )
        self.processed_batch_size = _Histogram(
            "/tensorflow/serving/batching/processed_batch_size",
            "Tracks the batch size distribution on processing (after padding).",
            ("model_name", "op_name"),
            BATCH_SIZE_BUCKETS,
        )
        self.input_batch_size = _Histogram(
            "/tensorflow/serving/batching/input_batch_size",
            "Tracks the batch size distribution on the inputs by model_name (if exists).",
            ("model_name", "op_name"),
            BATCH_SIZE_BUCKETS,
        )
        self.load_attempt_count = _Counter(
            "/tensorflow/cc/saved_model/load_attempt_count",
            "The number of times a SavedModel was successfully loaded.",
            ("model_path", "status"),
        )
        self.load_latency = _Counter(
            "/tensorflow/cc/saved_model/load_latency",
            "Latency in microseconds for SavedModels that were successfully loaded.",
            ("model_path",),
        )
        self.warmup_latency = _Histogram(
            "/tensorflow/serving/model_warmup_latency",
            "Distribution of wall time (in microseconds) for warming up the model.",
            ("model_path", "status"),
            LATENCY_BUCKETS_US,
        )
        self.warmup_records_read = _Counter(
            "/tensorflow/serving/model_warmup_records_read",
            "Number of warmup records read.",
            ("model_path",),
        )
        self._families: tuple[_Counter | _Histogram, ...] = (
            self.request_count,
            self.request_latency,
            self.runtime_latency,
            self.wrapped_run_count,
            self.queuing_latency,
            self.processed_batch_size,
            self.input_batch_size,
            self.load_attempt_count,
            self.load_latency,
            self.warmup_latency,
            self.warmup_records_read,
        )

    def record_request(
        self,
        *,
        model_name: str,
        api: str,
        entrypoint: str,
        status: str,
        latency_s: float | None,
    ) -> None:
        self.request_count.inc(model_name, status)
        if status == "OK" and latency_s is not None:
            self.request_latency.observe(latency_s * 1e6, model_name, api, entrypoint)

    def render_prometheus(self) -> bytes:
        """Prometheus text exposition (version 0.0.4) of every metric with samples."""
        out: list[str] = []
        for family in self._families:
            family.render(out)
        return ("\n".join(out) + "\n").encode() if out else b""
