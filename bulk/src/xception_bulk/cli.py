# Beam's API has no type annotations, so calling it is an untyped call.
# mypy: disable-error-code="no-untyped-call"
"""``xception-bulk``: classify a whole image collection on Apache Beam with RunInference.

Results go to files under --output; progress and the one summary line go to stderr. Exit
status: 0 the job finished (bad images are in errors-*.jsonl, not a failure), 1 the job or its
set-up failed (server unreachable, model unreadable), 2 a usage error. Flags this command does
not know are Beam pipeline options (--runner, --project, --region, --temp_location, ...).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any, Final, TextIO

import xception_contract as contract
from apache_beam.options.pipeline_options import PipelineOptions

from . import launch
from .pipeline import JobConfig
from .progress import Progress

__all__ = ["main"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DEFAULT_BATCH_SIZE: Final = 8
DEFAULT_MAX_IMAGE_BYTES: Final = 64 * 1024 * 1024
DEFAULT_TIMEOUT: Final = 30.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xception-bulk",
        allow_abbrev=False,  # a Beam option must never be taken for an abbreviation of ours
        description="Classify every image a pattern or manifest names, on Apache Beam: in "
        "process with the exported SavedModel (--model) or through a server (--server).",
        epilog="Other flags are Beam pipeline options, e.g. --runner=DataflowRunner "
        "--project=P --region=R --temp_location=gs://B/tmp. The default runner is Beam's "
        "local Python runner (add --direct_num_workers=N --direct_running_mode=multi_processing "
        "for N processes); it never downloads anything.",
    )
    _add_io_flags(parser)
    _add_model_flags(parser)
    _add_result_flags(parser)
    _add_limit_flags(parser)
    _add_connection_flags(parser)
    return parser


def _add_io_flags(parser: argparse.ArgumentParser) -> None:
    """Where the images come from and where the results go."""
    inputs = parser.add_argument_group("inputs (at least one)")
    inputs.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="PATTERN",
        help="file pattern: a path, a glob, gs://..., s3://... (repeatable)",
    )
    inputs.add_argument(
        "--input-manifest",
        action="append",
        default=[],
        metavar="FILE",
        help="a .txt (one URI a line), .csv (path[,id] header) or .jsonl "
        '({"path", "id"}) list of images (repeatable)',
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="folder for predictions-*.jsonl|parquet and errors-*.jsonl "
        "(must not hold results yet)",
    )


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The model: in process (--model) or served (--server), and its name and version."""
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--model",
        metavar="PATH",
        help="in-process: an exported version directory or its base path "
        "(needs TensorFlow on the workers)",
    )
    mode.add_argument(
        "--server", metavar="HOST:PORT", help="remote: TF Serving or xception-serve gRPC target"
    )
    parser.add_argument(
        "--model-name",
        default=contract.DEFAULT_MODEL_NAME,
        help="served model name, and the name written to records (default %(default)s)",
    )
    parser.add_argument(
        "--model-version",
        type=int,
        default=None,
        help="remote: pin this version (default: the one served at start)",
    )


def _add_result_flags(parser: argparse.ArgumentParser) -> None:
    """What each record holds and the file format."""
    parser.add_argument(
        "--top-k",
        type=int,
        default=contract.DEFAULT_TOP_K,
        help="classes per image (default %(default)s)",
    )
    parser.add_argument(
        "--probabilities", action="store_true", help="also write every class's probability"
    )
    parser.add_argument(
        "--format",
        choices=("jsonl", "parquet"),
        default="jsonl",
        help="predictions file format (default %(default)s)",
    )


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """Batch size, per-image limits and model copies."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="images per model call (default %(default)s)",
    )
    parser.add_argument(
        "--max-image-bytes",
        type=int,
        default=DEFAULT_MAX_IMAGE_BYTES,
        help="larger files are errors, not read (default %(default)s)",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=None,
        help="pixel limit of the local check (default: the artifact's in "
        f"process, {contract.DEFAULT_MAX_PIXELS} remote)",
    )
    parser.add_argument(
        "--model-copies",
        type=int,
        default=None,
        help="in-process: load this many copies per machine, shared by its "
        "worker processes (Beam's model sharing), instead of one per process",
    )


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """Remote mode's deadline, TLS and authority, as xception-client's."""
    connection = parser.add_argument_group("remote connection (as xception-client)")
    connection.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help="deadline of each call in seconds (default %(default)s)",
    )
    connection.add_argument("--ca-cert", help="PEM CA to verify the server; turns TLS on")
    connection.add_argument("--client-cert", help="PEM client certificate for mutual TLS")
    connection.add_argument("--client-key", help="PEM client key for mutual TLS")
    connection.add_argument("--tls", action="store_true", help="TLS with the system's root CAs")
    connection.add_argument("--authority", help="HTTP/2 :authority (Host) to send")


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not args.input and not args.input_manifest:
        parser.error("give at least one --input PATTERN or --input-manifest FILE")
    for flag in ("top_k", "batch_size", "max_image_bytes"):
        if getattr(args, flag) < 1:
            parser.error(
                f"--{flag.replace('_', '-')} must be >= 1; received: {getattr(args, flag)}"
            )
    if args.max_pixels is not None and args.max_pixels < 1:
        parser.error(f"--max-pixels must be >= 1; received: {args.max_pixels}")
    if args.model_copies is not None and (args.model_copies < 1 or args.server):
        parser.error("--model-copies is >= 1 and for in-process mode (--model) only")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds; received: {args.timeout}")
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key go together (mutual TLS)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    _check_usage(parser, args)
    err = sys.stderr
    options = PipelineOptions(beam_args)
    try:
        config = launch.job_config(args, local_runner=launch.is_local(options))
    except launch.UsageError as error:
        err.write(f"xception-bulk: error: {error}\n")
        return EXIT_USAGE
    except launch.SetupError as error:
        err.write(f"xception-bulk: error: {error}\n")
        return EXIT_ERROR
    return _run(config, options, err)


def _run(config: JobConfig, options: PipelineOptions, err: TextIO) -> int:
    started = time.monotonic()
    try:
        result = launch.run(config, options, err)
    except KeyboardInterrupt:
        err.write("xception-bulk: interrupted\n")
        return 130
    except Exception as error:  # the runner's failure, e.g. a worker that could not load
        Progress.shared().clear()
        err.write(f"xception-bulk: error: the pipeline failed: {_first_line(error)}\n")
        return EXIT_ERROR
    wall = time.monotonic() - started
    Progress.shared().clear()
    classified, errors = launch.counts(result)
    state = str(getattr(result, "state", "DONE"))
    rate = (classified + errors) / wall if wall > 0 else 0.0
    timing = Progress.shared().timing(started)
    err.write(
        f"xception-bulk: classified {classified}, errors {errors}, {rate:.2f} images/s, "
        f"wall time {wall:.1f} s{timing}, output {config.output}\n"
    )
    if state not in ("DONE", "PipelineState.DONE"):
        err.write(f"xception-bulk: error: the pipeline ended in state {state}\n")
        return EXIT_ERROR
    return EXIT_OK


def _first_line(error: Any) -> str:
    text = str(error).strip() or type(error).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    # Beam wraps a worker's exception in its traceback: its last line says what went wrong.
    return (lines[-1] if len(lines) > 1 else lines[0])[:2000]


if __name__ == "__main__":
    sys.exit(main())
