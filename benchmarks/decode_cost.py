"""Decode cost of hostile images against normal ones, through the export's in-graph preprocessing.

    .venv/bin/python -m benchmarks.decode_cost [--side S] [--quick] [--repeat N]

Each input (at most 20 MB) is timed through ``preprocess.preprocess_batch`` in a tf.function
(the graph the bytes and classify signatures run before the network), twice: with limits too
large to refuse anything ("before") and with the export's default limits ("after"); and through
TensorFlow's decoder alone. Each time is the best of ``--repeat`` runs (a run over a second is
not repeated): one run on a shared machine varies 2x. A bomb is listed after a normal image of
the same declared size. The table gives input, bytes, declared size, seconds and whether the
graph refused it (with the message). Each decoder branch runs once on a small image first, since
a branch's first run instantiates its function (~1 s).

The builders (``jpeg_scan_bomb``, ``gif_*``, ``png_*``, ``bmp_*``) make each input from scratch;
the hostile-image tests build small ones with them.
"""

from __future__ import annotations

import argparse
import io
import struct
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.images import photo_like

# -- builders ---------------------------------------------------------------------------------


def _save(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(side: int, seed: int = 0) -> Image.Image:
    """A photo-like RGB image, side x side (benchmarks.images.photo_like)."""
    return photo_like(side, side, np.random.default_rng(seed))


def jpeg_photo(side: int, progressive: bool = False) -> bytes:
    return _save(photo(side), "JPEG", quality=90, progressive=progressive)


def jpeg_scan_bomb(side: int, repeats: int) -> bytes:
    """A flat progressive JPEG (Pillow's 10 scans) whose last scan is repeated ``repeats`` more
    times before EOI: libjpeg makes one pass over the whole image per scan."""
    data = _save(Image.new("RGB", (side, side), (120, 130, 140)), "JPEG", progressive=True)
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + data[-2:]


def jpeg_with_comments(data: bytes, count: int) -> bytes:
    """The JPEG with ``count`` empty comment segments after SOI (4 bytes each)."""
    return data[:2] + b"\xff\xfe\x00\x02" * count + data[2:]


def jpeg_scans(data: bytes) -> int:
    """Scans (SOS markers) in a JPEG written by Pillow (no 0xFFDA inside its metadata)."""
    return data.count(b"\xff\xda")


@dataclass(frozen=True)
class GifParts:
    """A one-frame GIF split where the hostile variants change it."""

    head: bytes  # header, logical screen, global colour table
    before: bytes  # extension blocks before the image descriptor
    descriptor: bytes  # image descriptor, local colour table, LZW minimum code size
    lzw: bytes  # the image's LZW data, sub-block framing removed


def gif_parts(data: bytes) -> GifParts:
    """Split a GIF (as Pillow writes one) into its parts, up to the end of the first image."""

    def table(flags: int) -> int:
        return 3 * (2 << (flags & 7)) if flags & 0x80 else 0

    def sub_blocks(pos: int) -> tuple[bytes, int]:
        out = bytearray()
        while data[pos]:
            out += data[pos + 1 : pos + 1 + data[pos]]
            pos += data[pos] + 1
        return bytes(out), pos + 1

    head_end = 13 + table(data[10])
    pos = head_end
    while data[pos] == 0x21:
        pos = sub_blocks(pos + 2)[1]
    image = pos
    lzw_start = image + 10 + table(data[image + 9]) + 1
    lzw, _end = sub_blocks(lzw_start)
    return GifParts(data[:head_end], data[head_end:image], data[image:lzw_start], lzw)


def gif_join(parts: GifParts, sub_block: int = 255) -> bytes:
    """A GIF from its parts, the LZW data framed in sub-blocks of ``sub_block`` bytes."""
    lzw = parts.lzw
    framed = b"".join(
        bytes([len(lzw[i : i + sub_block])]) + lzw[i : i + sub_block]
        for i in range(0, len(lzw), sub_block)
    )
    return parts.head + parts.before + parts.descriptor + framed + b"\x00\x3b"


def gif_photo(side: int, frames: int = 1) -> bytes:
    """A photo-like GIF, side x side (an adaptive palette), with ``frames`` frames."""
    images = [
        photo(side, seed).convert("P", palette=Image.Palette.ADAPTIVE) for seed in range(frames)
    ]
    return _save(images[0], "GIF", save_all=frames > 1, append_images=images[1:])


def gif_small(side: int = 1) -> GifParts:
    return gif_parts(_save(Image.new("P", (side, side), 0), "GIF"))


def gif_sub_block_bomb(count: int, side: int = 1) -> bytes:
    """A comment extension of ``count`` one-byte sub-blocks before the image (2 bytes each)."""
    parts = gif_small(side)
    comment = b"\x21\xfe" + b"\x01x" * count + b"\x00"
    return gif_join(GifParts(parts.head, comment, parts.descriptor, parts.lzw))


def gif_extension_bomb(count: int, side: int = 1) -> bytes:
    """``count`` empty comment extensions before the image (3 bytes each)."""
    parts = gif_small(side)
    return gif_join(GifParts(parts.head, b"\x21\xfe\x00" * count, parts.descriptor, parts.lzw))


def gif_split(data: bytes) -> bytes:
    """The same GIF with its first image's LZW data in one-byte sub-blocks (legal; 2x bytes)."""
    return gif_join(gif_parts(data), sub_block=1)


def gif_junk_after_image(data: bytes, size: int) -> bytes:
    """The GIF with ``size`` bytes of sub-blocks of 1 and 2 bytes in turn appended to its first
    image's data: the decoder skips them unread, a per-sub-block walk does not."""
    parts = gif_parts(data)
    framed = gif_join(parts)[len(parts.head) + len(parts.before) + len(parts.descriptor) : -2]
    junk = b"\x01a\x02bb" * (size // 5)
    return parts.head + parts.before + parts.descriptor + framed + junk + b"\x00\x3b"


def gif_split_irregular(data: bytes) -> bytes:
    """The same GIF with its first image's LZW data in sub-blocks of 1 and 2 bytes in turn."""
    parts = gif_parts(data)
    framed, pos, size = bytearray(), 0, 1
    while pos < len(parts.lzw):
        piece = parts.lzw[pos : pos + size]
        framed += bytes([len(piece)]) + piece
        pos, size = pos + len(piece), 3 - size
    return parts.head + parts.before + parts.descriptor + bytes(framed) + b"\x00\x3b"


def gif_split_random(data: bytes, seed: int = 0) -> bytes:
    """The same GIF with its first image's LZW data in sub-blocks of random lengths, 1 to 255."""
    parts = gif_parts(data)
    rng = np.random.default_rng(seed)
    framed, pos = bytearray(), 0
    while pos < len(parts.lzw):
        piece = parts.lzw[pos : pos + int(rng.integers(1, 256))]
        framed += bytes([len(piece)]) + piece
        pos += len(piece)
    return parts.head + parts.before + parts.descriptor + bytes(framed) + b"\x00\x3b"


def png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _png_split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(signature + chunks before IDAT, the IDAT stream, chunks after) of a PNG."""
    pos, head, idat = 8, bytearray(data[:8]), bytearray()
    while True:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, end = data[pos + 4 : pos + 8], pos + 12 + length
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        elif not idat:
            head += data[pos:end]
        else:
            return bytes(head), bytes(idat), data[pos:]
        pos = end


def png_photo(side: int) -> bytes:
    return _save(photo(side), "PNG")


def png_with_chunks(data: bytes, count: int, kind: bytes = b"prVt", body: bytes = b"") -> bytes:
    """The PNG with ``count`` ancillary chunks before its image data."""
    head, idat, tail = _png_split(data)
    return head + png_chunk(kind, body) * count + png_chunk(b"IDAT", idat) + tail


def png_split_idat(data: bytes, size: int = 1) -> bytes:
    """The PNG with its image data split into IDAT chunks of ``size`` bytes (legal)."""
    head, idat, tail = _png_split(data)
    chunks = b"".join(png_chunk(b"IDAT", idat[i : i + size]) for i in range(0, len(idat), size))
    return head + chunks + tail


def png_ztxt_bomb(data: bytes, count: int, expands_to: int = 8 << 20) -> bytes:
    """The PNG with ``count`` zTXt chunks, each ``expands_to`` zero bytes deflated (~1000:1)."""
    text = b"Comment\x00\x00" + zlib.compress(bytes(expands_to), 9)
    return png_with_chunks(data, count, b"zTXt", text)


def bmp_photo(side: int) -> bytes:
    return _save(photo(side), "BMP")


def bmp_far_pixels(data: bytes, gap: int) -> bytes:
    """The BMP with ``gap`` bytes between its header and its pixels (the offset field moved)."""
    (offset,) = struct.unpack("<I", data[10:14])
    moved = data[:10] + struct.pack("<I", offset + gap) + data[14:offset]
    return moved + bytes(gap) + data[offset:]


# -- timing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    declared: tuple[int, int]  # (height, width) the header declares
    data: bytes


def cases(side: int, quick: bool) -> list[Case]:
    """Each bomb after the normal image of its declared size."""
    scale = 10 if quick else 1
    sq = (side, side)
    png = png_photo(side)
    gif = gif_photo(side)
    small_png, mid_png = png_photo(64), png_photo(600)
    tiny = gif_join(gif_small())
    return [
        Case("jpeg baseline photo", sq, jpeg_photo(side)),
        Case("jpeg progressive photo", sq, jpeg_photo(side, progressive=True)),
        Case("jpeg scan bomb: 32 scans", sq, jpeg_scan_bomb(side, 22)),
        Case("jpeg scan bomb: 2010 scans", sq, jpeg_scan_bomb(side, 2000 // scale)),
        Case("jpeg 64x64", (64, 64), jpeg_photo(64)),
        Case(
            "jpeg 64x64, 1M empty comments",
            (64, 64),
            jpeg_with_comments(jpeg_photo(64), 1_000_000 // scale),
        ),
        Case("gif photo", sq, gif),
        Case("gif photo, 1-byte sub-blocks", sq, gif_split(gif)),
        Case("gif photo, 1/2-byte sub-blocks", sq, gif_split_irregular(gif)),
        Case("gif photo, 1-255-byte sub-blocks", sq, gif_split_random(gif)),
        # The longest walk a 20 MB file can ask of this size: the frame's data, then 16 MB of
        # 1/2-byte sub-blocks, all before the cut (the walk's bound is 4 bytes a pixel).
        Case("gif photo + 16 MB 1/2-byte junk", sq, gif_junk_after_image(gif, 16 << 20)),
        Case("gif photo, 3 frames", sq, gif_photo(side, frames=3)),
        Case("gif 1x1", (1, 1), tiny),
        Case("gif 1M 1-byte sub-blocks", (1, 1), gif_sub_block_bomb(1_000_000 // scale)),
        Case("gif 1M empty extensions", (1, 1), gif_extension_bomb(1_000_000 // scale)),
        Case("gif 1x1, 19 MB junk sub-blocks", (1, 1), gif_junk_after_image(tiny, 19 << 20)),
        Case("png photo", sq, png),
        Case("png photo, 1M empty chunks", sq, png_with_chunks(png, 1_000_000 // scale)),
        Case("png 64x64", (64, 64), small_png),
        Case(
            "png 64x64, 1M empty chunks", (64, 64), png_with_chunks(small_png, 1_000_000 // scale)
        ),
        Case("png 64x64, 1-byte IDATs", (64, 64), png_split_idat(small_png)),
        Case("png 600x600", (600, 600), mid_png),
        Case("png 600x600, 1-byte IDATs", (600, 600), png_split_idat(mid_png)),
        Case("png 64x64, 2000 zTXt bombs", (64, 64), png_ztxt_bomb(small_png, 2000 // scale)),
        Case("bmp photo", sq, bmp_photo(side)),
        Case("bmp photo, 7 MB gap", sq, bmp_far_pixels(bmp_photo(side), 7 << 20)),
    ]


def _warm_inputs() -> list[bytes]:
    """One small image per decoder branch: a branch's first run instantiates its function."""
    return [
        jpeg_photo(16),
        jpeg_photo(16, progressive=True),
        png_photo(16),
        gif_photo(16),
        gif_split_irregular(gif_photo(16)),
        bmp_photo(16),
    ]


def graph_preprocessing(limits: Any) -> Any:
    """The export's in-graph preprocessing of a [N] string batch (71x71, nearest, the default
    --max-pixels) under ``limits``, as one tf.function."""
    import tensorflow as tf
    import xception_contract as contract
    from xception_export import preprocess

    divisor = tf.Variable(127.5, trainable=False)
    return tf.function(
        lambda images: preprocess.preprocess_batch(
            images,
            size=71,
            interpolation="nearest",
            max_pixels=contract.DEFAULT_MAX_PIXELS,
            divisor=divisor,
            limits=limits,
        ),
        input_signature=[tf.TensorSpec([None], tf.string)],
    )


def preprocessor(limits: Any, repeat: int = 1) -> Callable[[bytes], tuple[float, str]]:
    """Seconds for one image through the graph's preprocessing, and its refusal message ("")."""
    import tensorflow as tf

    run = graph_preprocessing(limits)
    for data in _warm_inputs():
        run(tf.constant([data]))

    def once(batch: Any) -> tuple[float, str]:
        started = time.perf_counter()
        try:
            run(batch)
        except tf.errors.InvalidArgumentError as err:
            message = err.message.split("assertion failed: ")[-1].splitlines()[0]
            return time.perf_counter() - started, message
        return time.perf_counter() - started, ""

    def timed(data: bytes) -> tuple[float, str]:
        batch = tf.constant([data])
        return _best(lambda: once(batch), repeat)

    return timed


def _best(run: Callable[[], tuple[float, str]], repeat: int) -> tuple[float, str]:
    """The fastest of ``repeat`` (seconds, outcome) results of ``run``; a run over a second is
    not repeated."""
    best = run()
    for _ in range(repeat - 1):
        if best[0] > 1.0:
            break
        best = min(best, run(), key=lambda result: result[0])
    return best


def decoder_alone(repeat: int = 1) -> Callable[[bytes], str]:
    """Seconds of TensorFlow's own decoder on the whole file (what the graph calls, without our
    checks or GIF cut; a GIF decodes every frame), or its error."""
    import tensorflow as tf

    decoders = {
        b"\xff\xd8": lambda d: tf.io.decode_jpeg(d, channels=3, dct_method="INTEGER_ACCURATE"),
        b"\x89P": lambda d: tf.io.decode_png(d, channels=3),
        b"GI": tf.io.decode_gif,
        b"BM": lambda d: tf.io.decode_bmp(d, channels=3),
    }
    functions = {
        magic: tf.function(fn, input_signature=[tf.TensorSpec([], tf.string)])
        for magic, fn in decoders.items()
    }
    for data in _warm_inputs():
        functions[data[:2]](tf.constant(data))

    def once(tensor: Any, magic: bytes) -> tuple[float, str]:
        started = time.perf_counter()
        try:
            functions[magic](tensor)
        except tf.errors.OpError:
            return time.perf_counter() - started, "E"
        return time.perf_counter() - started, ""

    def timed(data: bytes) -> str:
        tensor = tf.constant(data)
        seconds, failed = _best(lambda: once(tensor, data[:2]), repeat)
        return f"{seconds:.3f}{failed}"

    return timed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decode_cost", description=__doc__)
    parser.add_argument("--side", type=int, default=2000, help="normal images' side (2000)")
    parser.add_argument("--quick", action="store_true", help="bombs 10x smaller")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per time, the best kept (3; 1 s+ runs once)"
    )
    args = parser.parse_args(argv)

    from xception_contract import tf_startup

    tf_startup.install()
    from xception_export.preprocess import DecodeLimits

    # Large enough to refuse none of the inputs (the scan bomb has 2010 scans).
    unbounded = DecodeLimits(
        max_jpeg_scans=4096, max_gif_blocks=1 << 24, max_png_text_chunks=1 << 20
    )
    before = preprocessor(unbounded, args.repeat)
    after, alone = preprocessor(DecodeLimits(), args.repeat), decoder_alone(args.repeat)
    print(f"limits before: {unbounded}; after: {DecodeLimits()} (the defaults)")
    print("decoder s: tf.io.decode_* alone on the whole file (E: it failed)")
    header = f"{'input':32s} {'bytes':>10s} {'declared':>11s} {'decoder s':>9s} {'before s':>9s}"
    print(header + f" {'after s':>8s}  after: refused?")
    for case in cases(args.side, args.quick):
        seconds_alone = alone(case.data)
        seconds_before, refused_before = before(case.data)
        seconds_after, refused_after = after(case.data)
        declared = f"{case.declared[0]}x{case.declared[1]}"
        outcome = f"refused: {refused_after}" if refused_after else "decoded"
        if refused_before:
            outcome += f" (before also refused: {refused_before})"
        print(
            f"{case.name:32s} {len(case.data):>10d} {declared:>11s} {seconds_alone:>9s} "
            f"{seconds_before:>9.3f} {seconds_after:>8.3f}  {outcome}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
