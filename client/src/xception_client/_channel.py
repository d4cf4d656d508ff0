"""Channel construction shared by Client and AsyncClient: target parsing, credentials, options.

Defaults, and why:

- Retries: a gRPC service-config ``retryPolicy`` for UNAVAILABLE only (never INVALID_ARGUMENT or
  DEADLINE_EXCEEDED), so a server restart or a pod going away is retried by gRPC itself with
  jittered exponential backoff; gRPC caps attempts at 5.
- Reconnect backoff capped at 1 s (gRPC's default grows to 120 s), so a restarted server is found
  again within the retry window.
- ``round_robin`` load balancing: with ``dns:///headless-service:8500`` or ``"h1:p1,h2:p2"`` every
  address gets a sub-channel and calls rotate over them (a plain Kubernetes Service would pin a
  long-lived HTTP/2 connection to one pod).
- Keepalive pings every 60 s while calls are in flight (not when idle: TF Serving's gRPC server
  rejects idle pings more frequent than 5 min with GOAWAY "too_many_pings").
- Message limits raised from gRPC's 4 MiB to TF Serving's own server limit (2 GiB - 1), so large
  batches and full probability outputs fit.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from . import _wire

__all__ = ["TLS", "ChannelConfig", "ChannelOption", "channel_options", "resolve_target"]

ChannelOption: TypeAlias = tuple[str, Any]

MAX_MESSAGE_BYTES = 2**31 - 1  # TF Serving's server-side limit (ServerBuilder::SetMaxMessageSize)
MAX_RETRY_ATTEMPTS = 5  # gRPC clamps maxAttempts to 5


@dataclass(frozen=True, slots=True)
class TLS:
    """TLS settings. Each certificate is PEM bytes or a path to a PEM file.

    ``TLS()`` verifies the server against the system's roots; ``root_certificates`` pins a CA;
    ``certificate_chain`` + ``private_key`` present a client certificate (mutual TLS);
    ``server_name`` overrides the name checked against the server's certificate.
    """

    root_certificates: bytes | str | os.PathLike[str] | None = None
    certificate_chain: bytes | str | os.PathLike[str] | None = None
    private_key: bytes | str | os.PathLike[str] | None = None
    server_name: str | None = None

    @classmethod
    def from_flags(
        cls,
        tls: bool,
        ca_cert: bytes | str | os.PathLike[str] | None,
        client_cert: bytes | str | os.PathLike[str] | None,
        client_key: bytes | str | os.PathLike[str] | None,
    ) -> TLS | None:
        """The commands' --tls, --ca-cert, --client-cert and --client-key: TLS when any of
        --tls, a CA or a client certificate asks for it, else None (plaintext)."""
        if not (tls or ca_cert or client_cert):
            return None
        return cls(root_certificates=ca_cert, certificate_chain=client_cert, private_key=client_key)

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("mutual TLS needs both certificate_chain and private_key")
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(self.root_certificates),
            private_key=_pem(self.private_key),
            certificate_chain=_pem(self.certificate_chain),
        )


def _pem(value: bytes | str | os.PathLike[str] | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Everything needed to open a channel; built once per client, channel opened lazily."""

    target: str
    options: tuple[ChannelOption, ...]
    credentials: grpc.ChannelCredentials | None
    compression: grpc.Compression | None


def resolve_target(target: str) -> str:
    """Turn the user's target into a gRPC target URI.

    ``host:port`` and any URI (``dns:///...``, ``unix:...``, ``ipv4:...``) pass through. A
    comma-separated list ``"h1:p1,h2:p2"`` becomes a static ``ipv4:`` / ``ipv6:`` multi-address
    URI; host names in it are resolved once, here.
    """
    target = target.strip()
    if not target:
        raise ValueError(
            "target is empty; expected 'host:port', 'dns:///host:port' or 'h1:p1,h2:p2'"
        )
    if "," not in target:
        return target
    if "://" in target.split(",", 1)[0] or target.startswith(("ipv4:", "ipv6:", "unix:")):
        return target  # already a URI; gRPC parses multi-address ipv4:/ipv6: lists itself
    v4: list[str] = []
    v6: list[str] = []
    for part in (p.strip() for p in target.split(",")):
        host, port = _split_host_port(part, target)
        for family, address in _addresses(host, port):
            (v6 if family == socket.AF_INET6 else v4).append(address)
    if v4 and v6:
        raise ValueError(
            f"target {target!r} mixes IPv4 and IPv6 addresses; gRPC needs one family per list"
        )
    return f"ipv6:{','.join(v6)}" if v6 else f"ipv4:{','.join(v4)}"


