"""verify's TFRecord reader against files written by TensorFlow's own TFRecordWriter: payloads
come back intact, and a flipped byte, a bad length or a cut file fails naming the record."""

from __future__ import annotations

from pathlib import Path

import pytest
from xception_client.errors import ArtifactError
from xception_client.verify import masked_crc32c, read_records

PAYLOADS = [b"first record", b"", b"\x00\xff" * 5000, b"last"]


@pytest.fixture
def good_file(tmp_path: Path) -> Path:
    import tensorflow as tf

    path = tmp_path / "records.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for payload in PAYLOADS:
            writer.write(payload)
    return path


def _offset_of(number: int) -> int:
    # 8 bytes length + 4 length CRC + payload + 4 payload CRC per record.
    return sum(16 + len(p) for p in PAYLOADS[: number - 1])


def test_reads_what_tensorflow_wrote(good_file: Path) -> None:
    assert list(read_records(good_file)) == PAYLOADS


def test_masked_crc_matches_tensorflow_framing(good_file: Path) -> None:
    data = good_file.read_bytes()
    # Record 1's payload CRC, as TensorFlow wrote it, right after its payload.
    start = 12 + len(PAYLOADS[0])
    assert masked_crc32c(PAYLOADS[0]) == int.from_bytes(data[start : start + 4], "little")


def test_corrupted_payload_names_the_record(good_file: Path) -> None:
    data = bytearray(good_file.read_bytes())
    data[_offset_of(3) + 12 + 100] ^= 0x01
    good_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"record 3 at byte \d+: corrupted data \(CRC32C"):
        list(read_records(good_file))


def test_corrupted_length_names_the_record(good_file: Path) -> None:
    data = bytearray(good_file.read_bytes())
    data[_offset_of(2)] ^= 0x40
    good_file.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"record 2 at byte \d+: corrupted length"):
        list(read_records(good_file))


def test_truncated_file_names_the_record(good_file: Path) -> None:
    data = good_file.read_bytes()
    good_file.write_bytes(data[: _offset_of(4) + 14])
    with pytest.raises(ArtifactError, match=r"record 4 at byte \d+: truncated"):
        list(read_records(good_file))


def test_reading_stops_past_the_record_limit_naming_it(good_file: Path) -> None:
    with pytest.raises(ArtifactError, match="more than 2 records"):
        list(read_records(good_file, limit=2))
