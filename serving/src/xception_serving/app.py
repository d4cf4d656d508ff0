"""Assemble, run and stop the local server from its parsed flags (TF Serving's server.cc).

Startup follows TF Serving: read the config files, load every configured model (ports stay closed
until then; a stop signal aborts the load), open gRPC (and REST when --rest_api_port > 0), print
the ready line, and serve until SIGTERM/SIGINT, which stops accepting, lets in-flight requests
finish and returns 0. A problem is raised as ``StartupError`` worded as TF Serving's status.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xception_serving.options import (
    READY_LINE,
    SHUTDOWN_GRACE_SECONDS,
    StartupError,
    channel_arguments,
)

if TYPE_CHECKING:
    from xception_serving.api.grpc.server import GrpcServer
    from xception_serving.api.rest.handler import RestServer
    from xception_serving.observability.metrics import Metrics
    from xception_serving.runtime.batching import BatchingOptions
    from xception_serving.runtime.core import ServingCore
    from xception_serving.runtime.servable import SessionOptions

log = logging.getLogger("xception_serving")


@dataclass(frozen=True)
class _Settings:
    """What the flags' files say, read before any model loads so a bad file fails fast."""

    config: Any  # ModelServerConfig
    batching: BatchingOptions | None
    ssl: Any  # SSLConfig or None
    monitoring_path: str | None
    interceptors: list[Any]
    sessions: SessionOptions


def _model_server_config(args: argparse.Namespace) -> Any:
    from tensorflow_serving.config import model_server_config_pb2

    from xception_serving.config.files import read_model_server_config

    if args.model_config_file:
        return read_model_server_config(args.model_config_file)
    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add()
    model.name = args.model_name
    model.base_path = args.model_base_path
    model.model_platform = "tensorflow"
    return config


def _read_settings(args: argparse.Namespace) -> _Settings:
    from xception_serving.config import files as config_files
    from xception_serving.observability import tracing
    from xception_serving.runtime import session_config
    from xception_serving.runtime.batching import BatchingOptions

    try:
        batching = None
        if args.enable_batching:
            params = config_files.BatchingParameters()
            if args.batching_parameters_file:
                params = config_files.read_batching_parameters(args.batching_parameters_file)
            batching = BatchingOptions.from_proto(params)
        monitoring_path = None
        if args.monitoring_config_file:
            monitoring = config_files.read_monitoring_config(args.monitoring_config_file)
            monitoring_path = config_files.prometheus_path(monitoring)
        return _Settings(
            config=_model_server_config(args),
            batching=batching,
            ssl=config_files.read_ssl_config(args.ssl_config_file)
            if args.ssl_config_file
            else None,
            monitoring_path=monitoring_path,
            interceptors=tracing.server_interceptors(),  # bad OTEL_* variables fail here
            sessions=session_config.session_options(
                saved_model_tags=args.saved_model_tags,
                session_config_file=args.tensorflow_session_config_file,
                session_parallelism=args.tensorflow_session_parallelism,
                intra_op_parallelism=args.tensorflow_intra_op_parallelism,
                inter_op_parallelism=args.tensorflow_inter_op_parallelism,
                mixed_precision=args.mixed_precision,
                xla_cpu_compilation_enabled=args.xla_cpu_compilation_enabled,
                xla_gpu_compilation_enabled=args.xla_gpu_compilation_enabled,
            ),
        )
    except (config_files.ConfigError, tracing.TracingConfigError) as err:
        raise StartupError(f"INVALID_ARGUMENT: {err}") from err


def _load(core: ServingCore, config: Any, stop: threading.Event) -> bool:
    """Load every model before any port opens; False when a stop signal came first."""
    from xception_serving.runtime.errors import ServingError

    failures: list[BaseException] = []

    def load() -> None:
        try:
            core.load(config)
        except BaseException as err:
            failures.append(err)

    loader = threading.Thread(target=load, name="initial-load", daemon=True)
    loader.start()
    while loader.is_alive() and not stop.is_set():
        loader.join(0.2)
    if stop.is_set() and loader.is_alive():
        core.stop(5)
        return False
    if failures:
        core.stop(5)
        failure = failures[0]
        if isinstance(failure, ServingError):
            raise StartupError(f"{failure.code.name}: {failure.message}") from failure
        raise StartupError(f"UNKNOWN: {failure}") from failure
    return True


def _start_grpc(core: ServingCore, args: argparse.Namespace, settings: _Settings) -> GrpcServer:
    from xception_serving.api.grpc.server import GrpcServer

    try:
        server = GrpcServer(
            core,
            host=args.host,
            port=args.port,
            ssl=settings.ssl,
            max_workers=args.grpc_max_threads,
            extra_options=channel_arguments(args.grpc_channel_arguments),
            interceptors=settings.interceptors,
        )
        if args.grpc_socket_path:
            server.add_unix_socket(args.grpc_socket_path)
    except (OSError, RuntimeError) as err:
        core.stop(5)
        raise StartupError(f"UNAVAILABLE: {err}") from err
    core.on_availability_changed(server.set_serving)
    server.start()
    server.set_serving(core.any_available())
    log.info("Running gRPC ModelServer at %s:%d ...", args.host, server.port)
    return server


def _start_rest(
    core: ServingCore, metrics: Metrics, args: argparse.Namespace, path: str | None
) -> RestServer | None:
    from xception_serving.api.rest.handler import RestServer
    from xception_serving.api.rest.http_server import RestLimits

    if args.rest_api_port <= 0:
        return None
    if args.rest_api_port == args.port:
        log.error(
            "--rest_api_port cannot be the same as --port. Please use a different port "
            "for HTTP/REST API. Skipped exporting HTTP/REST API."
        )
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


def _stop_event() -> threading.Event:
    """Set by SIGTERM or SIGINT: TF Serving's graceful shutdown."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("Received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def run(args: argparse.Namespace) -> int:
    """Run the server until a stop signal. Returns the process exit code."""
    from xception_serving.observability.metrics import Metrics
    from xception_serving.runtime import session_config
    from xception_serving.runtime.core import ServingCore

    stop = _stop_event()
    settings = _read_settings(args)
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
        batching=settings.batching,
        session_options=settings.sessions,
    )
    if not _load(core, settings.config, stop):
        return 0
    if args.model_config_file:
        core.watch_config_file(
            Path(args.model_config_file), args.model_config_file_poll_wait_seconds
        )
    grpc_server = _start_grpc(core, args, settings)
    rest_server = _start_rest(core, metrics, args, settings.monitoring_path)
    print(READY_LINE, flush=True)  # for tools that wait on the log (testing.process)

    stop.wait()
    grpc_server.set_serving(False)
    if rest_server is not None:
        rest_server.stop(SHUTDOWN_GRACE_SECONDS)
    grpc_server.stop(SHUTDOWN_GRACE_SECONDS)
    core.stop(SHUTDOWN_GRACE_SECONDS)
    log.info("Server stopped")
    return 0
