"""Preflight: load a SavedModel version exactly as tensorflow_model_server would, and run it.

TF Serving imports the MetaGraphDef with the requested tags into a TensorFlow Session, restores
the variables through the SavedModel's saver, runs the init op with the asset paths, replays
``assets.extra/tf_serving_warmup_requests`` (any failing record fails the load), and then serves
with Session::Run on the SignatureDef's tensor names. It never uses TF2's object-graph loader, so
an artifact that only works under ``tf.saved_model.load`` fails there (and here).

This file is deliberately standalone: it imports only the standard library, numpy, tensorflow
and tensorflow_serving's PredictionLog, so ``xception-export check --tfserving-version X`` can
run it by path under the TensorFlow of another TF Serving release, in a venv that has none of
this project's packages. ``python preflight.py VERSION_DIR --json`` prints the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WARMUP_PATH = ("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000  # TF Serving refuses to load more
WARMUP_KINDS = ("predict_log", "classify_log", "regress_log", "multi_inference_log")
CLASSIFY_INPUTS = "inputs"  # the classify/regress signatures' one input alias
DEFAULT_SIGNATURE = "serving_default"
INIT_OP_SIGNATURE = "__saved_model_init_op"

# Python's wrapper around a Session error; TF Serving reports only the status text after it.
_PYTHON_PREFIX = re.compile(
    r"^Graph execution error:\s*"
    r"(?:Detected at node [^\n]*\n(?:(?:<stack traces unavailable>|[ \t][^\n]*|)\n)*)*"
)


@dataclass
class RecordResult:
    """One warmup record replayed in the Session."""

    index: int
    kind: str
    signatures: list[str]
    error: str | None = None  # "<CODE>: <message>", as TF Serving would report it
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # alias -> tensor

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class PreflightReport:
    version_dir: str
    tensorflow_version: str
    tags: list[str]
    load_error: str | None = None
    load_seconds: float = 0.0
    warmup_file: bool = False
    records: list[RecordResult] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)  # every serving SignatureDef key

    @property
    def ok(self) -> bool:
        return self.load_error is None and all(r.ok for r in self.records)

    def signature_status(self) -> dict[str, str]:
        """Signature -> "OK", the first error of its records, or "not run" (no warmup record)."""
        status: dict[str, str] = {}
        for key in self.signatures:
            mine = [r for r in self.records if key in r.signatures]
            errors = [r.error for r in mine if r.error]
            status[key] = errors[0] if errors else ("OK" if mine else "not run")
        return status

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        for record, raw in zip(self.records, data["records"], strict=True):
            raw["ok"] = record.ok
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreflightReport:
        records = [
            RecordResult(
                index=r["index"],
                kind=r["kind"],
                signatures=list(r["signatures"]),
                error=r["error"],
                outputs=r["outputs"],
            )
            for r in data["records"]
        ]
        return cls(
            version_dir=data["version_dir"],
            tensorflow_version=data["tensorflow_version"],
            tags=list(data["tags"]),
            load_error=data["load_error"],
            load_seconds=data["load_seconds"],
            warmup_file=data["warmup_file"],
            records=records,
            signatures=list(data["signatures"]),
        )


def status_text(err: BaseException) -> str:
    """TF's exception as TF Serving's status: ``CODE: kernel message``."""
    code = getattr(err, "error_code", None)
    message = str(getattr(err, "message", None) or err)
    message = _PYTHON_PREFIX.sub("", message, count=1).strip() or message
    if isinstance(code, int):
        from tensorflow.core.protobuf import error_codes_pb2

        return f"{error_codes_pb2.Code.Name(code)}: {message}"
    return f"{type(err).__name__}: {message}"


def _tensor_json(value: Any) -> dict[str, Any]:
    import numpy as np

    array = np.asarray(value)
    if array.dtype.kind in ("O", "S"):
        values: Any = [
            v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)
            for v in array.reshape(-1).tolist()
        ]
    else:
        values = array.reshape(-1).tolist()
    return {"dtype": str(array.dtype), "shape": list(array.shape), "values": values}


class _Bundle:
    """A version loaded in a Session, as TF Serving's LoadSavedModel leaves it."""

    def __init__(self, version_dir: Path, tags: list[str]) -> None:
        import tensorflow as tf

        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.meta_graph = tf.compat.v1.saved_model.loader.load(
                self.session, tags, str(version_dir)
            )
        # One callable per feed/fetch set, as TF Serving keeps one executor per signature: making
        # one costs seconds on a 71x71 Xception, running it milliseconds.
        self._callables: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Any] = {}

    def run(
        self, key: str, feeds: dict[str, Any], output_filter: list[str] | None = None
    ) -> dict[str, Any]:
        """Session::Run of signature ``key`` (feeds by alias), through the C API callable path,
        which, like TF Serving, binds no Python-side shape check to the feeds."""
        from tensorflow.core.protobuf import config_pb2

        sig = self.meta_graph.signature_def[key]
        fed = sorted(feeds)
        outputs = list(output_filter) if output_filter else sorted(sig.outputs)
        cache_key = (key, tuple(fed), tuple(outputs))
        run = self._callables.get(cache_key)
        if run is None:
            options = config_pb2.CallableOptions(
                feed=[sig.inputs[alias].name for alias in fed],
                fetch=[sig.outputs[alias].name for alias in outputs],
            )
            run = self.session._make_callable_from_options(options)
            self._callables[cache_key] = run
        values = run(*(feeds[alias] for alias in fed))
        return dict(zip(outputs, values, strict=True))

    def close(self) -> None:
        self.session.close()


