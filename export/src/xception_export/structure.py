"""In-graph walks over an encoded image's block structure, so decode cost stays bounded by pixels.

A decoder's time normally follows the pixel count, which the header check bounds. Three structures
make it follow something else, and each is counted here before the full decode:

- JPEG scans: libjpeg makes one pass over the coefficient buffer per progressive scan, so a small
  file repeating its last scan thousands of times costs thousands of full passes.
  :func:`jpeg_scan_count` counts the scans by following the marker segments (a segment's length
  says where the next marker is; after a scan's header the next marker is the first 0xFF byte
  not followed by 0x00 stuffing, a restart code or fill), so 0xFF 0xDA bytes inside metadata or
  after the end of the image (a thumbnail, an appended motion-photo video) are not counted.
- PNG text: libpng inflates every zTXt and iTXt chunk, up to 8 MB each (~35 ms), so a file of
  many small compressed chunks costs seconds however few its pixels (:func:`png_text_chunks`).
- GIF blocks: the first frame is cut out of the stream (decode_gif would decode every frame), which
  needs the end of the first image's data. :func:`gif_first_frame` takes one loop step per block
  only before the first image (at most ``max_blocks``) and finds the end of the image's data
  sub-blocks in native code (:func:`sub_block_chain_end`: a strided read, then RE2's DFA), so a
  long or finely split image costs a few ns a byte in a few loop steps, not one step per
  sub-block.

Every loop here has a bound that does not grow with the file: a loop step costs ~10-20 us of
executor overhead, which is what made a per-sub-block walk slow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import xception_contract as contract

if TYPE_CHECKING:
    from collections.abc import Callable

    import tensorflow as tf


@dataclass(frozen=True)
class DecodeLimits:
    """Export flags bounding structure-driven decode work (``--max-jpeg-scans``,
    ``--max-gif-blocks``, ``--max-png-text-chunks``); an image over one is refused with
    INVALID_ARGUMENT before its decode."""

    max_jpeg_scans: int = contract.DEFAULT_MAX_JPEG_SCANS
    max_gif_blocks: int = contract.DEFAULT_MAX_GIF_BLOCKS
    max_png_text_chunks: int = contract.DEFAULT_MAX_PNG_TEXT_CHUNKS

    def flags(self) -> dict[str, int]:
        """Each limit under its metadata key (the flag's name with underscores)."""
        return {
            "max_jpeg_scans": self.max_jpeg_scans,
            "max_gif_blocks": self.max_gif_blocks,
            "max_png_text_chunks": self.max_png_text_chunks,
        }


# Marker steps the JPEG walk takes before it stops following segments and counts every 0xFFDA
# left in the file instead (an over-count, so never a way round the limit). Real files have
# ~10-60 segments before the first scan (APPn, ICC chunks, DQT, SOF, DHT) and ~2 per scan.
_JPEG_WALK_BASE: Final = 256

# Windows of the sub-block walk: the first is small because an encoder's file has at most one
# short sub-block before the terminator; each next one is 4x larger, up to the largest, so a long
# walk takes few loop steps (a loop step costs ~10-20 us of executor overhead).
_CHAIN_FIRST_WINDOW: Final = 1 << 12
_CHAIN_LAST_WINDOW: Final = 1 << 20
# A sub-block's length byte and data span at most this many bytes.
_SUB_BLOCK_SPAN: Final = 256


def _hex_letters(value: int, little_endian: bool) -> str:
    """A byte as the two letters the walk's text spells it with, 'A' + low nibble then 'A' + high
    nibble in memory on a little-endian machine (the other way round on a big-endian one)."""
    low, high = chr(ord("A") + (value & 15)), chr(ord("A") + (value >> 4))
    return low + high if little_endian else high + low


def _sub_blocks_pattern(little_endian: bool) -> str:
    """RE2 pattern matching the longest run of whole sub-blocks at the start of a text in
    :func:`_hex_text`'s spelling. A length byte k then k bytes (two letters each) is written
    with the shared tails nested, ``(?:(?:<255>..|<254>)..|<253>)..`` and so on, not as 255
    alternatives of their own, so the automaton has a state per bytes-left count (a few hundred
    in all) however the data is split, and RE2 walks it with its DFA, a table step a letter."""
    nested = _hex_letters(255, little_endian)
    for length in range(254, 0, -1):
        nested = f"(?:{nested}..|{_hex_letters(length, little_endian)})"
    return f"^(?:{nested}..)*"


_SUB_BLOCKS_LITTLE_ENDIAN: Final = _sub_blocks_pattern(little_endian=True)
_SUB_BLOCKS_BIG_ENDIAN: Final = _sub_blocks_pattern(little_endian=False)

# LZW data a GIF frame may need per pixel before the walk stops and cuts: codes are at most 12
# bits and every code but clear/end emits a pixel, so encoders stay under 2 bytes a pixel
# (twice that allowed, plus 64 KB).
_GIF_BYTES_PER_PIXEL: Final = 4


def _bytes(data: tf.Tensor) -> tf.Tensor:
    """The encoded image as int32 values, one per byte."""
    import tensorflow as tf

    return tf.cast(tf.io.decode_raw(data, tf.uint8), tf.int32)


def _marker_positions(b: tf.Tensor) -> tf.Tensor:
    """Sorted int32 positions p where the uint8 b[p] = 0xFF starts a marker: the next byte is not
    0x00 (stuffing), 0xFF (fill) or a restart code 0xD0-0xD7, which never end a scan's data."""
    import tensorflow as tf

    first, second = b[:-1], b[1:]
    # uint8 throughout: this runs over every byte of the file.
    ff, zero = tf.constant(0xFF, tf.uint8), tf.constant(0, tf.uint8)
    restart = tf.equal(tf.bitwise.bitwise_and(second, tf.constant(0xF8, tf.uint8)), 0xD0)
    not_marker = tf.logical_or(tf.logical_or(tf.equal(second, zero), tf.equal(second, ff)), restart)
    marker = tf.logical_and(tf.equal(first, ff), tf.logical_not(not_marker))
    return tf.cast(tf.where(marker)[:, 0], tf.int32)


def jpeg_scan_count(data: tf.Tensor, max_scans: int) -> tf.Tensor:
    """int32 number of scans (SOS markers) libjpeg would decode, or any count over ``max_scans``
    once it is certain to be over (the walk stops there).

    Follows the markers from SOI as libjpeg reads them; stops at EOI, at the end of the data, or
    once the count passes ``max_scans``. A file with more than ``_JPEG_WALK_BASE + 4 * max_scans``
    markers before its end is scored by every 0xFFDA from there on instead.
    """
    import tensorflow as tf

    b = tf.io.decode_raw(data, tf.uint8)
    n = tf.size(b)
    markers = _marker_positions(b)
    count_markers = tf.size(markers)
    padded = tf.concat([b, tf.zeros([4], tf.uint8)], axis=0)

    def at(p: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.gather(padded, tf.clip_by_value(p, 0, n + 3)), tf.int32)

    def next_marker(from_pos: tf.Tensor) -> tf.Tensor:
        i = tf.searchsorted(markers, tf.reshape(from_pos, [1]), side="left")[0]
        return tf.cond(i < count_markers, lambda: tf.gather(markers, i), lambda: n)

    def step(pos: tf.Tensor, scans: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        code = at(pos + 1)
        standalone = tf.logical_or(tf.equal(code, 0xD8), tf.equal(code, 0x01))
        length = at(pos + 2) * 256 + at(pos + 3)
        after = tf.where(standalone, pos + 2, pos + 2 + length)
        scans = scans + tf.cast(tf.equal(code, 0xDA), tf.int32)
        # libjpeg skips any bytes up to the next 0xFF marker, and so does the walk.
        return next_marker(after), scans

    def going(pos: tf.Tensor, scans: tf.Tensor) -> tf.Tensor:
        return tf.logical_and(
            tf.logical_and(pos < n, scans <= max_scans), tf.not_equal(at(pos + 1), 0xD9)
        )

    pos, scans = tf.while_loop(
        going,
        step,
        (next_marker(tf.constant(0)), tf.constant(0)),
        maximum_iterations=_JPEG_WALK_BASE + 4 * max_scans,
    )
    unfinished = tf.logical_and(going(pos, scans), pos < n)
    rest = tf.logical_and(tf.equal(tf.gather(padded, markers + 1), 0xDA), markers >= pos)
    return tf.where(unfinished, scans + tf.reduce_sum(tf.cast(rest, tf.int32)), scans)


def png_text_chunks(data: tf.Tensor) -> tf.Tensor:
    """int32 count of the chunk types zTXt and iTXt anywhere in a PNG: libpng inflates each such
    chunk (up to 8 MB, before or after the image data) though no pixel depends on it. Counting
    the 4-byte type anywhere over-counts only when compressed data happens to hold it (2**-31
    per byte)."""
    import tensorflow as tf

    whole = tf.reshape(data, [1])
    pieces = [tf.strings.split(whole, sep=kind).flat_values for kind in ("zTXt", "iTXt")]
    return tf.add_n([tf.size(p) - 1 for p in pieces])


def _hex_text(win: tf.Tensor) -> tf.Tensor:
    """The int32 bytes ``win`` as a string of two letters a byte (see :func:`_hex_letters`): RE2
    matches UTF-8 text, where a byte over 0x7F is not a character of its own, so every byte is
    spelt in ASCII. Each pair is built as one uint16, ``v + 15 * (v & 0xF0) + 0x4141`` (low
    nibble in the low byte, high nibble in the high byte; the fewest array ops found), and the
    array taken whole from its serialized TensorProto (its raw bytes end it): interleaving two
    uint8 arrays with tf.stack measured ~3x slower. The letters' order in memory follows the
    machine's byte order, which :func:`_whole_sub_blocks` matches with the pattern it picks."""
    import tensorflow as tf

    pairs = win + 15 * tf.bitwise.bitwise_and(win, 0xF0) + 0x4141
    letters = tf.reshape(tf.bitcast(tf.cast(pairs, tf.uint16), tf.uint8), [-1])
    serialized = tf.io.serialize_tensor(letters)
    size = tf.size(letters)
    return tf.strings.substr(serialized, tf.strings.length(serialized) - size, size)


def _whole_sub_blocks(win: tf.Tensor) -> tf.Tensor:
    """int32 bytes at the start of the int32 bytes ``win`` taken by whole sub-blocks (a length
    byte then that many bytes), stopping at a 0 length byte or a sub-block ``win`` cuts short."""
    import tensorflow as tf

    text = _hex_text(win)
    little_endian = tf.equal(tf.bitcast(tf.constant(1, tf.uint16), tf.uint8)[0], 1)

    def match(pattern: str) -> Callable[[], tf.Tensor]:
        return lambda: tf.strings.regex_replace(text, pattern, "", replace_global=False)

    rest = tf.cond(little_endian, match(_SUB_BLOCKS_LITTLE_ENDIAN), match(_SUB_BLOCKS_BIG_ENDIAN))
    return (tf.strings.length(text) - tf.strings.length(rest)) // 2


def _skip_equal_run(b: tf.Tensor, start: tf.Tensor) -> tf.Tensor:
    """The first sub-block at or after ``start`` whose length differs from the one at ``start``
    (or ``start`` itself if that is the terminator), found with one strided read: encoders write
    sub-blocks of one length (255 bytes, mostly), so this skips nearly all of a real image."""
    import tensorflow as tf

    n = tf.size(b)
    length = tf.gather(b, tf.clip_by_value(start, 0, tf.maximum(n - 1, 0)))
    stride = tf.maximum(length, 0) + 1
    strided = tf.strided_slice(b, [tf.minimum(start, n)], [n], tf.reshape(stride, [1]))
    other = tf.cast(tf.where(tf.not_equal(strided, length))[:, 0], tf.int32)
    return tf.cond(
        tf.logical_or(tf.equal(length, 0), tf.size(other) == 0),
        lambda: tf.where(tf.equal(length, 0), start, start + stride * tf.size(strided)),
        lambda: start + stride * other[0],
    )


def sub_block_chain_end(
    b: tf.Tensor, start: tf.Tensor, stop: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor]:
    """(end, node) for the GIF sub-block chain that starts at ``start`` in the int32 bytes ``b``
    (each sub-block: a length byte then that many bytes). ``end`` is the position of the 0 byte
    ending it; -1 if the data ends first; -2 if the walk passed ``stop`` first, ``node`` then
    being a sub-block start at or past ``stop`` and at most 256 bytes past it.

    A run of equal-length sub-blocks is skipped with one strided read; the rest is walked a
    window at a time by RE2's DFA over the window spelt in letters (:data:`_SUB_BLOCKS`), which
    costs a few ns a byte however the data is split, in few loop steps.
    """
    import tensorflow as tf

    n = tf.size(b)
    start = tf.cast(start, tf.int32)
    stop = n if stop is None else tf.minimum(tf.cast(stop, tf.int32), n)

    def window_step(
        pos: tf.Tensor, _end: tf.Tensor, size: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        # Past stop + 256 bytes the next sub-block start is at or past stop: the walk ends there.
        limit = tf.minimum(tf.minimum(pos + size, stop + _SUB_BLOCK_SPAN), n)
        node = pos + _whole_sub_blocks(b[pos:limit])
        ended = tf.logical_and(node < limit, tf.equal(b[tf.minimum(node, n - 1)], 0))
        # The window reached the end of the data: the chain never terminates (-1).
        end = tf.where(ended, node, tf.where(limit >= n, -1, -3))
        return node, end, tf.minimum(size * 4, _CHAIN_LAST_WINDOW)

    pos, end, _size = tf.while_loop(
        lambda pos, end, _size: tf.logical_and(tf.equal(end, -3), pos < stop),
        window_step,
        (_skip_equal_run(b, start), tf.constant(-3), tf.constant(_CHAIN_FIRST_WINDOW)),
        maximum_iterations=n // (_CHAIN_FIRST_WINDOW - _SUB_BLOCK_SPAN) + 2,
    )
    end = tf.where(tf.logical_and(tf.equal(end, -3), pos >= n), -1, end)
    return tf.where(tf.equal(end, -3), -2, end), pos


def _colour_table(flags: tf.Tensor) -> tf.Tensor:
    import tensorflow as tf

    present = tf.bitwise.bitwise_and(flags, 0x80) > 0
    entries = tf.bitwise.left_shift(2, tf.bitwise.bitwise_and(flags, 0x07))
    return tf.where(present, 3 * entries, 0)


def gif_blocks_before_image(b: tf.Tensor, max_blocks: int) -> tuple[tf.Tensor, tf.Tensor]:
    """(position, steps): the first image descriptor's position in the int32 GIF bytes ``b``
    and the blocks and sub-blocks walked to reach it, one loop step each, at most
    ``max_blocks + 1`` steps. Position -1: no image descriptor (trailer, garbage or end of data
    first) or the step bound was reached (steps > max_blocks)."""
    import tensorflow as tf

    n = tf.size(b)

    def byte(p: tf.Tensor) -> tf.Tensor:
        return tf.gather(b, tf.clip_by_value(p, 0, tf.maximum(n - 1, 0)))

    # Modes: 0 block introducer, 1 extension sub-blocks, 2 image found, 3 give up.
    def step(
        pos: tf.Tensor, mode: tf.Tensor, steps: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        v = byte(pos)
        at_block = tf.equal(mode, 0)
        extension = tf.logical_and(at_block, tf.equal(v, 0x21))
        image = tf.logical_and(at_block, tf.equal(v, 0x2C))
        terminator = tf.logical_and(tf.logical_not(at_block), tf.equal(v, 0))
        new_pos = tf.where(
            extension, pos + 2, tf.where(image, pos, tf.where(terminator, pos + 1, pos + v + 1))
        )
        new_mode = tf.where(
            image, 2, tf.where(extension, 1, tf.where(at_block, 3, tf.where(terminator, 0, 1)))
        )
        new_mode = tf.where(pos < n, new_mode, 3)
        return new_pos, new_mode, steps + tf.cast(tf.logical_not(image), tf.int32)

    header = 13 + _colour_table(byte(10))
    pos, mode, steps = tf.while_loop(
        lambda _pos, mode, steps: tf.logical_and(mode < 2, steps <= max_blocks),
        step,
        (header, tf.constant(0), tf.constant(0)),
        maximum_iterations=max_blocks + 2,
    )
    return tf.where(tf.equal(mode, 2), pos, -1), steps


def gif_first_frame(
    data: tf.Tensor,
    max_blocks: int = contract.DEFAULT_MAX_GIF_BLOCKS,
    where: tf.Tensor | str = "",
) -> tf.Tensor:
    """The GIF cut after its first image, plus a trailer, so decode_gif decodes one frame.

    Pillow's load_img shows the first frame; tf.io.decode_gif would allocate every frame, so a
    small file of many frames on a large screen could demand gigabytes. Fails (INVALID_ARGUMENT,
    naming ``where``) when more than ``max_blocks`` blocks and sub-blocks precede the first
    image; if the stream ends early or is malformed, the data is returned whole for decode_gif
    to reject.
    """
    import tensorflow as tf

    b = _bytes(data)
    image, steps = gif_blocks_before_image(b, max_blocks)
    within = tf.debugging.Assert(
        steps <= max_blocks,
        [
            where,
            f"GIF has more than --max-gif-blocks={max_blocks} blocks (extensions and their "
            "sub-blocks) before its first image",
        ],
    )
    with tf.control_dependencies([within]):
        image = tf.identity(image)

    def cut() -> tf.Tensor:
        # Image descriptor: 10 bytes, local colour table, LZW minimum code size byte.
        descriptor = tf.gather(b, tf.minimum(image + tf.range(1, 10), tf.size(b) - 1))
        data_start = image + 10 + _colour_table(descriptor[8]) + 1
        # The decoder reads only the LZW data the frame's pixels need (see _GIF_BYTES_PER_PIXEL);
        # sub-blocks past that are skipped unread, so the walk stops there and cuts, which
        # keeps its cost within the frame's pixels.
        width = tf.cast(descriptor[4] + 256 * descriptor[5], tf.int64)
        height = tf.cast(descriptor[6] + 256 * descriptor[7], tf.int64)
        needed = tf.cast(data_start, tf.int64) + _GIF_BYTES_PER_PIXEL * width * height + 65536
        stop = tf.cast(tf.minimum(needed, tf.cast(tf.size(b), tf.int64)), tf.int32)
        end, node = sub_block_chain_end(b, data_start, stop)
        return tf.case(
            [
                (end >= 0, lambda: tf.strings.join([tf.strings.substr(data, 0, end + 1), b";"])),
                (
                    tf.equal(end, -2),
                    lambda: tf.strings.join([tf.strings.substr(data, 0, node), b"\x00;"]),
                ),
            ],
            default=lambda: data,
        )

    return tf.cond(image >= 0, cut, lambda: data)
