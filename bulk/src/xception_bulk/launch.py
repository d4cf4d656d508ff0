# Beam's API has no type annotations, so calling it is an untyped call.
# mypy: disable-error-code="no-untyped-call"
"""The launcher's side of a run: check what it can before any worker starts, pick the runner,
run, and read the counts back.

Checks made here fail in seconds with one clear line instead of on every worker: no input
flag, a literal input path that does not exist, an output folder that already holds results,
a model path with no SavedModel, TensorFlow missing for an in-process run on this machine, a
server that does not answer or serves another signature, --top-k above the model's K.
"""

from __future__ import annotations

import argparse
import json
import posixpath
from typing import Any, TextIO

import apache_beam as beam
import xception_contract as contract
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from xception_client import XceptionClientError
from xception_contract import layout

from .local_model import TF_EXTRA_HINT, tensorflow_available
from .manifest import ManifestError, ManifestFormat, has_scheme, manifest_format, split_lines
from .pipeline import ERRORS_PREFIX, PREDICTIONS_PREFIX, JobConfig, LocalModel, build_pipeline
from .progress import COUNTER_NAMESPACE
from .remote_model import RemoteTarget

__all__ = ["SetupError", "UsageError", "counts", "is_local", "job_config", "run"]

_LOCAL_RUNNERS = frozenset({"directrunner", "direct", "fnapirunner"})
_WILDCARDS = "*?["


class UsageError(ValueError):
    """A flag names something that is not there (exit 2)."""


class SetupError(RuntimeError):
    """The model or server cannot be used (exit 1)."""


