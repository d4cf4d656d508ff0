"""TFRecord framing, read without TensorFlow, every length and payload checked by its CRC32C.

Each record is ``uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)``
(little-endian), the framing of ``tf.io.TFRecordWriter`` and of TF Serving's warmup file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c

from ..errors import ArtifactError

__all__ = ["masked_crc32c", "read_records"]

_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C (a rotated and offset CRC, so CRCs of CRCs stay well spread)."""
    crc = int(google_crc32c.value(data))
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path: Path, *, limit: int = 100_000) -> Iterator[bytes]:
    """Yield each record's payload; raise :class:`ArtifactError` naming the first bad record
    (numbered from 1) and its byte offset."""
    data = path.read_bytes()
    offset, number = 0, 0
    while offset < len(data):
        number += 1
        where = f"{path}: record {number} at byte {offset}"
        if number > limit:
            raise ArtifactError(f"{where}: more than {limit} records")
        header = data[offset : offset + 12]
        if len(header) < 12:
            raise ArtifactError(f"{where}: truncated header ({len(header)} of 12 bytes)")
        (length,) = struct.unpack("<Q", header[:8])
        (length_crc,) = struct.unpack("<I", header[8:])
        if masked_crc32c(header[:8]) != length_crc:
            raise ArtifactError(f"{where}: corrupted length (CRC32C mismatch)")
        start = offset + 12
        payload = data[start : start + length]
        footer = data[start + length : start + length + 4]
        if len(payload) < length or len(footer) < 4:
            raise ArtifactError(
                f"{where}: truncated ({len(data) - start} bytes left for a {length}-byte record)"
            )
        if masked_crc32c(payload) != struct.unpack("<I", footer)[0]:
            raise ArtifactError(f"{where}: corrupted data (CRC32C mismatch)")
        yield payload
        offset = start + length + 4
