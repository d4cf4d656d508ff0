"""Run ``xception-serve`` as a child process: the one helper behind `make run`, the benchmark
and the tests.

A server is ready when it prints ``READY_LINE`` (after every port serves and every model has
loaded, as TF Serving's "Exporting HTTP/REST API" line comes last). It is stopped with SIGTERM,
TF Serving's graceful shutdown, and killed if it has not exited in time. A server that dies or
never becomes ready raises ``ServerStartError`` with its exit code and the end of its log.

Standard library only (and the server's stdlib-only ``options``): importing this module loads
no TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from xception_serving.options import BIND_FAILURE, READY_LINE

LOOPBACK = "127.0.0.1"

StartProblem = Literal["exited", "bind", "timeout"]


class ServerStartError(RuntimeError):
    """The server died or was not ready in time; ``reason`` says which, ``log_tail`` why."""

    def __init__(self, reason: StartProblem, message: str, log_tail: str) -> None:
        super().__init__(message)
        self.reason: StartProblem = reason
        self.log_tail = log_tail


def free_port(host: str = LOOPBACK) -> int:
    """A port free now (another process can take it before the server binds: see bind_retries)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ServerSpec:
    """What a child server serves, and how: everything but its ports."""

    model_name: str | None = None
    model_base_path: str | os.PathLike[str] | None = None
    model_config_file: str | os.PathLike[str] | None = None
    rest: bool = False  # also serve REST, on a free port
    extra_args: Sequence[str] = ()  # more of TF Serving's flags
    env: Mapping[str, str] | None = None  # added to this process's environment


def server_command(spec: ServerSpec, *, grpc_port: int, rest_port: int | None) -> list[str]:
    """``python -m xception_serving`` with TF Serving's flags, under this interpreter."""
    command = [sys.executable, "-m", "xception_serving", f"--port={grpc_port}"]
    if rest_port is not None:
        command.append(f"--rest_api_port={rest_port}")
    if spec.model_config_file is not None:
        command.append(f"--model_config_file={spec.model_config_file}")
    if spec.model_base_path is not None:
        command.append(f"--model_base_path={spec.model_base_path}")
        if spec.model_name is not None:
            command.append(f"--model_name={spec.model_name}")
    command.extend(spec.extra_args)
    return command


@dataclass
class ServerProcess:
    command: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path  # the server's stdout and stderr
    grpc_target: str  # "127.0.0.1:<port>"
    rest_url: str | None  # "http://127.0.0.1:<port>" when started with REST

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def last_error(self) -> str:
        """The log line most likely to say why the server failed."""
        lines = [line.strip() for line in self.log_text().splitlines() if line.strip()]
        for line in reversed(lines):
            if "Failed to start server" in line or " E " in line or "Error" in line:
                return line
        return lines[-1] if lines else "no output"

    def wait_ready(self, timeout: float) -> None:
        """Block until the ready line; ServerStartError if the server exits or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            if READY_LINE in text:
                return
            code = self.process.poll()
            if code is not None:
                reason: StartProblem = "bind" if BIND_FAILURE in text else "exited"
                raise ServerStartError(
                    reason,
                    f"xception-serve exited with {code}: {self.last_error()}",
                    self.log_tail(),
                )
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    "timeout", f"xception-serve not ready after {timeout:g} s", self.log_tail()
                )
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig``, wait up to ``timeout`` s (then SIGKILL); the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)


def launch(log_path: Path, spec: ServerSpec, *, grpc_port: int | None = None) -> ServerProcess:
    """Start the server on loopback (free ports unless ``grpc_port``); does not wait for it."""
    grpc_port = grpc_port or free_port()
    rest_port = free_port() if spec.rest else None
    command = server_command(spec, grpc_port=grpc_port, rest_port=rest_port)
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(spec.env or {})}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environment
        )
    return ServerProcess(
        command=command,
        process=process,
        log_path=log_path,
        grpc_target=f"{LOOPBACK}:{grpc_port}",
        rest_url=f"http://{LOOPBACK}:{rest_port}" if rest_port else None,
    )


@contextlib.contextmanager
def running_server(
    spec: ServerSpec,
    *,
    grpc_port: int | None = None,
    ready_timeout: float = 600.0,
    log_dir: Path | None = None,
    bind_retries: int = 2,
) -> Iterator[ServerProcess]:
    """A ready server for the block, stopped (SIGTERM) when it exits.

    A free port can be taken between probing and binding, so a bind failure on a probed port is
    retried on new ones; with a fixed ``grpc_port`` it is not. Without ``log_dir`` the log lives
    in a temporary directory removed afterwards.
    """
    own_dir = log_dir is None
    directory = Path(tempfile.mkdtemp(prefix="xception-serve-")) if log_dir is None else log_dir
    server: ServerProcess | None = None
    try:
        for attempt in range(bind_retries + 1):
            server = launch(directory / f"server-{attempt}.log", spec, grpc_port=grpc_port)
            try:
                server.wait_ready(ready_timeout)
                break
            except ServerStartError as error:
                server.stop(signal.SIGKILL, timeout=10)
                if error.reason == "bind" and grpc_port is None and attempt < bind_retries:
                    continue
                raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.stop()
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)