def _warmup_records(path: Path) -> list[bytes]:
    import tensorflow as tf

    records = []
    for record in tf.compat.v1.io.tf_record_iterator(str(path)):
        records.append(bytes(record))
        if len(records) > MAX_WARMUP_RECORDS:
            raise ValueError(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
    return records


def _serialized_examples(request_input: Any) -> Any:
    import numpy as np

    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        context = with_context.context.SerializeToString()  # merged into every example
        serialized = [context + e.SerializeToString() for e in with_context.examples]
    else:
        serialized = []
    if not serialized:
        raise ValueError("Input is empty.")
    return np.array(serialized, dtype=object)


def _replay(bundle: _Bundle, entry: Any, result: RecordResult) -> None:
    """Run one PredictionLog's request the way TF Serving's warmup does."""
    import tensorflow as tf

    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        request = entry.predict_log.request
        key = request.model_spec.signature_name or DEFAULT_SIGNATURE
        result.signatures = [key]
        feeds = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
        outputs = bundle.run(key, feeds, list(request.output_filter))
        result.outputs = {alias: _tensor_json(v) for alias, v in outputs.items()}
        return
    if kind in ("classify_log", "regress_log"):
        request = getattr(entry, kind).request
        key = request.model_spec.signature_name or DEFAULT_SIGNATURE
        result.signatures = [key]
        outputs = bundle.run(key, {CLASSIFY_INPUTS: _serialized_examples(request.input)})
        result.outputs = {alias: _tensor_json(v) for alias, v in outputs.items()}
        return
    request = entry.multi_inference_log.request
    examples = _serialized_examples(request.input)
    for task in request.tasks:
        key = task.model_spec.signature_name or DEFAULT_SIGNATURE
        result.signatures.append(key)
        outputs = bundle.run(key, {CLASSIFY_INPUTS: examples})
        result.outputs.update({f"{key}/{a}": _tensor_json(v) for a, v in outputs.items()})


def check_version(version_dir: str | Path, tags: str = "serve") -> PreflightReport:
    """Load ``version_dir`` in a Session as TF Serving does, replay every warmup record."""
    import logging

    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    # The TF1 loader's deprecation notices are not findings.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    path = Path(version_dir)
    tag_list = [t.strip() for t in tags.split(",") if t.strip()]
    report = PreflightReport(
        version_dir=str(path), tensorflow_version=tf.__version__, tags=tag_list
    )
    started = time.monotonic()
    try:
        bundle = _Bundle(path, tag_list)
    except Exception as err:
        report.load_error = status_text(err)
        return report
    report.load_seconds = round(time.monotonic() - started, 3)
    report.signatures = sorted(k for k in bundle.meta_graph.signature_def if k != INIT_OP_SIGNATURE)
    warmup = path.joinpath(*WARMUP_PATH)
    report.warmup_file = warmup.exists()
    try:
        if not report.warmup_file:
            return report
        try:
            records = _warmup_records(warmup)
        except Exception as err:
            report.load_error = f"warmup file: {status_text(err)}"
            return report
        for index, raw in enumerate(records):
            entry = prediction_log_pb2.PredictionLog()
            result = RecordResult(index=index, kind="unparsable", signatures=[])
            report.records.append(result)
            try:
                entry.ParseFromString(raw)
            except Exception:
                result.error = f"INVALID_ARGUMENT: Failed to parse warmup record: {raw[:64]!r}"
                continue
            result.kind = entry.WhichOneof("log_type") or "none"
            if result.kind not in WARMUP_KINDS:
                result.error = f"UNIMPLEMENTED: Unsupported log_type for warmup: {result.kind}"
                continue
            try:
                _replay(bundle, entry, result)
            except Exception as err:
                result.error = status_text(err)
    finally:
        bundle.close()
    return report


def runtime_label(tensorflow_version: str, tfserving_version: str | None = None) -> str:
    """What the report says loaded the version. Under a release's TensorFlow (``--tfserving-version
    X.Y.Z``, whose TensorFlow is X.Y.Z) that release; otherwise TF Serving's Session path on this
    environment's TensorFlow, which is no TF Serving release even when the numbers look alike."""
    if tfserving_version:
        return f"TF Serving {tfserving_version}"
    return f"TF Serving's Session path on this environment's TensorFlow {tensorflow_version}"


def format_report(report: PreflightReport, runtime: str) -> str:
    """The human-readable report: the load, then one line per signature, then a verdict."""
    lines = [
        f"checking {report.version_dir} as {runtime} loads it "
        f"(TensorFlow {report.tensorflow_version} Session, tags {','.join(report.tags)})"
    ]
    if report.load_error is not None and not report.signatures:
        lines.append(f"load: {report.load_error}")
        lines.append(f"FAILED: {runtime} cannot load this version")
        return "\n".join(lines)
    lines.append(f"load (saver restore + init op): OK in {report.load_seconds:.1f} s")
    if report.load_error is not None:
        lines.append(f"{report.load_error}")
    elif not report.warmup_file:
        lines.append("warmup: no assets.extra/tf_serving_warmup_requests; no signature was run")
    else:
        failed = sum(not r.ok for r in report.records)
        lines.append(f"warmup: {len(report.records)} records replayed, {failed} failed")
    status = report.signature_status()
    width = max((len(k) for k in status), default=0)
    for key, text in status.items():
        count = sum(key in r.signatures for r in report.records)
        records = f"({count} record{'s' if count != 1 else ''})"
        lines.append(f"  {key:<{width}}  {records:<11}  {text}")
    first = next((r for r in report.records if not r.ok), None)
    if report.ok:
        lines.append(f"OK: {runtime} loads this version and every warmup record answers")
    elif first is not None:
        lines.append(
            f"FAILED: warmup record {first.index} ({first.kind}, "
            f"{', '.join(first.signatures) or '?'}) fails, so {runtime} would not make this "
            "version AVAILABLE"
        )
    else:
        lines.append(f"FAILED: {runtime} would not make this version AVAILABLE")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir")
    parser.add_argument("--tags", default="serve")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = check_version(args.version_dir, args.tags)
    if args.json:
        json.dump(report.to_json(), sys.stdout)
        sys.stdout.write("\n")
    else:
        status = report.load_error or ", ".join(
            f"{k}: {v}" for k, v in report.signature_status().items()
        )
        print(status)
    return 0 if report.ok else 1


if __name__ == "__main__":
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep stdout/stderr to our lines
    sys.exit(main())
