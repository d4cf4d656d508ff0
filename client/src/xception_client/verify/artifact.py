"""An exported version on disk, as verify needs it: its signatures and its reference records."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from xception_contract import layout

from ..errors import ArtifactError, ArtifactNotFound
from ..metadata import Signature
from . import _wire
from .records import Record
from .tfrecord import read_records

__all__ = ["WARMUP_PATH", "Artifact", "load_artifact", "resolve_version_dir"]

WARMUP_PATH = Path(layout.WARMUP_RELPATH)
MAX_RECORDS = 1000  # TF Serving's limit on warmup records


@dataclass(frozen=True)
class Artifact:
    version_dir: Path
    version: int | None
    signatures: dict[str, Signature]
    records: tuple[Record, ...]


def resolve_version_dir(path: str | os.PathLike[str]) -> Path:
    """A version directory as given, or a base path's highest numeric version (as TF Serving's
    latest policy picks it)."""
    given = Path(path)
    if not given.is_dir():
        raise ArtifactNotFound(f"ARTIFACT {str(given)!r} is not a directory")
    found = layout.resolve_version_dir(given)
    if found is None:
        raise ArtifactNotFound(
            f"ARTIFACT {str(given)!r} is neither a version directory (no saved_model.pb) nor a "
            "base path whose latest numeric version directory holds one"
        )
    return found


def load_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Read the version's signatures and every warmup record with its reference answer."""
    version_dir = resolve_version_dir(path)
    pb_path = version_dir / layout.SAVED_MODEL_FILE
    try:
        signatures = _wire.saved_model_signatures(pb_path.read_bytes(), str(pb_path))
    except OSError as error:
        raise ArtifactError(f"cannot read {pb_path}: {error}") from error
    warmup = version_dir / WARMUP_PATH
    if not warmup.is_file():
        raise ArtifactError(
            f"{version_dir} has no {WARMUP_PATH}: nothing to verify (export with xception-export)"
        )
    try:
        records = tuple(
            _wire.parse_record(raw, number, str(warmup))
            for number, raw in enumerate(read_records(warmup, limit=MAX_RECORDS), 1)
        )
    except OSError as error:
        raise ArtifactError(f"cannot read {warmup}: {error}") from error
    if not records:
        raise ArtifactError(f"{warmup} holds no records")
    version = layout.parse_version(version_dir.name)
    return Artifact(version_dir, version, signatures, records)
