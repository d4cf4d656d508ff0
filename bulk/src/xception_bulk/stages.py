# Beam's API has no type annotations, so calling it is an untyped call.
# mypy: disable-error-code="no-untyped-call"
"""The stages before the model: list the inputs, read each image's bytes, check it locally.

Each stage emits either the item for the next stage or a ``Failure`` on the ``failed`` output,
so one bad input never stops the others: an unreadable path fails at "read", a file that is not
an image (or is empty, or declares too many pixels) at "decode", with the client's own checks
(``xception_client.load_image``, the same the client runs before sending).
"""

from __future__ import annotations

import errno
import io
from collections.abc import Iterator, Sequence
from typing import Any, Final

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import Metrics
from xception_client import InvalidImage, load_image

from .isolate import Prepared
from .manifest import ManifestError, ManifestFormat, parse_line
from .records import Failure, ImageRef

__all__ = ["FAILED", "DecodeImage", "ListInputs", "ParseManifest", "ReadImage", "read_failure"]

FAILED: Final = "failed"
_ERRNO_CODES: Final = {
    errno.ENOENT: "NOT_FOUND",
    errno.EACCES: "PERMISSION_DENIED",
    errno.EPERM: "PERMISSION_DENIED",
    errno.EISDIR: "FAILED_PRECONDITION",
}


class ParseManifest(beam.DoFn):
    """A manifest line -> the ImageRef it names; a bad line -> a read Failure naming it."""

    def __init__(self, fmt: ManifestFormat) -> None:
        self._fmt = fmt

    def process(self, line: str) -> Iterator[Any]:
        try:
            ref = parse_line(self._fmt, line)
        except ManifestError as error:
            failure = Failure(ImageRef(self._fmt.uri), "read", "INVALID_ARGUMENT", str(error))
            yield beam.pvalue.TaggedOutput(FAILED, failure)
            return
        if ref is not None:
            yield ref


class ListInputs(beam.PTransform[Any, Any]):
    """Every input once: the files the patterns match plus the manifests' entries, as ImageRefs
    (main output) and bad manifest lines as Failures (``failed``). An image two patterns match
    is classified once; a manifest may list one path under two ids (two inputs)."""

    def __init__(self, patterns: Sequence[str], manifests: Sequence[ManifestFormat]) -> None:
        super().__init__()
        self._patterns = list(patterns)
        self._manifests = list(manifests)

    def expand(self, pipeline: Any) -> Any:
        refs = []
        failures = []
        if self._patterns:
            matched = (
                pipeline
                | "Patterns" >> beam.Create(self._patterns)
                | "Match" >> fileio.MatchAll()
                | "MatchedRef" >> beam.Map(lambda meta: ImageRef(meta.path))
            )
            refs.append(matched)
        for n, fmt in enumerate(self._manifests):
            lines = pipeline | f"ReadManifest{n}" >> beam.io.ReadFromText(
                fmt.uri, skip_header_lines=fmt.skip_header_lines
            )
            parsed = lines | f"ParseManifest{n}" >> beam.ParDo(ParseManifest(fmt)).with_outputs(
                FAILED, main="refs"
            )
            refs.append(parsed.refs)
            failures.append(parsed[FAILED])
        unique = (
            tuple(refs)
            | "AllRefs" >> beam.Flatten()
            | "Key" >> beam.Map(lambda ref: (ref.path, ref.id))
            | "Once" >> beam.Distinct()  # also spreads the work across workers (a shuffle)
            | "Ref" >> beam.MapTuple(lambda path, ident: ImageRef(path, ident))
        )
        bad = (
            tuple(failures) | "ManifestFailures" >> beam.Flatten()
            if failures
            else (pipeline | "NoManifestFailures" >> beam.Create([]))
        )
        return unique, bad


def read_failure(ref: ImageRef, error: Exception) -> Failure:
    """An input that could not be read, with the status code its OS error maps to."""
    code = _ERRNO_CODES.get(getattr(error, "errno", None) or -1, "UNKNOWN")
    text = str(error)
    if code == "UNKNOWN" and ("not found" in text.lower() or "No such file" in text):
        code = "NOT_FOUND"  # Beam's file systems wrap the OS error in their own (BeamIOError)
    return Failure(ref, "read", code, f"cannot read {ref.path}: {text}")


class ReadImage(beam.DoFn):
    """ImageRef -> (ref, bytes), at most ``max_bytes`` of them, through Beam's file systems."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes

    def process(self, ref: ImageRef) -> Iterator[Any]:
        try:
            # Uncompressed: a .gz is not an image, and must not be inflated into one.
            with FileSystems.open(ref.path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
                data = f.read(self._max_bytes + 1)
        except Exception as error:  # every file system raises its own kinds
            yield beam.pvalue.TaggedOutput(FAILED, read_failure(ref, error))
            return
        if len(data) > self._max_bytes:
            message = f"{ref.path} is larger than --max-image-bytes={self._max_bytes}"
            yield beam.pvalue.TaggedOutput(
                FAILED, Failure(ref, "read", "INVALID_ARGUMENT", message)
            )
            return
        Metrics.counter("xception_bulk", "bytes_read").inc(len(data))
        yield ref, data


class DecodeImage(beam.DoFn):
    """(ref, bytes) -> (ref, bytes to send): the client's local checks, and formats the graph
    does not decode (WebP, TIFF, ...) re-encoded losslessly as PNG, as Client.predict does."""

    def __init__(self, max_pixels: int) -> None:
        self._max_pixels = max_pixels

    def process(self, item: tuple[ImageRef, bytes]) -> Iterator[Any]:
        ref, data = item
        named = io.BytesIO(data)
        named.name = ref.path  # the check's messages name the input
        try:
            encoded = load_image(named, max_pixels=self._max_pixels)
        except InvalidImage as error:
            failure = Failure(ref, "decode", "INVALID_ARGUMENT", error.details)
            yield beam.pvalue.TaggedOutput(FAILED, failure)
            return
        prepared: Prepared = (ref, encoded.data)
        yield prepared
