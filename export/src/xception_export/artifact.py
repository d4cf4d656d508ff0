"""The versioned directory layout TF Serving polls, written atomically, and its metadata file.

    <model_base_path>/<version>/saved_model.pb, variables/, assets/, assets.extra/

A version is built in a temporary directory beside the base path, fsynced, then renamed into place,
so a server polling the base path sees either no version or a complete one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Final

from xception_contract import layout

from xception_export.errors import ExportError, UsageError, VersionExistsError

METADATA_RELPATH: Final = layout.EXPORT_METADATA_RELPATH


def read_saved_model(version_dir: Path) -> Any:
    """The version's ``saved_model.pb`` as a SavedModel proto (ExportError when unreadable)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    except Exception as err:
        raise ExportError(f"cannot read {version_dir / 'saved_model.pb'}: {err}") from err
    return saved


def existing_versions(base_path: Path) -> list[int]:
    """The version numbers TF Serving sees under the base path, ascending."""
    if not base_path.is_dir():
        return []
    return list(layout.version_dirs(base_path))


def resolve_version(base_path: Path, requested: int | None, force: bool) -> int:
    """The requested version (refusing to replace it without force) or the next free integer."""
    if requested is not None:
        if requested < 1:
            raise UsageError(
                f"--model-version must be a positive integer. Received: --model-version={requested}"
            )
        if (base_path / str(requested)).exists() and not force:
            raise VersionExistsError(
                f"version {requested} already exists at {base_path / str(requested)}; "
                "pass --force to replace it or omit --model-version to use the next free one"
            )
        return requested
    versions = existing_versions(base_path)
    return max(versions[-1] + 1, 1) if versions else 1


def content_hashes(directory: Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under a directory, keyed by its POSIX relative path."""
    hashes = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        if rel in exclude:
            continue
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        hashes[rel] = digest.hexdigest()
    return hashes


def write_metadata(version_dir: Path, metadata: dict[str, Any]) -> Path:
    path = version_dir / METADATA_RELPATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_metadata(version_dir: Path) -> dict[str, Any] | None:
    path = version_dir / METADATA_RELPATH
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse directory fsync
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def staging_dir(base_path: Path, version: int) -> Path:
    """A fresh temporary directory beside the base path (same filesystem, so rename is atomic).

    Its name is not numeric, so TF Serving would ignore it even inside the base path.
    """
    import tempfile

    base_path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{base_path.name}-v{version}-", dir=base_path.parent))


def publish(built: Path, base_path: Path, version: int, force: bool) -> Path:
    """fsync the built version and rename it to ``<base_path>/<version>``.

    With force, an existing version is first moved aside (into the staging area) and deleted after
    the new one is in place: a poller may briefly see the version absent, never half-written.
    """
    _fsync_tree(built)
    base_path.mkdir(parents=True, exist_ok=True)
    target = base_path / str(version)
    trash: Path | None = None
    if target.exists():
        if not force:
            raise VersionExistsError(
                f"version {version} already exists at {target}; pass --force to replace it"
            )
        trash = built.parent / f"replaced-{version}"
        os.rename(target, trash)
    try:
        os.rename(built, target)
    except OSError as err:
        if trash is not None:
            os.rename(trash, target)  # put the old version back
        if isinstance(err, (FileExistsError, IsADirectoryError)) or target.exists():
            raise VersionExistsError(
                f"version {version} appeared at {target} while exporting (another export?)"
            ) from err
        raise
    _fsync_dir(base_path)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)
    return target
