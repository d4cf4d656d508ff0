"""The parent's side of benchmarks/limit.py: a child that loads the model, then measures on demand.

Protocol (one JSON object per stdout line): the child prints {"event": "loaded"} once the model is
loaded and warmed up; then each line written to its stdin is either a JSON list of batch sizes
(empty: all configured) answered by {"event": "result", ...}, or {"parity": true} answered by
{"event": "parity", "probabilities": [...]} for the benchmark JPEGs through the bytes signature.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LIMIT_SCRIPT = Path(__file__).resolve().parent / "limit.py"


class LimitProcess:
    """benchmarks/limit.py as a child: load now, measure on go()."""

    def __init__(self, model_dir: Path, pixels: Path, batch_sizes: Sequence[int], seconds: float,
                 jpegs: Path, log_path: Path, *, session_args: Sequence[str] = (),
                 env: Mapping[str, str] | None = None):
        """``session_args`` are limit.py's Session flags (the server's, e.g. mixed precision)."""
        command = [sys.executable, str(LIMIT_SCRIPT), "--model-dir", str(model_dir),
                   "--pixels", str(pixels), "--batch-sizes", ",".join(map(str, batch_sizes)),
                   "--seconds", str(seconds), "--jpegs", str(jpegs), *session_args]
        self.stderr_path = log_path
        self.stderr_path.parent.mkdir(parents=True, exist_ok=True)
        with self.stderr_path.open("wb") as err:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
            )

    def _event(self, name: str, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.process.stdout.readline()),
                                  daemon=True)  # type: ignore[union-attr]
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
        self._event("loaded", timeout)

    def measure(self, timeout: float, batch_sizes: Sequence[int] = ()) -> dict[str, Any]:
        """One measuring pass (all configured batch sizes when empty)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(list(batch_sizes)) + "\n")
        self.process.stdin.flush()
        return self._event("result", timeout)

    def parity(self, timeout: float) -> list[list[float]]:
        """Probabilities of every benchmark JPEG through the bytes signature."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"parity": True}) + "\n")
        self.process.stdin.flush()
        probabilities: list[list[float]] = self._event("parity", timeout)["probabilities"]
        return probabilities

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
