"""`xception-serve`: the local server's command, with tensorflow_model_server's flag names.

It only parses: ``options`` checks the flags and ports (standard library, before TensorFlow
loads), ``app`` assembles and runs the server. A startup failure prints
`Failed to start server. Error: <status>` and exits 255, as tensorflow_model_server does. Unlike
TF Serving, a port another process holds fails the start before any model loads, not after.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import grpc
from xception_contract import tf_startup

from xception_serving import app, options

_Group = argparse._ArgumentGroup  # what add_argument_group returns


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


def _flag_bool(group: _Group, name: str, default: bool, help_text: str) -> None:
    """A boolean flag as TF Serving's: `--flag=false`, `--flag false` or a bare `--flag`."""
    group.add_argument(
        f"--{name}", type=_bool, nargs="?", const=True, default=default, help=help_text
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xception-serve",
        description="Local server answering as TensorFlow Serving does (gRPC + REST), using "
        "tensorflow_model_server's flags. `--flag=value` and `--flag value` both work; boolean "
        "flags also accept a bare `--flag` (true).",
        allow_abbrev=False,
    )
    _network_flags(parser.add_argument_group("network"))
    _model_flags(parser.add_argument_group("models"))
    batching = parser.add_argument_group("batching")
    _flag_bool(batching, "enable_batching", False, "dynamic batching of concurrent requests")
    batching.add_argument("--batching_parameters_file", default="")
    monitoring = parser.add_argument_group("monitoring")
    monitoring.add_argument("--monitoring_config_file", default="")
    _runtime_flags(parser.add_argument_group("TensorFlow runtime"))
    parser.add_argument("--version", action="store_true", help="print versions and exit")
    return parser


def _network_flags(net: _Group) -> None:
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
        "--rest_api_max_connections",
        type=_positive_int,
        default=100,
        help="local-server extra: open REST connections; at the limit the slowest unfinished "
        "or longest idle one makes room, or the caller gets 503 when all are in service",
    )
    net.add_argument(
        "--rest_api_request_read_timeout_in_ms",
        type=_positive_int,
        default=60000,
        help="local-server extra: a REST request's head and body must arrive within this "
        "(from its first byte; not restarted by each byte), else 408 and close",
    )
    _flag_bool(net, "enable_profiler", True, "accepted for compatibility; no profiler service")
    _flag_bool(
        net,
        "enable_grpc_healthcheck_service",
        False,
        "accepted for compatibility; the local server always registers grpc.health.v1.Health",
    )


def _model_flags(models: _Group) -> None:
    models.add_argument("--model_name", default="default", help="single-model name")
    models.add_argument("--model_base_path", default="", help="single-model base path")
    models.add_argument("--model_config_file", default="", help="text ModelServerConfig")
    models.add_argument("--model_config_file_poll_wait_seconds", type=int, default=0)
    models.add_argument("--file_system_poll_wait_seconds", type=int, default=1)
    models.add_argument("--max_num_load_retries", type=int, default=5)
    models.add_argument("--load_retry_interval_micros", type=int, default=60_000_000)
    _flag_bool(
        models, "enable_model_warmup", True, "replay assets.extra/tf_serving_warmup_requests"
    )
    models.add_argument("--num_request_iterations_for_warmup", type=int, default=1)
    models.add_argument(
        "--saved_model_tags",
        default="serve",
        help="comma-separated tags of the MetaGraphDef to load (default serve)",
    )


def _runtime_flags(runtime: _Group) -> None:
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
    _flag_bool(
        runtime,
        "xla_cpu_compilation_enabled",
        False,
        "allow XLA:CPU JIT for models that ask for it (jit_compile); off, they fail",
    )
    _flag_bool(runtime, "xla_gpu_compilation_enabled", False, "allow XLA:CPU and XLA:GPU JIT")


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
        options.check_flags(args)  # before importing TensorFlow: flag mistakes fail fast
        options.check_ports(args)  # and a taken port, before minutes of model loading
        return app.run(args)
    except options.StartupError as err:
        print(f"Failed to start server. Error: {err}", file=sys.stderr, flush=True)
        return options.STARTUP_FAILURE_EXIT
    except grpc.RpcError as err:  # pragma: no cover - defensive
        print(f"Failed to start server. Error: {err}", file=sys.stderr, flush=True)
        return options.STARTUP_FAILURE_EXIT
