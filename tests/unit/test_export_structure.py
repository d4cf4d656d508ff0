"""The in-graph structure walks that bound decode cost (xception_export.structure), against plain
Python walks of the same bytes: JPEG scans as libjpeg reaches them, the end of a GIF sub-block
chain however it is split, the GIF blocks before the first image, PNG compressed text chunks."""

from __future__ import annotations

import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from benchmarks.decode_cost import (
    gif_extension_bomb,
    gif_join,
    gif_parts,
    gif_photo,
    gif_small,
    gif_split_irregular,
    gif_split_random,
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
        "cut": tf.function(structure.gif_first_frame, input_signature=scalar),
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
    assert int(walks["chain"](data[: expected - 1], 2, len(data))[0]) == -1  # cut mid-block
    _assert_stops_on_a_node_just_past(walks, data, 2, expected // 2)


def _assert_stops_on_a_node_just_past(
    walks: dict[str, Any], data: bytes, start: int, bound: int
) -> None:
    """Stopped at a bound: the walk ends on a sub-block start at or past it, at most one
    sub-block's span (256 bytes) beyond."""
    end, node = (int(v) for v in walks["chain"](data, start, bound))
    assert end == -2 and node in _python_chain_nodes(data, start)
    assert bound <= node <= bound + 256


def _chain(lengths: Any, rng: np.random.Generator) -> bytes:
    """Sub-blocks of the given lengths holding random bytes (every byte value occurs)."""
    return b"".join(
        bytes([int(length)]) + bytes(rng.integers(0, 256, int(length), dtype=np.uint8))
        for length in lengths
    )


@pytest.mark.parametrize("start", [0, 1, 5])
def test_sub_block_chain_end_matches_a_plain_walk_for_one_and_two_byte_sub_blocks_in_turn(
    walks: dict[str, Any], start: int
) -> None:
    # The split no encoder writes and the strided skip cannot take: ~300 KB, so the walk
    # crosses windows of every size it uses before its largest.
    rng = np.random.default_rng(start)
    data = bytes(start) + _chain([1, 2] * 60_000, rng) + b"\x00" + bytes(range(256))
    expected = _python_chain_end(data, start)
    assert expected == start + 300_000
    assert int(walks["chain"](data, start, len(data))[0]) == expected
    assert int(walks["chain"](data[:expected], start, len(data))[0]) == -1
    assert int(walks["chain"](data[: expected - 1], start, len(data))[0]) == -1
    _assert_stops_on_a_node_just_past(walks, data, start, 123_457)


def test_sub_block_chain_end_matches_a_plain_walk_across_its_largest_windows(
    walks: dict[str, Any],
) -> None:
    # ~2.6 MB of random lengths from 1 to 255, then the same mixed with short runs of one
    # length: several windows of the largest size, each boundary falling anywhere.
    rng = np.random.default_rng(7)
    lengths = rng.integers(1, 256, size=12_000).tolist()
    lengths += [int(v) for v in rng.integers(1, 4, size=4000) for _ in range(int(v) * 50)]
    data = b"\x07" + _chain(lengths, rng) + b"\x00;"
    expected = _python_chain_end(data, 1)
    assert expected == len(data) - 2 and expected > 2_500_000
    assert int(walks["chain"](data, 1, len(data))[0]) == expected
    _assert_stops_on_a_node_just_past(walks, data, 1, 1_900_000)


def test_sub_block_patterns_of_both_byte_orders_take_the_same_whole_sub_blocks() -> None:
    # The walk picks its pattern by the machine's byte order; the big-endian one cannot run
    # here, so it is checked on the little-endian text with each letter pair swapped.
    import tensorflow as tf
    from xception_export import structure

    rng = np.random.default_rng(3)
    chain = _chain(rng.integers(1, 256, size=400).tolist() + [1, 2] * 300, rng)
    data = chain + b"\x00" + bytes(range(256))
    win = tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32)
    little = bytes(structure._hex_text(win).numpy())
    text = {
        True: little,
        False: b"".join(
            little[i + 1 : i + 2] + little[i : i + 1] for i in range(0, len(little), 2)
        ),
    }
    if sys.byteorder == "big":
        text = {True: text[False], False: text[True]}
    for little_endian, pattern in (
        (True, structure._SUB_BLOCKS_LITTLE_ENDIAN),
        (False, structure._SUB_BLOCKS_BIG_ENDIAN),
    ):
        rest = tf.strings.regex_replace(text[little_endian], pattern, "", replace_global=False)
        assert (len(text[little_endian]) - len(rest.numpy())) // 2 == len(chain)


@pytest.mark.parametrize("offset", range(-4, 5))
def test_sub_block_chain_end_finds_a_terminator_on_either_side_of_a_window_edge(
    walks: dict[str, Any], offset: int
) -> None:
    # The first window ends 4096 bytes after the sub-block the strided skip stops at (the
    # second, at 2): the terminator lands just before, on or just after that edge.
    rng = np.random.default_rng(offset + 10)
    edge = 2 + 4096
    head = _chain([1, 2] * 760, rng) + _chain([255], rng)  # 4056 bytes
    gap = edge + offset - len(head)
    filler = _chain([2] * (gap % 2) + [1] * ((gap - 3 * (gap % 2)) // 2), rng)
    data = head + filler + b"\x00" + bytes(9)
    assert _python_chain_end(data, 0) == edge + offset
    assert int(walks["chain"](data, 0, len(data))[0]) == edge + offset


@pytest.mark.parametrize("split", [gif_split_irregular, gif_split_random], ids=["1-2", "1-255"])
def test_gif_first_frame_cuts_a_finely_split_first_image_right_after_its_data(
    walks: dict[str, Any], split: Callable[[bytes], bytes]
) -> None:
    import tensorflow as tf

    two = gif_photo(48, frames=2)
    parts = gif_parts(two)
    data_start = len(parts.head) + len(parts.before) + len(parts.descriptor)
    second_frame = two[_python_chain_end(two, data_start) + 1 :]
    first_split = split(two)  # the first image alone, then its trailer
    data = first_split[:-1] + second_frame
    assert tf.io.decode_gif(data).shape[0] == 2
    cut = walks["cut"](data).numpy()
    assert cut == first_split
    assert np.array_equal(tf.io.decode_gif(cut)[0], tf.io.decode_gif(two)[0])


def _best_seconds(run: Callable[[], Any], times: int = 5) -> float:
    best = float("inf")
    for _ in range(times):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def test_gif_first_frame_of_a_one_and_two_byte_split_costs_less_than_decoding_it_twice(
    walks: dict[str, Any],
) -> None:
    import tensorflow as tf

    # 1000x1000, ~2.3 MB of 1- and 2-byte sub-blocks. Measured: the cut 0.8x decode_gif of the
    # same file; the pointer-doubling walk it replaced, 5x. A generous ratio of best-of-5 times
    # (3x the measured one), not a close timing.
    split = tf.constant(gif_split_irregular(gif_photo(1000)))
    decode = tf.function(tf.io.decode_gif, input_signature=[tf.TensorSpec([], tf.string)])
    walks["cut"](split), decode(split)  # warm
    assert _best_seconds(lambda: walks["cut"](split)) < 2.5 * _best_seconds(lambda: decode(split))


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