def _split_host_port(part: str, target: str) -> tuple[str, int]:
    host, sep, port = part.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target {target!r}: expected 'host:port' items, received {part!r}")
    return host.strip("[]"), int(port)


def _addresses(host: str, port: int) -> list[tuple[int, str]]:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise ValueError(f"cannot resolve {host!r} in the target list: {error}") from error
        seen = {(info[0], str(info[4][0])) for info in infos}
        return [
            (fam, f"[{ip}]:{port}" if fam == socket.AF_INET6 else f"{ip}:{port}")
            for fam, ip in sorted(seen)
        ]
    if ip.version == 6:
        return [(socket.AF_INET6, f"[{ip}]:{port}")]
    return [(socket.AF_INET, f"{ip}:{port}")]


def service_config(retries: int) -> str:
    """The JSON service config: round-robin, and a retry policy for UNAVAILABLE only."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retries > 0:
        config["methodConfig"] = [
            {
                "name": [{"service": s} for s in _wire.SERVICES],
                "retryPolicy": {
                    "maxAttempts": min(retries + 1, MAX_RETRY_ATTEMPTS),
                    "initialBackoff": "0.2s",
                    "maxBackoff": "2s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    return json.dumps(config)


def channel_options(retries: int, extra: Sequence[ChannelOption] = ()) -> tuple[ChannelOption, ...]:
    """Default channel arguments; ``extra`` entries override defaults with the same key."""
    defaults: dict[str, Any] = {
        "grpc.service_config": service_config(retries),
        "grpc.enable_retries": 1 if retries > 0 else 0,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.keepalive_time_ms": 60_000,
        "grpc.keepalive_timeout_ms": 20_000,
        "grpc.keepalive_permit_without_calls": 0,
        "grpc.http2.max_pings_without_data": 0,
        "grpc.initial_reconnect_backoff_ms": 200,
        "grpc.min_reconnect_backoff_ms": 200,
        "grpc.max_reconnect_backoff_ms": 1_000,
    }
    defaults.update(dict(extra))
    return tuple(defaults.items())


_COMPRESSION = {"gzip": grpc.Compression.Gzip, "deflate": grpc.Compression.Deflate}


def make_config(
    target: str,
    *,
    retries: int,
    tls: bool | TLS | None,
    compression: str | None,
    extra_options: Sequence[ChannelOption],
) -> ChannelConfig:
    if retries < 0:
        raise ValueError(f"retries must be >= 0; received: retries={retries}")
    if compression is not None and compression not in _COMPRESSION:
        raise ValueError(
            f"compression must be None, 'gzip' or 'deflate'; received: compression={compression!r}"
        )
    credentials: grpc.ChannelCredentials | None
    options = list(channel_options(retries, extra_options))
    if tls is True:
        tls = TLS()
    if isinstance(tls, TLS):
        credentials = tls.credentials()
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
    else:
        credentials = None
    return ChannelConfig(
        target=resolve_target(target),
        options=tuple(options),
        credentials=credentials,
        compression=_COMPRESSION[compression] if compression else None,
    )


def open_channel(config: ChannelConfig) -> grpc.Channel:
    if config.credentials is not None:
        return grpc.secure_channel(
            config.target,
            config.credentials,
            options=config.options,
            compression=config.compression,
        )
    return grpc.insecure_channel(
        config.target, options=config.options, compression=config.compression
    )


def open_aio_channel(config: ChannelConfig) -> grpc.aio.Channel:
    if config.credentials is not None:
        return grpc.aio.secure_channel(
            config.target,
            config.credentials,
            options=config.options,
            compression=config.compression,
        )
    return grpc.aio.insecure_channel(
        config.target, options=config.options, compression=config.compression
    )
