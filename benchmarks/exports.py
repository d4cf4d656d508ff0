"""The benchmark's exported models: made once through the real `xception-export`, then reused."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path


def version_dirs(base: Path) -> list[Path]:
    if not base.is_dir():
        return []
    found = [p for p in base.iterdir() if p.name.isdigit() and (p / "saved_model.pb").exists()]
    return sorted(found, key=lambda p: int(p.name))


def ensure_export(base: Path, export_args: Sequence[str], log: Callable[[str], None],
                  what: str) -> Path:
    """The latest version under ``base``; exported first with ``export_args`` if there is none."""
    existing = version_dirs(base)
    if existing:
        return existing[-1]
    log(f"exporting {what} to {base} (one-off)")
    exporter = Path(sys.executable).with_name("xception-export")
    command = [str(exporter) if exporter.exists() else "xception-export", *export_args,
               "--model-base-path", str(base)]
    subprocess.run(command, check=True, timeout=600,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return version_dirs(base)[-1]


def ensure_model(base: Path, image_size: int, log: Callable[[str], None]) -> Path:
    """The random-weight Xception the served and limit measurements use."""
    return ensure_export(base, ["--weights", "random", "--image-size", str(image_size)], log,
                         f"a random-weight Xception {image_size}x{image_size}")
