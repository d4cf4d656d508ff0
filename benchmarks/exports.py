"""The benchmark's exported models: made once through the real `xception-export`, then reused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from xception_contract import layout

from benchmarks.progress import Log


def ensure_export(base: Path, export_args: Sequence[str], log: Log, what: str) -> Path:
    """The version TF Serving would serve from ``base``; exported first with ``export_args`` if
    there is none."""
    existing = layout.resolve_version_dir(base)
    if existing is not None:
        return existing
    log(f"exporting {what} to {base} (one-off)")
    exporter = Path(sys.executable).with_name("xception-export")
    command = [
        str(exporter) if exporter.exists() else "xception-export",
        *export_args,
        "--model-base-path",
        str(base),
    ]
    subprocess.run(
        command, check=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    )
    exported = layout.resolve_version_dir(base)
    if exported is None:
        raise RuntimeError(f"xception-export left no SavedModel version under {base}")
    return exported


def ensure_model(base: Path, image_size: int, log: Log) -> Path:
    """The random-weight Xception the served and limit measurements use."""
    return ensure_export(
        base,
        ["--weights", "random", "--image-size", str(image_size)],
        log,
        f"a random-weight Xception {image_size}x{image_size}",
    )
