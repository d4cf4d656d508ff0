"""`make run`: export if needed, serve locally, classify one image with the client, stop.

    python -m xception_serving.demo --weights random --model-base-path models/xception \\
        --model-name xception --image samples/cat.jpg

Every step is the real tool: `xception-export` (only when the base path has no version yet), the
`xception-serve` server on free loopback ports, and `xception_client.Client` for the request.
Any failure ends with one `demo: error: ...` line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from xception_serving.cli import READY_LINE

READY_TIMEOUT_S = 600.0  # a full-size Xception load plus warmup on a busy CPU


class DemoError(Exception):
    pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Written by xception-export into every version (read here as plain JSON: no export import).
EXPORT_METADATA = Path("assets.extra") / "export_metadata.json"


def _latest_version(base: Path) -> Path | None:
    """The version the server will serve (the highest numeric one), if any."""
    if not base.is_dir():
        return None
    versions = [c for c in base.iterdir() if c.name.isdigit() and (c / "saved_model.pb").exists()]
    return max(versions, key=lambda c: int(c.name)) if versions else None


def describe_version(version_dir: Path, requested_weights: str) -> list[str]:
    """What the demo says about the version it serves: its weights, a warning for untrained
    ones, and how to re-export when they are not the weights asked for."""
    path = version_dir / EXPORT_METADATA
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"demo: serving {version_dir} (no readable {EXPORT_METADATA}: not made by "
                "xception-export, so its weights are unknown)"]
    weights = str(metadata.get("weights", "unknown"))
    lines = [f"demo: serving {version_dir} (weights: {weights}, exported "
             f"{metadata.get('created', '?')})"]
    if metadata.get("untrained"):
        lines.append("demo: WARNING: this version has untrained --weights random: its "
                     "predictions are meaningless (plumbing only)")
    asked = requested_weights
    if asked not in ("imagenet", "random"):
        asked = str(Path(asked).resolve())
    if metadata.get("source") == "keras.applications.Xception" and asked != weights:
        lines.append(
            f"demo: WEIGHTS={requested_weights} was asked for, but this version holds {weights}; "
            f"to serve {requested_weights}, export the next version: make export "
            f"WEIGHTS={requested_weights} MODEL_BASE_PATH={version_dir.parent} (then make run "
            "serves it)"
        )
    return lines


def _export(weights: str, base: Path) -> None:
    print(f"demo: no version under {base}; exporting (weights={weights})", file=sys.stderr)
    command = [sys.executable, "-m", "xception_export", "--weights", weights,
               "--model-base-path", str(base)]  # fmt: skip
    result = subprocess.run(command, check=False, stdout=sys.stderr)
    if result.returncode != 0:
        raise DemoError(f"export failed (exit {result.returncode}): {' '.join(command)}")


def _last_error(log: str) -> str:
    lines = [line for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Failed to start server" in line or " E " in line or "Error" in line:
            return line.strip()
    return lines[-1].strip() if lines else "no output"


def _start_server(name: str, base: Path, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "xception_serving", f"--port={port}",
               f"--model_name={name}", f"--model_base_path={base}"]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        if READY_LINE in text:
            return process
        if process.poll() is not None:
            raise DemoError(f"server exited with {process.returncode}: {_last_error(text)}")
        time.sleep(0.2)
    _stop(process)
    raise DemoError(f"server not ready after {READY_TIMEOUT_S:.0f}s (log: {log_path})")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _classify(target: str, name: str, image: Path, top_k: int) -> None:
    from xception_client import Client

    with Client(target, model_name=name, timeout=120) as client:
        predictions = client.predict(str(image), top_k=top_k)
    print(f"{image}")
    print(f"  {'rank':>4}  {'score':>7}  label")
    for rank, p in enumerate(predictions, 1):
        key = f" ({p.key})" if p.key else ""
        print(f"  {rank:>4}  {p.score:7.4f}  {p.label}{key}")


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xception_serving.demo", description=__doc__)
    parser.add_argument("--weights", default="imagenet", help="for xception-export if needed")
    parser.add_argument("--model-base-path", default="models/xception", type=Path)
    parser.add_argument("--model-name", default="xception")
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    base = args.model_base_path.resolve()
    if not args.image.is_file():
        raise DemoError(f"image not found: {args.image}")
    if _latest_version(base) is None:
        _export(args.weights, base)
    version_dir = _latest_version(base)
    if version_dir is None:
        raise DemoError(f"the export wrote no version under {base}")
    about = describe_version(version_dir, args.weights)
    for line in about:
        print(line, file=sys.stderr)
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="xception-demo-") as tmp:
        log_path = Path(tmp) / "server.log"
        print(f"demo: starting xception-serve on 127.0.0.1:{port} ...", file=sys.stderr)
        process = _start_server(args.model_name, base, port, log_path)
        try:
            _classify(f"127.0.0.1:{port}", args.model_name, args.image, args.top_k)
            # Said again under the table, where a reader of the scores looks.
            for line in about:
                if "WARNING" in line:
                    print(line, file=sys.stderr)
        except Exception as err:
            raise DemoError(f"classification failed: {err}") from err
        finally:
            _stop(process)
        if process.returncode not in (0, None):
            raise DemoError(f"server exited with {process.returncode} on SIGTERM")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(argv)
    except DemoError as err:
        print(f"demo: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
