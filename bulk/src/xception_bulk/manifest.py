"""Manifests: files that list the images to classify, one per line, with an optional id.

A manifest is named by ``--input-manifest`` (never guessed from a matched file's suffix: a glob
over a mixed folder would otherwise turn a stray notes.txt into a list of inputs). Its suffix
says how its lines read:

- ``.txt``: one URI per line; blank lines and lines starting with ``#`` are skipped;
- ``.csv``: a header naming a ``path`` (or ``uri``) column and optionally an ``id`` column;
- ``.jsonl``: one object per line with ``path`` (or ``uri``) and optionally ``id``.

A relative URI is relative to the manifest's own folder, so a manifest travels with its images.
Lines are parsed one at a time (no CSV field spans lines), so the pipeline can read a manifest
of any size in parallel.
"""

from __future__ import annotations

import csv
import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from .records import ImageRef

__all__ = ["MANIFEST_SUFFIXES", "ManifestError", "ManifestFormat", "manifest_format", "parse_line"]

ManifestKind = Literal["txt", "csv", "jsonl"]
MANIFEST_SUFFIXES: Final[dict[str, ManifestKind]] = {
    ".txt": "txt",
    ".csv": "csv",
    ".jsonl": "jsonl",
}
PATH_COLUMNS: Final = ("path", "uri")
ID_COLUMN: Final = "id"


class ManifestError(ValueError):
    """A manifest, or one of its lines, that names no image."""


@dataclass(frozen=True, slots=True)
class ManifestFormat:
    """How one manifest's lines read: its kind, folder, and (CSV) the header's columns."""

    uri: str
    kind: ManifestKind
    base: str  # the manifest's folder, for relative URIs
    columns: tuple[str, ...] = ()

    @property
    def skip_header_lines(self) -> int:
        return 1 if self.kind == "csv" else 0


def manifest_format(uri: str, first_line: str | None) -> ManifestFormat:
    """The format of manifest ``uri`` from its suffix and (for CSV) its header line."""
    suffix = posixpath.splitext(uri.rstrip("/"))[1].lower()
    kind = MANIFEST_SUFFIXES.get(suffix)
    if kind is None:
        raise ManifestError(
            f"manifest {uri} has suffix {suffix or '(none)'!r}; use one of "
            f"{', '.join(sorted(MANIFEST_SUFFIXES))}"
        )
    base = _folder(uri)
    if kind != "csv":
        return ManifestFormat(uri, kind, base)
    if not first_line or not first_line.strip():
        raise ManifestError(f"manifest {uri} has no header line (expected a 'path' column)")
    columns = tuple(c.strip().lower() for c in next(csv.reader([first_line])))
    if not any(c in columns for c in PATH_COLUMNS):
        raise ManifestError(f"manifest {uri} header {list(columns)} has no 'path' or 'uri' column")
    return ManifestFormat(uri, kind, base, columns)


def parse_line(fmt: ManifestFormat, line: str) -> ImageRef | None:
    """The image one line names; None for a line to skip; ManifestError for a bad line."""
    text = line.strip()
    if not text or (fmt.kind == "txt" and text.startswith("#")):
        return None
    if fmt.kind == "txt":
        return ImageRef(resolve(fmt.base, text))
    if fmt.kind == "csv":
        values = next(csv.reader([text]))
        return _from_fields(fmt, dict(zip(fmt.columns, values, strict=False)), text)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        message = f"manifest {fmt.uri}: line is not JSON ({error}): {text[:200]}"
        raise ManifestError(message) from error
    if not isinstance(obj, dict):
        raise ManifestError(f"manifest {fmt.uri}: line is not a JSON object: {text[:200]}")
    return _from_fields(fmt, obj, text)


def _from_fields(fmt: ManifestFormat, fields: dict[str, object], text: str) -> ImageRef:
    path = next((fields[c] for c in PATH_COLUMNS if fields.get(c) not in (None, "")), None)
    if not isinstance(path, str):
        raise ManifestError(f"manifest {fmt.uri}: line has no 'path' or 'uri' string: {text[:200]}")
    raw_id = fields.get(ID_COLUMN)
    ident = None if raw_id is None or raw_id == "" else str(raw_id)
    return ImageRef(resolve(fmt.base, path.strip()), ident)


def has_scheme(uri: str) -> bool:
    """True for ``gs://...``, ``s3://...``, ``file://...`` and the like."""
    head, sep, _ = uri.partition("://")
    return bool(sep) and head.isidentifier()


def _folder(uri: str) -> str:
    if has_scheme(uri):
        return uri.rsplit("/", 1)[0] if "/" in uri.split("://", 1)[1] else uri
    return posixpath.dirname(uri) or "."


def resolve(base: str, uri: str) -> str:
    """``uri`` as it is when absolute (a path from / or a scheme), else joined to ``base``."""
    if has_scheme(uri) or uri.startswith("/"):
        return uri
    joined = f"{base.rstrip('/')}/{uri}"
    return joined if has_scheme(base) else posixpath.normpath(joined)


def split_lines(data: bytes) -> Sequence[str]:
    """A small manifest's lines (for reading the CSV header in the launcher)."""
    return data.decode("utf-8-sig").splitlines()