def is_local(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner
    return runner is None or str(runner).lower() in _LOCAL_RUNNERS


def job_config(args: argparse.Namespace, *, local_runner: bool) -> JobConfig:
    _check_output(args.output)
    patterns = tuple(args.input)
    for pattern in patterns:
        if not any(c in pattern for c in _WILDCARDS) and not FileSystems.exists(pattern):
            raise UsageError(f"--input {pattern} does not exist")
    manifests = tuple(_manifest(uri) for uri in args.input_manifest)
    common: dict[str, Any] = {
        "patterns": patterns,
        "manifests": manifests,
        "output": args.output,
        "model_name": args.model_name,
        "top_k": args.top_k,
        "probabilities": args.probabilities,
        "output_format": args.format,
        "batch_size": args.batch_size,
        "max_image_bytes": args.max_image_bytes,
    }
    if args.server:
        target, exported_k = _served(args)
        _check_top_k(args.top_k, exported_k, args.server)
        max_pixels = args.max_pixels or contract.DEFAULT_MAX_PIXELS
        return JobConfig(model=target, version=target.version, max_pixels=max_pixels, **common)
    version_dir, version, metadata = _local_model(args.model)
    if local_runner and not tensorflow_available():
        raise SetupError(TF_EXTRA_HINT)
    _check_top_k(args.top_k, metadata.get("top_k"), version_dir)
    artifact_limit = metadata.get("max_pixels")
    max_pixels = args.max_pixels or (
        artifact_limit if isinstance(artifact_limit, int) else contract.DEFAULT_MAX_PIXELS
    )
    return JobConfig(
        model=LocalModel(version_dir, args.model_copies),
        version=version,
        max_pixels=max_pixels,
        **common,
    )


def _check_output(output: str) -> None:
    for prefix in (PREDICTIONS_PREFIX, ERRORS_PREFIX):
        pattern = FileSystems.join(output, f"{prefix}-*")
        try:
            found = FileSystems.match([pattern])[0].metadata_list
        except Exception:  # a folder that does not exist yet holds nothing
            found = []
        if found:
            raise UsageError(
                f"--output {output} already holds results ({found[0].path}); give a new folder"
            )


def _manifest(uri: str) -> ManifestFormat:
    if not FileSystems.exists(uri):
        raise UsageError(f"--input-manifest {uri} does not exist")
    first_line = None
    if uri.lower().endswith(".csv"):
        with FileSystems.open(uri) as f:
            head = f.read(64 * 1024)
        lines = split_lines(head)
        first_line = lines[0] if lines else None
    try:
        return manifest_format(uri, first_line)
    except ManifestError as error:
        raise UsageError(str(error)) from error


def _local_model(path: str) -> tuple[str, int, dict[str, Any]]:
    """The version directory, its number and its export metadata (empty when absent)."""
    if has_scheme(path):  # gs://...: a version directory itself (listing versions is local-only)
        version_dir = path.rstrip("/")
        if not FileSystems.exists(f"{version_dir}/{layout.SAVED_MODEL_FILE}"):
            raise UsageError(
                f"--model {path} holds no {layout.SAVED_MODEL_FILE}; give the "
                "version directory itself for a remote path"
            )
    else:
        found = layout.resolve_version_dir(path)
        if found is None:
            raise UsageError(
                f"--model {path} is neither a version directory holding a "
                "SavedModel nor a base path whose latest version holds one"
            )
        version_dir = str(found.resolve())
    version = layout.parse_version(posixpath.basename(version_dir))
    if version is None:
        raise UsageError(f"--model {version_dir}: its folder name is not a version number")
    metadata: dict[str, Any] = {}
    metadata_path = f"{version_dir}/{layout.EXPORT_METADATA_RELPATH}"
    if FileSystems.exists(metadata_path):
        with FileSystems.open(metadata_path) as f:
            metadata = json.loads(f.read().decode("utf-8"))
    return version_dir, version, metadata


def _served(args: argparse.Namespace) -> tuple[RemoteTarget, int | None]:
    """Ask the server once: the version to pin (unless given) and the model's exported K."""
    target = RemoteTarget(
        server=args.server,
        model_name=args.model_name,
        version=args.model_version or 0,
        timeout=args.timeout,
        ca_cert=_pem(args.ca_cert, "--ca-cert"),
        client_cert=_pem(args.client_cert, "--client-cert"),
        client_key=_pem(args.client_key, "--client-key"),
        tls=args.tls,
        authority=args.authority,
    )
    probe = RemoteTarget(**{**_fields(target), "version": args.model_version})
    try:
        with probe.client() as client:
            metadata = client.check_model()
    except (XceptionClientError, ValueError, OSError) as error:
        raise SetupError(f"cannot use {args.model_name} at {args.server}: {error}") from error
    version = args.model_version or metadata.version
    if version is None:
        raise SetupError(f"{args.server} did not say which version of {args.model_name} it serves")
    scores = metadata.signatures[contract.BYTES_SIGNATURE].outputs.get(contract.TOP_K_SCORES_OUTPUT)
    exported_k = scores.shape[-1] if scores is not None and scores.shape else None
    return RemoteTarget(**{**_fields(target), "version": version}), exported_k


def _pem(path: str | None, flag: str) -> bytes | None:
    if path is None:
        return None
    try:
        with FileSystems.open(path) as f:
            data: bytes = f.read()
    except Exception as error:  # any file system's error
        raise UsageError(f"{flag} {path} cannot be read: {error}") from error
    return data


def _fields(target: RemoteTarget) -> dict[str, Any]:
    return {name: getattr(target, name) for name in RemoteTarget.__slots__}


def _check_top_k(top_k: int, exported: object, where: str) -> None:
    if isinstance(exported, int) and top_k > exported:
        raise UsageError(f"--top-k {top_k} but {where} exports its {exported} best classes")


def run(config: JobConfig, options: PipelineOptions, err: TextIO) -> Any:
    """Build and run the pipeline; returns the finished PipelineResult."""
    runner: Any = None
    if is_local(options):
        # Beam's DirectRunner tries Prism first, which downloads a binary at run time: the
        # Python FnApiRunner is the local runner with nothing to download (and it honours
        # --direct_num_workers and --direct_running_mode).
        from apache_beam.runners.portability.fn_api_runner.fn_runner import FnApiRunner

        runner = FnApiRunner()
    pipeline = beam.Pipeline(runner=runner, options=options)
    build_pipeline(pipeline, config)
    result = pipeline.run()
    result.wait_until_finish()
    return result


def counts(result: Any) -> tuple[int, int]:
    """(classified, errors) from the job's Metrics counters."""
    totals = {"classified": 0, "errors": 0}
    query = result.metrics().query(MetricsFilter().with_namespace(COUNTER_NAMESPACE))
    for counter in query["counters"]:
        name = counter.key.metric.name
        if name in totals:
            value = counter.committed if counter.committed is not None else counter.attempted
            totals[name] += int(value or 0)
    return totals["classified"], totals["errors"]
