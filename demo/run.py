"""`make run`: export if needed, serve locally, classify one image with the client, stop.

    python -m demo.run --weights random --model-base-path models/xception \\
        --model-name xception --image samples/cat.jpg

Every step is the real tool: `xception-export` (only when the base path has no version yet), the
`xception-serve` server on a free loopback port (`xception_serving.testing.process`, the helper
the tests and the benchmark use too), and `xception_client.Client` for the request. It lives
outside the three packages because it uses all three. Any failure ends with one
`demo: error: ...` line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from xception_client import Client
from xception_contract import layout
from xception_serving.testing.process import ServerSpec, ServerStartError, running_server

READY_TIMEOUT_S = 600.0  # a full-size Xception load plus warmup on a busy CPU


class DemoError(Exception):
    pass


EXPORT_METADATA = Path(layout.EXPORT_METADATA_RELPATH)  # read as plain JSON: no export import


def describe_version(version_dir: Path, requested_weights: str) -> list[str]:
    """What the demo says about the version it serves: its weights, a warning for untrained
    ones, and how to re-export when they are not the weights asked for."""
    path = version_dir / EXPORT_METADATA
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [
            f"demo: serving {version_dir} (no readable {EXPORT_METADATA}: not made by "
            "xception-export, so its weights are unknown)"
        ]
    weights = str(metadata.get("weights", "unknown"))
    lines = [
        f"demo: serving {version_dir} (weights: {weights}, exported {metadata.get('created', '?')})"
    ]
    if metadata.get("untrained"):
        lines.append(
            "demo: WARNING: this version has untrained --weights random: its "
            "predictions are meaningless (plumbing only)"
        )
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


def _classify(target: str, name: str, image: Path, top_k: int) -> None:
    with Client(target, model_name=name, timeout=120) as client:
        predictions = client.predict(str(image), top_k=top_k)
    print(f"{image}")
    print(f"  {'rank':>4}  {'score':>7}  label")
    for rank, p in enumerate(predictions, 1):
        key = f" ({p.key})" if p.key else ""
        print(f"  {rank:>4}  {p.score:7.4f}  {p.label}{key}")


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.run", description=__doc__)
    parser.add_argument("--weights", default="imagenet", help="for xception-export if needed")
    parser.add_argument("--model-base-path", default="models/xception", type=Path)
    parser.add_argument("--model-name", default="xception")
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--top-k", type=int, default=5)
    args = parser.parse_args(argv)
    base = args.model_base_path.resolve()
    if not args.image.is_file():
        raise DemoError(f"image not found: {args.image}")
    if layout.latest_saved_model_dir(base) is None:
        _export(args.weights, base)
    version_dir = layout.latest_saved_model_dir(base)
    if version_dir is None:
        raise DemoError(f"the export wrote no version under {base}")
    about = describe_version(version_dir, args.weights)
    for line in about:
        print(line, file=sys.stderr)
    print("demo: starting xception-serve on a free loopback port ...", file=sys.stderr)
    try:
        spec = ServerSpec(model_name=args.model_name, model_base_path=base)
        with running_server(spec, ready_timeout=READY_TIMEOUT_S) as server:
            try:
                _classify(server.grpc_target, args.model_name, args.image, args.top_k)
            except Exception as err:
                raise DemoError(f"classification failed: {err}") from err
            # Said again under the table, where a reader of the scores looks.
            for line in about:
                if "WARNING" in line:
                    print(line, file=sys.stderr)
            code = server.stop()
    except ServerStartError as err:
        raise DemoError(str(err)) from err
    if code != 0:
        raise DemoError(f"server exited with {code} on SIGTERM")
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
