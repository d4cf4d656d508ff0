"""``xception-client``: a thin shell over the library.

Results go to stdout (a table, or JSON lines with ``--json``); progress and errors go to stderr.
Exit status: 0 success, 1 a client or server error (one clear line each), 2 a usage error.

Defaults come from the environment: XCEPTION_SERVER (host:port, default localhost:8500),
XCEPTION_MODEL, XCEPTION_TIMEOUT (seconds), XCEPTION_CA_CERT, XCEPTION_CLIENT_CERT,
XCEPTION_CLIENT_KEY (PEM files; any of them turns TLS on).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import xception_contract as contract

from ._channel import TLS
from .client import DEFAULT_TIMEOUT, Client
from .errors import ArtifactNotFound, XceptionClientError
from .predictions import Prediction
from .verify import DEFAULT_ATOL, VerifyReport

__all__ = ["main"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

if TYPE_CHECKING:  # argparse's subparsers action is private; its type is for annotations only
    _Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise SystemExit(f"xception-client: error: {name}={value!r} is not a number") from None


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_model_flags(common)
    _add_transport_flags(common)
    parser = argparse.ArgumentParser(
        prog="xception-client",
        description="Classify images with the Xception model served by TF Serving (gRPC).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_predict_command(sub, common)
    sub.add_parser("status", parents=[common], help="versions of the model and their state")
    metadata = sub.add_parser("metadata", parents=[common], help="the model's signatures")
    metadata.add_argument("--json", action="store_true", help="JSON instead of text")
    _add_verify_command(sub, common)
    return parser


def _add_model_flags(common: argparse.ArgumentParser) -> None:
    """Which server and model every command talks to, and its deadline."""
    default_server = f"localhost:{contract.DEFAULT_GRPC_PORT}"
    common.add_argument(
        "--server",
        default=os.environ.get("XCEPTION_SERVER", default_server),
        help="gRPC target: host:port, dns:///host:port or h1:p1,h2:p2 (env XCEPTION_SERVER)",
    )
    common.add_argument(
        "--model",
        default=os.environ.get("XCEPTION_MODEL", contract.DEFAULT_MODEL_NAME),
        help="model name (env XCEPTION_MODEL, default %(default)s)",
    )
    common.add_argument("--model-version", type=int, default=None, help="pin a version number")
    common.add_argument(
        "--timeout",
        type=float,
        default=_env_float("XCEPTION_TIMEOUT", DEFAULT_TIMEOUT),
        help="deadline of each call in seconds (env XCEPTION_TIMEOUT, default %(default)s)",
    )


def _add_transport_flags(common: argparse.ArgumentParser) -> None:
    """TLS and the HTTP/2 authority the connection presents."""
    common.add_argument(
        "--ca-cert",
        default=os.environ.get("XCEPTION_CA_CERT"),
        help="PEM CA to verify the server; turns TLS on (env XCEPTION_CA_CERT)",
    )
    common.add_argument(
        "--client-cert",
        default=os.environ.get("XCEPTION_CLIENT_CERT"),
        help="PEM client certificate for mutual TLS (env XCEPTION_CLIENT_CERT)",
    )
    common.add_argument(
        "--client-key",
        default=os.environ.get("XCEPTION_CLIENT_KEY"),
        help="PEM client key for mutual TLS (env XCEPTION_CLIENT_KEY)",
    )
    common.add_argument("--tls", action="store_true", help="TLS with the system's root CAs")
    common.add_argument(
        "--authority",
        default=os.environ.get("XCEPTION_AUTHORITY"),
        help="HTTP/2 :authority (Host) to send, for ingresses that route on it, e.g. KServe's "
        "xception.<ns>.example.com (env XCEPTION_AUTHORITY)",
    )


def _add_predict_command(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    predict = sub.add_parser("predict", parents=[common], help="classify images, dirs or URLs")
    predict.add_argument("images", nargs="+", metavar="IMAGE|DIR|URL")
    predict.add_argument(
        "--top-k",
        type=int,
        default=contract.DEFAULT_TOP_K,
        help="classes per image (default %(default)s)",
    )
    predict.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    predict.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="requests in flight for many images (default %(default)s)",
    )
    predict.add_argument(
        "--apply-exif-orientation",
        action="store_true",
        help="rotate JPEGs by their EXIF tag (Keras load_img does not)",
    )


def _add_verify_command(sub: _Subparsers, common: argparse.ArgumentParser) -> None:
    verify = sub.add_parser(
        "verify",
        parents=[common],
        help="prove the server reproduces an artifact's answers",
        description=VERIFY_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument(
        "artifact",
        metavar="ARTIFACT",
        help="exported version directory, or a base path (its latest version)",
    )
    verify.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help="tolerance on probabilities and scores (default %(default)g)",
    )
    verify.add_argument("--json", action="store_true", help="the full report as JSON")


VERIFY_DESCRIPTION = """\
Replay the artifact's warmup records (assets.extra/tf_serving_warmup_requests) against the server
and compare each answer with the Keras reference answer the export wrote next to it (load_img ->
preprocess_input -> model.predict, not the exported graph). First the served SignatureDefs
(GetModelMetadata) must equal saved_model.pb's: names, dtypes, shapes. Then, per record:
probabilities and scores within --atol, top-k labels, class ids and keys equal (unless two classes
tie within --atol).

