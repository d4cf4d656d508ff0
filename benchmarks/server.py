"""Start the local server (`python -m xception_serving`) for the benchmark, loopback only.

Two servers are started at once (batching on and off) so their model loads overlap; a server is
ready when it prints the readiness line, and a server that died is reported with its log tail.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

READY_LINE = "xception-serve: ready"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    name: str
    grpc_target: str
    rest_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    command: list[str]

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, deadline: float) -> None:
        """Block until ready; RuntimeError with the log tail if it died or the deadline passed."""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} server exited with {self.process.returncode}: "
                    f"{' '.join(self.command)}\n{self.log_tail()}"
                )
            if READY_LINE in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} server not ready in time\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start(
    name: str,
    *,
    model_name: str,
    model_base_path: Path,
    log_dir: Path,
    batching_config: Path | None,
    extra_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> LocalServer:
    """Launch without waiting (call ``wait_ready``)."""
    grpc_port, rest_port = free_port(), free_port()
    command = [
        sys.executable, "-m", "xception_serving", "--host=127.0.0.1", f"--port={grpc_port}",
        f"--rest_api_port={rest_port}", f"--model_name={model_name}",
        f"--model_base_path={model_base_path}",
        # The benchmark model never changes while it runs; no point polling the directory.
        "--file_system_poll_wait_seconds=0",
    ]
    if batching_config is not None:
        command += ["--enable_batching=true", f"--batching_parameters_file={batching_config}"]
    command += list(extra_args)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"server-{name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    return LocalServer(
        name=name,
        grpc_target=f"127.0.0.1:{grpc_port}",
        rest_url=f"http://127.0.0.1:{rest_port}",
        process=process,
        log_path=log_path,
        command=command,
    )
