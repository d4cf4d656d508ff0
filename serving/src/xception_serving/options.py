"""The server's startup rules, in the standard library only: flag checks, port probes, and the
lines other processes read from the server's output.

Nothing here imports TensorFlow or gRPC, so a flag mistake or a taken port fails in milliseconds,
before minutes of model loading, and the process harness (``testing.process``) shares the ready
and bind-failure wording without importing the server.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
from typing import Final

READY_LINE: Final = "xception-serve: ready"  # printed to stdout once every port serves
BIND_FAILURE: Final = "could not bind"  # in the startup error when a port is taken
STARTUP_FAILURE_EXIT: Final = 255  # tensorflow_model_server's exit code for a failed start
SHUTDOWN_GRACE_SECONDS: Final = 30.0

# server.cc's thread-flag rule: flag mistakes fail before TF loads; session_config applies it too.
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


def check_flags(args: argparse.Namespace) -> None:
    """TF Serving's flag rules (server.cc), worded as its startup errors."""
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
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
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
    minutes to load; the port is known now). The wording holds BIND_FAILURE, which the process
    harness looks for."""
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