Exit status: 0 everything holds; 1 a difference (one line names the first failing record, its
output, observed vs expected) or a client/server error; 2 a usage error (bad ARTIFACT or flag).

Tolerance: the local server (same TensorFlow, CPU) reproduced the references exactly (max |dp|
0) in this project's measurements. On a GPU, TensorFlow uses TF32 by default for float32 matrix
products and convolutions on Ampere and later (A100, L4, H100): inputs keep 10 mantissa bits, so
expect probabilities to differ by up to ~1e-3 [estimate, not measured]. Use --atol 2e-3 there,
or start TF Serving with TF32 off (NVIDIA_TF32_OVERRIDE=0) to verify at the default 1e-4.
"""


def _expand(items: Sequence[str]) -> tuple[list[str], list[str]]:
    """Paths, directories (their image files, sorted) and URLs -> (images, missing)."""
    images: list[str] = []
    missing: list[str] = []
    for item in items:
        if item.startswith(("http://", "https://")):
            images.append(item)
        elif Path(item).is_dir():
            images.extend(
                str(p)
                for p in sorted(Path(item).rglob("*"))
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif Path(item).is_file():
            images.append(item)
        else:
            missing.append(item)
    return images, missing


class _Progress:
    """A one-line counter on stderr, only when stderr is a terminal (like rich's `disable`)."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream, self.done = total, stream, 0
        self.enabled = total > 1 and stream.isatty()

    def step(self) -> None:
        self.done += 1
        if self.enabled:
            width = 30
            filled = width * self.done // self.total
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r[{bar}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def _print_table(name: str, predictions: list[Prediction], out: TextIO) -> None:
    out.write(f"{name}\n")
    out.write(f"  {'rank':>4}  {'score':>7}  label\n")
    for rank, p in enumerate(predictions, 1):
        key = f" ({p.key})" if p.key else ""
        out.write(f"  {rank:>4}  {p.score:7.4f}  {p.label}{key}\n")


def _predict(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    images, missing = _expand(args.images)
    for item in missing:
        err.write(f"xception-client: error: {item}: no such file, directory or URL\n")
    if not images:
        if not missing:
            err.write("xception-client: error: no image files found\n")
        return EXIT_ERROR
    progress = _Progress(len(images), err)
    failures = len(missing)
    started = time.monotonic()
    results: Iterator[list[Prediction] | XceptionClientError] = client.predict_many(
        images, top_k=args.top_k, concurrency=args.concurrency, return_exceptions=True
    )
    for name, result in zip(images, results, strict=True):
        progress.step()
        if isinstance(result, XceptionClientError):
            failures += 1
            if progress.enabled:
                err.write("\n")
            err.write(f"xception-client: error: {name}: {result}\n")
            if args.json:
                out.write(json.dumps({"image": name, "error": str(result)}) + "\n")
            continue
        if args.json:
            record = {"image": name, "predictions": [asdict(p) for p in result]}
            out.write(json.dumps(record) + "\n")
        else:
            _print_table(name, result, out)
        out.flush()
    progress.close()
    if len(images) + len(missing) > 1:
        elapsed = time.monotonic() - started
        total = len(images) + len(missing)
        err.write(
            f"{total - failures}/{total} images classified, {failures} failed, {elapsed:.1f} s\n"
        )
    return EXIT_ERROR if failures else EXIT_OK


def _status(client: Client, out: TextIO) -> int:
    versions = client.status()
    out.write(f"{'version':>8}  {'state':<10}  error\n")
    for v in versions:
        error = f"{v.error_code} {v.error_message}".strip() if v.error_code else ""
        out.write(f"{v.version:>8}  {v.state:<10}  {error}\n")
    return EXIT_OK if any(v.state == "AVAILABLE" for v in versions) else EXIT_ERROR


def _metadata(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    meta = client.metadata()
    if args.json:
        out.write(json.dumps(asdict(meta), default=list, indent=2) + "\n")
        return EXIT_OK
    out.write(f"model {meta.name} version {meta.version}\n")
    for key, sig in sorted(meta.signatures.items()):
        if key.startswith("__"):
            continue  # TF2's __saved_model_init_op, not callable
        out.write(f"signature {key!r} ({sig.method_name})\n")
        for alias, spec in sorted(sig.inputs.items()):
            out.write(f"  input  {alias}: {spec}\n")
        for alias, spec in sorted(sig.outputs.items()):
            out.write(f"  output {alias}: {spec}\n")
    return EXIT_OK


def _verify(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    report: VerifyReport = client.verify(args.artifact, atol=args.atol)
    if args.json:
        out.write(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    else:
        out.write(
            f"artifact {report.artifact} -> model {report.model} version "
            f"{report.served_version} at {report.target}\n"
        )
        out.write(report.table() + "\n")
        for problem in report.signature_problems:
            out.write(f"signature difference: {problem}\n")
        out.write(report.verdict() + "\n")
    for warning in report.warnings:
        err.write(f"xception-client: warning: {warning}\n")
    if not report.passed:
        err.write(f"xception-client: verify failed: {report.first_failure}\n")
        return EXIT_ERROR
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (the console script exits with it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out, err = sys.stdout, sys.stderr
    _check_args(parser, args)
    try:
        client = _open_client(args)
    except (ValueError, OSError) as error:
        err.write(f"xception-client: error: {error}\n")
        return EXIT_USAGE
    try:
        with client:
            return _run(client, args, out, err)
    except ArtifactNotFound as error:
        err.write(f"xception-client: error: {error}\n")
        return EXIT_USAGE
    except XceptionClientError as error:
        err.write(f"xception-client: error: {error}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("xception-client: interrupted\n")
        return 130


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with a usage error (status 2) for a flag value no command can use."""
    if args.command == "predict" and args.top_k < 1:
        parser.error(f"--top-k must be >= 1; received: {args.top_k}")
    if getattr(args, "concurrency", 1) < 1:
        parser.error(f"--concurrency must be >= 1; received: {args.concurrency}")
    if args.command == "verify" and not (args.atol >= 0 and args.atol != float("inf")):
        parser.error(f"--atol must be a finite number >= 0; received: {args.atol}")
    if args.timeout <= 0:
        parser.error(f"--timeout must be > 0 seconds; received: {args.timeout}")
    if (args.client_cert is None) != (args.client_key is None):
        parser.error("--client-cert and --client-key go together (mutual TLS)")


def _open_client(args: argparse.Namespace) -> Client:
    """The client the flags describe (ValueError or OSError for a bad target or PEM file)."""
    return Client(
        args.server,
        model_name=args.model,
        model_version=args.model_version,
        timeout=args.timeout,
        tls=TLS.from_flags(args.tls, args.ca_cert, args.client_cert, args.client_key),
        apply_exif_orientation=getattr(args, "apply_exif_orientation", False),
        # gRPC's standard channel argument: the ingress sees this Host, the TCP connection
        # still goes to --server.
        channel_options=([("grpc.default_authority", args.authority)] if args.authority else []),
    )


def _run(client: Client, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.command == "predict":
        return _predict(client, args, out, err)
    if args.command == "status":
        return _status(client, out)
    if args.command == "verify":
        return _verify(client, args, out, err)
    return _metadata(client, args, out)


if __name__ == "__main__":
    sys.exit(main())
