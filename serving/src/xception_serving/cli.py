"""`xception-serve`: the local server, started with tensorflow_model_server's flag names.

Startup follows TF Serving: parse flags, load every configured model (ports stay closed until
then), open gRPC (and REST when --rest_api_port > 0), and serve until SIGTERM/SIGINT, which stops
accepting, lets in-flight requests finish and exits 0. Unlike TF Serving, a port another process
holds fails the start before any model loads, not after. A startup failure prints
`Failed to start server. Error: <status>` and exits 255, as tensorflow_model_server does.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from xception_contract import tf_startup

from xception_serving.process import BIND_FAILURE, READY_LINE

if TYPE_CHECKING:  # annotations only: the real imports wait until flags are checked
    from tensorflow_serving.config import model_server_config_pb2

    from xception_serving.core import ServingCore
    from xception_serving.metrics import Metrics
    from xception_serving.rest import RestServer

log = logging.getLogger("xception_serving")

STARTUP_FAILURE_EXIT = 255
SHUTDOWN_GRACE_SECONDS = 30.0


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "t", "yes", "y"):
        return True
    if lowered in ("0", "false", "f", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value: {value!r}")


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xception-serve",
        description="Local server answering as TensorFlow Serving does (gRPC + REST), using "
        "tensorflow_model_server's flags. `--flag=value` and `--flag value` both work; boolean "
        "flags also accept a bare `--flag` (true).",
        allow_abbrev=False,
    )

    def flag_bool(name: str, default: bool, help_text: str) -> None:
        parser.add_argument(
            f"--{name}", type=_bool, nargs="?", const=True, default=default, help=help_text
        )

    net = parser.add_argument_group("network")
    net.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500)")
    net.add_argument(
        "--grpc_socket_path", default="", help="also listen on this UNIX socket (unix:<path>)"
    )
    net.add_argument(
        "--rest_api_port", type=int, default=0, help="REST/HTTP port; 0 disables REST (default)"
    )
    net.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (local-server extra; default loopback 127.0.0.1, TF Serving binds "
        "all interfaces)",
    )
    net.add_argument("--ssl_config_file", default="", help="text SSLConfig: TLS on gRPC")
    net.add_argument(
        "--grpc_max_threads",
        type=int,
        default=max(64, 4 * (os.cpu_count() or 1)),
        help="gRPC worker threads: calls in flight beyond this many are refused "
        "RESOURCE_EXHAUSTED (TF Serving's thread quota)",
    )
    net.add_argument(
        "--grpc_channel_arguments",
        default="",
        help="comma-separated key=value gRPC server arguments (integers passed as ints)",
    )
    net.add_argument(
        "--rest_api_num_threads", type=int, default=0, help="REST worker threads (0: 4 x CPUs)"
    )
    net.add_argument(
        "--rest_api_timeout_in_ms", type=int, default=30000, help="per-REST-call deadline"
    )
    net.add_argument(
        "--rest_api_max_connections", type=_positive_int, default=100,
        help="local-server extra: open REST connections; at the limit the slowest unfinished "
        "or longest idle one makes room, or the caller gets 503 when all are in service",
    )
    net.add_argument(
        "--rest_api_request_read_timeout_in_ms", type=_positive_int, default=60000,
        help="local-server extra: a REST request's head and body must arrive within this "
        "(from its first byte; not restarted by each byte), else 408 and close",
    )
    flag_bool("enable_profiler", True, "accepted for compatibility; no profiler service here")
    flag_bool(
        "enable_grpc_healthcheck_service",
        False,
        "accepted for compatibility; the local server always registers grpc.health.v1.Health",
    )
    models = parser.add_argument_group("models")
    models.add_argument("--model_name", default="default", help="single-model name")
    models.add_argument("--model_base_path", default="", help="single-model base path")
    models.add_argument("--model_config_file", default="", help="text ModelServerConfig")
    models.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0)
    models.add_argument("--file_system_poll_wait_seconds", type=int, default=1)
    models.add_argument("--max_num_load_retries", type=int, default=5)
    models.add_argument("--load_retry_interval_micros", type=int, default=60_000_000)
    flag_bool("enable_model_warmup", True, "replay assets.extra/tf_serving_warmup_requests")
    models.add_argument("--num_request_iterations_for_warmup", type=int, default=1)
    batching = parser.add_argument_group("batching")
    flag_bool("enable_batching", False, "dynamic batching of concurrent requests")
    batching.add_argument("--batching_parameters_file", default="")
    monitoring = parser.add_argument_group("monitoring")
    monitoring.add_argument("--monitoring_config_file", default="")
    runtime = parser.add_argument_group("TensorFlow runtime")
    runtime.add_argument(
        "--tensorflow_session_parallelism",
        type=int,
        default=0,
        help="threads for both intra- and inter-op pools (0: TensorFlow picks)",
    )
    runtime.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    runtime.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0)
    runtime.add_argument(
        "--tensorflow_session_config_file",
        default="",
        help="text tensorflow.ConfigProto for every model's Session (thread flags override it)",
    )
    runtime.add_argument(
        "--mixed_precision",
        default="",
        help="bfloat16: TensorFlow's oneDNN auto mixed precision rewrite (CPUs with "
        "avx512_bf16/amx_bf16; float32 elsewhere)",
    )
    flag_bool(
        "xla_cpu_compilation_enabled",
        False,
        "allow XLA:CPU JIT for models that ask for it (jit_compile); off, they fail",
    )
    flag_bool("xla_gpu_compilation_enabled", False, "allow XLA:CPU and XLA:GPU JIT")
    models.add_argument(
        "--saved_model_tags",
        default="serve",
        help="comma-separated tags of the MetaGraphDef to load (default serve)",
    )
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    return parser


# server.cc's thread-flag rule. Here (no TensorFlow import) so flag mistakes fail before TF
# loads; session_config applies the same function.
PARALLELISM_CONFLICT = (
    "Either configure server_options.tensorflow_session_parallelism or "
    "(server_options.tensorflow_intra_op_parallelism, "
    "server_options.tensorflow_inter_op_parallelism) separately. You cannot configure all."
)


def parallelism_conflict(session: int, intra: int, inter: int) -> bool:
    """TF Serving refuses only the case where all three flags are positive."""
    return session > 0 and intra > 0 and inter > 0


class StartupError(Exception):
    """A flag or config problem, worded as TF Serving's status."""


