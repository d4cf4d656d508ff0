"""What a model base path and a version directory hold, read as TF Serving reads them.

TF Serving's file-system source (``file_system_storage_path_source.cc``) lists the base path's
children and keeps those whose name ``strings::safe_strto64`` parses: optional leading and trailing
white space, an optional ``-``, ASCII digits, within int64. It does not check that a child is a
directory (a file named ``3`` is aspired, and its load fails), and where two names give one number
(``7`` and ``007``) the one listed later in byte order wins, with a warning. Every part of the
bundle that lists versions uses ``version_dirs`` so they all see what TF Serving sees.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Final

SAVED_MODEL_FILE: Final = "saved_model.pb"
ASSETS_EXTRA_DIR: Final = "assets.extra"
# TF Serving replays this file's PredictionLog records at load (saved_model_warmup_util.cc).
WARMUP_FILE: Final = "tf_serving_warmup_requests"
WARMUP_RELPATH: Final = f"{ASSETS_EXTRA_DIR}/{WARMUP_FILE}"
# Written by xception-export: what was exported, from which weights, when.
EXPORT_METADATA_FILE: Final = "export_metadata.json"
EXPORT_METADATA_RELPATH: Final = f"{ASSETS_EXTRA_DIR}/{EXPORT_METADATA_FILE}"

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_SPACE: Final = " \t\n\v\f\r"  # C isspace() in the "C" locale


def parse_version(name: str) -> int | None:
    """The version number TF Serving reads from a child's name, or None where it reads none."""
    text = name.strip(_SPACE)
    digits = text[1:] if text.startswith("-") else text
    if not digits or not all("0" <= c <= "9" for c in digits):
        return None
    value = int(text)
    return value if _INT64_MIN <= value <= _INT64_MAX else None


DuplicateHandler = Callable[[int, Path, Path], None]  # (version, kept, ignored)


def version_dirs(
    base_path: str | os.PathLike[str], on_duplicate: DuplicateHandler | None = None
) -> dict[int, Path]:
    """The base path's versions by number, ascending. OSError when it cannot be listed.

    Children are visited in byte order, as TF Serving's sorted set visits them, so where two names
    give one number the later one is kept and ``on_duplicate(version, kept, ignored)`` is called.
    """
    base = Path(base_path)
    found: dict[int, Path] = {}
    for name in sorted(os.listdir(base), key=os.fsencode):
        version = parse_version(name)
        if version is None:
            continue
        if version in found and on_duplicate is not None:
            on_duplicate(version, base / name, found[version])
        found[version] = base / name
    return dict(sorted(found.items()))


def latest_version_dir(base_path: str | os.PathLike[str]) -> Path | None:
    """The version TF Serving's default policy (latest, one version) serves; None if there is
    none or the base path cannot be listed."""
    try:
        versions = version_dirs(base_path)
    except OSError:
        return None
    return versions[max(versions)] if versions else None


def latest_saved_model_dir(base_path: str | os.PathLike[str]) -> Path | None:
    """The version TF Serving's default policy serves, when it holds a SavedModel; else None."""
    latest = latest_version_dir(base_path)
    return latest if latest is not None and (latest / SAVED_MODEL_FILE).is_file() else None


def resolve_version_dir(path: str | os.PathLike[str]) -> Path | None:
    """``path`` itself when it holds a SavedModel, else the version TF Serving would serve from
    it as a base path when that one holds a SavedModel; None otherwise."""
    given = Path(path)
    if (given / SAVED_MODEL_FILE).is_file():
        return given
    return latest_saved_model_dir(given)
