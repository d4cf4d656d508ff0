"""The limit subprocess and its protocol, both sides: ``LimitProcess`` is the parent's handle on
``python -m benchmarks.limit``, which loads the model once and then measures on demand.

Protocol, one JSON object per line. The child prints {"event": "loaded"} on stdout once the model
is loaded and warmed up; then each line the parent writes to its stdin is either a JSON list of
batch sizes (empty: all configured), answered by {"event": "result", ...}, or {"parity": true},
answered by {"event": "parity", "probabilities": [...]} for the benchmark JPEGs through the bytes
signature. The child exits at the end of its input. ``send_event`` and ``read_requests`` are the
child's half, the methods of ``LimitProcess`` the parent's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import SOURCE_ROOT

LIMIT_MODULE = "benchmarks.limit"
LOADED, RESULT, PARITY = "loaded", "result", "parity"


# -- the child's half ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One line from the parent: measure ``batch_sizes`` (empty: all configured) or, with
    ``parity``, answer the benchmark JPEGs' probabilities."""

    batch_sizes: tuple[int, ...] = ()
    parity: bool = False


def read_requests(lines: Iterable[str]) -> Iterator[Request]:
    for line in lines:
        request = json.loads(line)
        if isinstance(request, dict):
            yield Request(parity=bool(request.get(PARITY)))
        else:
            yield Request(batch_sizes=tuple(int(size) for size in request))


def send_event(name: str, **fields: Any) -> None:
    print(json.dumps({"event": name, **fields}), flush=True)


# -- the parent's half -----------------------------------------------------------------------------


class LimitProcess:
    """The limit as a child process: it loads the model at once, and measures on request."""

    def __init__(
        self,
        model_dir: Path,
        pixels: Path,
        batch_sizes: Sequence[int],
        seconds: float,
        jpegs: Path,
        log_path: Path,
        *,
        session_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``session_args`` are the child's Session flags (the server's, e.g. mixed precision)."""
        command = [
            sys.executable,
            "-m",
            LIMIT_MODULE,
            "--model-dir",
            str(model_dir),
            "--pixels",
            str(pixels),
            "--batch-sizes",
            ",".join(map(str, batch_sizes)),
            "--seconds",
            str(seconds),
            "--jpegs",
            str(jpegs),
            *session_args,
        ]
        self.stderr_path = log_path
        self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                cwd=SOURCE_ROOT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
            )

    def _send(self, request: object) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(json.dumps(request) + "\n")
        stdin.flush()

    def _event(self, name: str, timeout: float) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not box or not box[0]:
            self.process.kill()
            tail = self.stderr_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"limit process gave no {name!r} event\n{tail}")
        event: dict[str, Any] = json.loads(box[0])
        if event.get("event") != name:
            raise RuntimeError(f"limit process: expected {name!r}, got {event}")
        return event

    def wait_loaded(self, timeout: float) -> None:
        self._event(LOADED, timeout)

    def measure(self, timeout: float, batch_sizes: Sequence[int] = ()) -> dict[str, Any]:
        """One measuring pass (all configured batch sizes when empty)."""
        self._send(list(batch_sizes))
        return self._event(RESULT, timeout)

    def parity(self, timeout: float) -> list[list[float]]:
        """Probabilities of every benchmark JPEG through the bytes signature."""
        self._send({PARITY: True})
        probabilities: list[list[float]] = self._event(PARITY, timeout)["probabilities"]
        return probabilities

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