def _check_flags(args: argparse.Namespace) -> None:
    if not args.model_base_path and not args.model_config_file:
        raise StartupError(
            "INVALID_ARGUMENT: Both server_options.model_base_path and "
            "server_options.model_config_file are empty!"
        )
    if args.batching_parameters_file and not args.enable_batching:
        raise StartupError(
            "INVALID_ARGUMENT: server_options.batching_parameters_file is set without setting "
            "server_options.enable_batching to true."
        )
    if parallelism_conflict(
        args.tensorflow_session_parallelism,
        args.tensorflow_intra_op_parallelism,
        args.tensorflow_inter_op_parallelism,
    ):
        raise StartupError(f"INVALID_ARGUMENT: {PARALLELISM_CONFLICT}")
    channel_arguments(args.grpc_channel_arguments)
    if args.port <= 0 and not args.grpc_socket_path:
        raise StartupError(
            "INVALID_ARGUMENT: At least one of server_options.grpc_port or "
            "server_options.grpc_socket_path must be set."
        )


def _bind_problem(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on now, or None. Probed as the servers bind (every
    address `host` resolves to, SO_REUSEADDR as gRPC sets it), then closed at once."""
    try:
        addresses = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as err:
        return f"cannot resolve {host!r}: {err.strerror}"
    bound = False
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
                probe.listen(1)
            except OSError as err:
                if err.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    continue  # e.g. ::1 on a host without IPv6: the servers skip it too
                return os.strerror(err.errno) if err.errno else str(err)
            bound = True
    return None if bound else f"no address of {host!r} can be bound"


def check_ports(args: argparse.Namespace) -> None:
    """Fail before any model loads when a port the server needs is taken (a model can take
    minutes to load; the port is known now). The wording keeps process.BIND_FAILURE."""
    ports = [("gRPC", "--port", args.port)]
    if args.rest_api_port > 0 and args.rest_api_port != args.port:
        ports.append(("REST", "--rest_api_port", args.rest_api_port))
    for what, flag, port in ports:
        if port <= 0:
            continue
        problem = _bind_problem(args.host, port)
        if problem is not None:
            raise StartupError(
                f"UNAVAILABLE: {BIND_FAILURE} {what} port {args.host}:{port} ({flag}): {problem}"
            )


def channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """TF Serving's --grpc_channel_arguments: `k=v,k2=v2`; integer-looking values become ints."""
    options: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise StartupError(f"INVALID_ARGUMENT: malformed grpc channel argument: {item}")
        try:
            options.append((key, int(value)))
        except ValueError:
            options.append((key, value))
    return options


def _model_server_config(args: argparse.Namespace) -> model_server_config_pb2.ModelServerConfig:
    from tensorflow_serving.config import model_server_config_pb2

    from xception_serving.config.files import ConfigError, read_model_server_config

    if args.model_config_file:
        try:
            return read_model_server_config(args.model_config_file)
        except ConfigError as err:
            raise StartupError(f"INVALID_ARGUMENT: {err}") from err
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = args.model_name
    model.base_path = args.model_base_path
    model.model_platform = "tensorflow"
    return config


def _setup_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s.%(msecs)03d: %(levelname).1s %(name)s] %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    # TF's own C++/Python chatter is not ours to print at INFO (tf_startup: its start-up lines).
    os.environ.setdefault(tf_startup.LEVEL_VAR, tf_startup.DEFAULT_LEVEL)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def serve(args: argparse.Namespace) -> int:
    """Run the server until a stop signal. Returns the process exit code."""
    from xception_serving import session_config, tracing
    from xception_serving.batching import BatchingOptions
    from xception_serving.config import files as config_files
    from xception_serving.core import ServingCore
    from xception_serving.errors import ServingError
    from xception_serving.grpc_server import GrpcServer
    from xception_serving.metrics import Metrics

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("Received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        config = _model_server_config(args)
        batching = None
        if args.enable_batching:
            params = config_files.BatchingParameters()
            if args.batching_parameters_file:
                params = config_files.read_batching_parameters(args.batching_parameters_file)
            batching = BatchingOptions.from_proto(params)
        ssl = config_files.read_ssl_config(args.ssl_config_file) if args.ssl_config_file else None
        monitoring_path = None
        if args.monitoring_config_file:
            monitoring = config_files.read_monitoring_config(args.monitoring_config_file)
            monitoring_path = config_files.prometheus_path(monitoring)
        try:
            interceptors = tracing.server_interceptors()  # before loading: bad OTEL_* fails fast
        except tracing.TracingConfigError as err:
            raise StartupError(f"INVALID_ARGUMENT: {err}") from err
        sessions = session_config.session_options(
            saved_model_tags=args.saved_model_tags,
            session_config_file=args.tensorflow_session_config_file,
            session_parallelism=args.tensorflow_session_parallelism,
            intra_op_parallelism=args.tensorflow_intra_op_parallelism,
            inter_op_parallelism=args.tensorflow_inter_op_parallelism,
            mixed_precision=args.mixed_precision,
            xla_cpu_compilation_enabled=args.xla_cpu_compilation_enabled,
            xla_gpu_compilation_enabled=args.xla_gpu_compilation_enabled,
        )
    except config_files.ConfigError as err:
        raise StartupError(f"INVALID_ARGUMENT: {err}") from err

    warning = session_config.mixed_precision_warning(args.mixed_precision)
    if warning:
        log.warning("%s", warning)
    metrics = Metrics()
    core = ServingCore(
        metrics=metrics,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        max_num_load_retries=args.max_num_load_retries,
        load_retry_interval_seconds=args.load_retry_interval_micros / 1e6,
        enable_model_warmup=args.enable_model_warmup,
        num_request_iterations_for_warmup=args.num_request_iterations_for_warmup,
        batching=batching,
        session_options=sessions,
    )
    # Loading happens before any port opens, as in TF Serving; a stop signal aborts it.
    loader_error: list[BaseException] = []

    def load() -> None:
        try:
            core.load(config)
        except BaseException as err:
            loader_error.append(err)

    loader = threading.Thread(target=load, name="initial-load", daemon=True)
    loader.start()
    while loader.is_alive() and not stop.is_set():
        loader.join(0.2)
    if stop.is_set() and loader.is_alive():
        core.stop(5)
        return 0
    if loader_error:
        failure = loader_error[0]
        core.stop(5)
        if isinstance(failure, ServingError):
            raise StartupError(f"{failure.code.name}: {failure.message}") from failure
        raise StartupError(f"UNKNOWN: {failure}") from failure
    if args.model_config_file:
        core.watch_config_file(
            Path(args.model_config_file), args.model_config_file_poll_wait_seconds
        )

    try:
        grpc_server = GrpcServer(
            core,
            host=args.host,
            port=args.port,
            ssl=ssl,
            max_workers=args.grpc_max_threads,
            extra_options=channel_arguments(args.grpc_channel_arguments),
            interceptors=interceptors,
        )
        if args.grpc_socket_path:
            grpc_server.add_unix_socket(args.grpc_socket_path)
    except (OSError, RuntimeError) as err:
        core.stop(5)
        raise StartupError(f"UNAVAILABLE: {err}") from err
    core.manager.availability_changed = grpc_server.set_serving
    grpc_server.start()
    grpc_server.set_serving(core.manager.any_available())
    log.info("Running gRPC ModelServer at %s:%d ...", args.host, grpc_server.port)

    rest_server = None
    if args.rest_api_port > 0:
        if args.rest_api_port == args.port:
            log.error(
                "--rest_api_port cannot be the same as --port. Please use a different port "
                "for HTTP/REST API. Skipped exporting HTTP/REST API."
            )
        else:
            rest_server = _start_rest(core, metrics, args, monitoring_path)
    # Readiness line for tools that wait on the log (same wording idea as TF Serving).
    print(READY_LINE, flush=True)

    stop.wait()
    grpc_server.set_serving(False)
    if rest_server is not None:
        rest_server.stop(SHUTDOWN_GRACE_SECONDS)
    grpc_server.stop(SHUTDOWN_GRACE_SECONDS)
    core.stop(SHUTDOWN_GRACE_SECONDS)
    log.info("Server stopped")
    return 0


def _start_rest(
    core: ServingCore, metrics: Metrics, args: argparse.Namespace, path: str | None
) -> RestServer | None:
    try:
        from xception_serving.http_server import RestLimits
        from xception_serving.rest import RestServer
    except ImportError as err:
        log.error("HTTP/REST API is not available in this build: %s", err)
        return None
    rest = RestServer(
        core,
        metrics,
        host=args.host,
        port=args.rest_api_port,
        monitoring_path=path,
        num_threads=args.rest_api_num_threads or None,
        timeout_s=args.rest_api_timeout_in_ms / 1000,
        limits=RestLimits(
            max_connections=args.rest_api_max_connections,
            request_read_timeout_s=args.rest_api_request_read_timeout_in_ms / 1000,
        ),
    )
    rest.start()
    log.info("Exporting HTTP/REST API at:%s:%d ...", args.host, rest.port)
    return rest


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # tensorflow_model_server prints leftovers and carries on; unknown flags are an error here
        # only when they look like flags we would silently ignore.
        parser.error(f"unknown argument: {' '.join(unknown)}")
    # TensorFlow's C++ start-up lines stay out of our log (TF_CPP_MIN_LOG_LEVEL=0 keeps them).
    tf_startup.install()
    if args.version:
        import tensorflow as tf

        from xception_serving import __name__ as package

        print(f"TensorFlow ModelServer: {package} (local)\nTensorFlow Library: {tf.__version__}")
        return 0
    _setup_logging()
    try:
        _check_flags(args)  # before importing TensorFlow: flag mistakes fail fast
        check_ports(args)  # and a taken port, before minutes of model loading
        return serve(args)
    except StartupError as err:
        print(f"Failed to start server. Error: {err}", file=sys.stderr, flush=True)
        return STARTUP_FAILURE_EXIT
    except grpc.RpcError as err:  # pragma: no cover - defensive
        print(f"Failed to start server. Error: {err}", file=sys.stderr, flush=True)
        return STARTUP_FAILURE_EXIT
