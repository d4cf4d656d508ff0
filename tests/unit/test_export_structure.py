"""The in-graph structure walks that bound decode cost (xception_export.structure), against plain
Python walks of the same bytes: JPEG scans as libjpeg reaches them, the end of a GIF sub-block
chain however it is split, the GIF blocks before the first image, PNG compressed text chunks."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from benchmarks.decode_cost import (
    gif_extension_bomb,
    gif_join,
    gif_small,
    gif_sub_block_bomb,
    jpeg_photo,
    jpeg_scan_bomb,
    jpeg_scans,
    png_chunk,
    png_photo,
    png_with_chunks,
    png_ztxt_bomb,
)


@pytest.fixture(scope="module")
def walks() -> dict[str, Any]:
    import tensorflow as tf
    from xception_export import structure

    scalar = [tf.TensorSpec([], tf.string)]
    return {
        "scans": tf.function(lambda d: structure.jpeg_scan_count(d, 32), input_signature=scalar),
        "chain": tf.function(
            lambda d, s, stop: structure.sub_block_chain_end(
                tf.cast(tf.io.decode_raw(d, tf.uint8), tf.int32), s, stop
            ),
            input_signature=[tf.TensorSpec([], tf.string)] + [tf.TensorSpec([], tf.int32)] * 2,
        ),
        "blocks": tf.function(
            lambda d: structure.gif_blocks_before_image(
                tf.cast(tf.io.decode_raw(d, tf.uint8), tf.int32), 10
            ),
            input_signature=scalar,
        ),
        "texts": tf.function(structure.png_text_chunks, input_signature=scalar),
    }


def _scans(walks: dict[str, Any], data: bytes) -> int:
    return int(walks["scans"](data))


def test_jpeg_scans_are_counted_as_the_sos_markers_of_the_image(walks: dict[str, Any]) -> None:
    baseline, progressive = jpeg_photo(40), jpeg_photo(40, progressive=True)
    assert _scans(walks, baseline) == jpeg_scans(baseline) == 1
    assert _scans(walks, progressive) == jpeg_scans(progressive) == 10
    assert _scans(walks, jpeg_scan_bomb(16, 22)) == 32


def test_jpeg_scan_count_stops_one_past_the_limit(walks: dict[str, Any]) -> None:
    assert _scans(walks, jpeg_scan_bomb(16, 500)) == 33


def test_jpeg_sos_bytes_in_metadata_or_after_eoi_are_not_scans(walks: dict[str, Any]) -> None:
    # An APP segment and a comment full of 0xFFDA (binary EXIF/ICC data can hold any bytes),
    # and a motion-photo style video appended after EOI: libjpeg decodes none of them.
    progressive = jpeg_photo(40, progressive=True)
    noise = b"\xff\xda" * 100
    app = b"\xff\xe9" + struct.pack(">H", len(noise) + 2) + noise
    com = b"\xff\xfe" + struct.pack(">H", len(noise) + 2) + noise
    data = progressive[:2] + app + com + progressive[2:] + noise + b"\xff\xd9"
    assert _scans(walks, data) == 10


def test_jpeg_scans_hidden_behind_an_eoi_inside_a_comment_are_counted(
    walks: dict[str, Any],
) -> None:
    # A comment segment between scans holding 0xFFD9 must not end the count early.
    bomb = jpeg_scan_bomb(16, 40)
    first_sos = bomb.index(b"\xff\xda")
    com = b"\xff\xfe\x00\x04\xff\xd9"
    data = bomb[:first_sos] + com + bomb[first_sos:]
    assert _scans(walks, data) == 33


def test_jpeg_with_a_marker_walk_longer_than_its_bound_counts_every_sos_left(
    walks: dict[str, Any],
) -> None:
    # 2000 empty comments before the frame exhaust the walk (256 + 4 x 32 steps); the rest of
    # the file is then scored by every 0xFFDA in it, so the scans cannot hide behind them.
    bomb = jpeg_scan_bomb(16, 40)
    data = bomb[:2] + b"\xff\xfe\x00\x02" * 2000 + bomb[2:]
    assert _scans(walks, data) > 32
    progressive = jpeg_photo(40, progressive=True)
    assert _scans(walks, progressive[:2] + b"\xff\xfe\x00\x02" * 2000 + progressive[2:]) == 10


def _python_chain_end(data: bytes, start: int) -> int:
    pos = start
    while pos < len(data):
        if data[pos] == 0:
            return pos
        pos += data[pos] + 1
    return -1


def _python_chain_nodes(data: bytes, start: int) -> list[int]:
    nodes, pos = [], start
    while pos < len(data) and data[pos]:
        nodes.append(pos)
        pos += data[pos] + 1
    return [*nodes, pos]


@pytest.mark.parametrize("seed", range(6))
def test_sub_block_chain_end_matches_a_plain_walk_for_any_split(
    walks: dict[str, Any], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    # Lengths from 1-byte blocks to full ones, across several 4096-byte windows.
    top = [2, 16, 255, 255, 40, 255][seed]
    payload = bytearray(b"\x07\x07")  # two bytes before the chain
    for length in rng.integers(1, top + 1, size=int(rng.integers(1, 3000))):
        payload += bytes([int(length)]) + bytes(rng.integers(0, 256, int(length), dtype=np.uint8))
    payload += b"\x00" + bytes(rng.integers(0, 256, 300, dtype=np.uint8))
    data = bytes(payload)
    expected = _python_chain_end(data, 2)
    assert expected > 0
    assert int(walks["chain"](data, 2, len(data))[0]) == expected
    assert int(walks["chain"](data[:expected], 2, len(data))[0]) == -1  # no terminator
    # Stopped at a bound: the walk ends on a sub-block start past it, within one window.
    bound = expected // 2
    end, node = (int(v) for v in walks["chain"](data, 2, bound))
    assert end == -2 and node in _python_chain_nodes(data, 2)
    assert bound <= node < bound + 4096 + 256


def test_gif_blocks_before_the_image_are_counted_up_to_one_past_the_limit(
    walks: dict[str, Any],
) -> None:
    plain = gif_join(gif_small())
    image = len(gif_small().head)
    position, steps = walks["blocks"](plain)
    assert (int(position), int(steps)) == (image, 0)
    # A comment of 8 one-byte sub-blocks: introducer + 8 + terminator = 10 steps, the limit.
    position, steps = walks["blocks"](gif_sub_block_bomb(8))
    assert (int(position), int(steps)) == (image + 2 + 16 + 1, 10)
    position, steps = walks["blocks"](gif_sub_block_bomb(9))
    assert (int(position), int(steps)) == (-1, 11)
    position, steps = walks["blocks"](gif_extension_bomb(100))
    assert (int(position), int(steps)) == (-1, 11)


def test_png_text_chunks_counts_ztxt_and_itxt_anywhere(walks: dict[str, Any]) -> None:
    png = png_photo(16)
    assert int(walks["texts"](png)) == 0
    assert int(walks["texts"](png_ztxt_bomb(png, 3, expands_to=1000))) == 3
    with_itxt = png_with_chunks(png, 2, b"iTXt", b"k\x00\x00\x00\x00\x00text")
    assert int(walks["texts"](with_itxt)) == 2
    after_image = png[:-12] + png_chunk(b"zTXt", b"k\x00\x00x") + png[-12:]
    assert int(walks["texts"](after_image)) == 1
