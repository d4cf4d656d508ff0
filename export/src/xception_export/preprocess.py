"""In-graph image preprocessing that reproduces the Keras reference pipeline.

The reference is ``keras.utils.load_img(path, target_size=(H, W))`` -> float32 ->
``keras.applications.xception.preprocess_input`` (or another mode, see normalization.py). Each
step here is chosen to match it exactly (each trap below was measured):

- the format is sniffed from magic bytes and every decoder is called explicitly, because
  ``tf.io.decode_image`` cannot select libjpeg's accurate integer DCT, which is what Pillow uses;
- decoders ask for 3 channels, which drops alpha without compositing, replicates grey and maps
  palettes, as Pillow's ``convert("RGB")`` does; only the first GIF frame is decoded, as Pillow
  shows it (the stream is cut after it, so many-frame GIFs cannot exhaust memory);
- 16-bit grey PNGs are clipped to 255 (Pillow's ``I;16`` -> ``RGB`` conversion saturates);
- nearest resizing gathers the source rows/columns Pillow picks (a float64 running sum), instead
  of ``tf.image.resize(method="nearest")`` which disagrees at tie points;
- ``x / 127.5 - 1`` keeps the divisor out of constant folding (passed in as a variable), since
  folding turns the division into a multiply that is 1 ulp off for 111 of 256 values.

The image-size limit is checked from the header before any full decode allocates memory, the
structures whose decode cost does not follow the pixel count (JPEG scans, GIF blocks, PNG
compressed text) are counted before the decode too (structure.py, ``DecodeLimits``), and every
failure is an ``InvalidArgumentError`` naming the problem (TF Serving answers INVALID_ARGUMENT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from xception_export import structure
from xception_export.reference import height_width

# Re-exported: callers build limits and cut GIFs through this module.
from xception_export.structure import DecodeLimits as DecodeLimits
from xception_export.structure import gif_first_frame as gif_first_frame

if TYPE_CHECKING:
    import tensorflow as tf

DEFAULT_LIMITS: Final = DecodeLimits()

# (height, width), as load_img's target_size; an int means a square side.
Size = int | tuple[int, int]


# Keras load_img's interpolation names (its PIL_INTERPOLATION_METHODS keys).
INTERPOLATIONS: Final = ("nearest", "bilinear", "bicubic", "hamming", "box", "lanczos")
DEFAULT_INTERPOLATION: Final = "nearest"

# Format codes used by the dispatch below (index into the decoder branches).
_JPEG, _PNG, _GIF, _BMP, _UNKNOWN = 0, 1, 2, 3, 4


def _u8(data: tf.Tensor, start: int, length: int) -> tf.Tensor:
    """Bytes ``data[start:start+length]`` as int64 values (data must be long enough)."""
    import tensorflow as tf

    raw = tf.io.decode_raw(tf.strings.substr(data, start, length), tf.uint8)
    return tf.cast(raw, tf.int64)


def _uint_le(data: tf.Tensor, start: int, length: int) -> tf.Tensor:
    import tensorflow as tf

    b = _u8(data, start, length)
    return tf.add_n([b[i] * (256**i) for i in range(length)])


def _uint_be(data: tf.Tensor, start: int, length: int) -> tf.Tensor:
    import tensorflow as tf

    b = _u8(data, start, length)
    return tf.add_n([b[i] * (256 ** (length - 1 - i)) for i in range(length)])


def sniff_format(data: tf.Tensor) -> tf.Tensor:
    """int32 format code of one encoded image from its magic bytes (``_UNKNOWN`` if none)."""
    import tensorflow as tf

    head = tf.strings.substr(data, 0, 8)
    return tf.case(
        [
            (tf.equal(tf.strings.substr(head, 0, 3), b"\xff\xd8\xff"), lambda: tf.constant(_JPEG)),
            (tf.equal(head, b"\x89PNG\r\n\x1a\n"), lambda: tf.constant(_PNG)),
            (
                tf.logical_or(
                    tf.equal(tf.strings.substr(head, 0, 6), b"GIF87a"),
                    tf.equal(tf.strings.substr(head, 0, 6), b"GIF89a"),
                ),
                lambda: tf.constant(_GIF),
            ),
            (tf.equal(tf.strings.substr(head, 0, 2), b"BM"), lambda: tf.constant(_BMP)),
        ],
        default=lambda: tf.constant(_UNKNOWN),
        exclusive=False,
    )


def _header_size(data: tf.Tensor, fmt: tf.Tensor, where: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 read from the header only; fails when the header is cut short."""
    import tensorflow as tf

    length = tf.cast(tf.strings.length(data), tf.int64)

    def need(n: int, what: str) -> tf.Operation:
        return tf.debugging.Assert(
            length >= n, [where, f"truncated {what} header ({n} bytes needed), got bytes:", length]
        )

    def jpeg() -> tf.Tensor:
        # Parses markers up to SOF only; raises INVALID_ARGUMENT itself on a broken header.
        shape = tf.io.extract_jpeg_shape(data, output_type=tf.int64)
        return shape[:2]

    def png() -> tf.Tensor:
        with tf.control_dependencies([need(26, "PNG")]):
            return tf.stack([_uint_be(data, 20, 4), _uint_be(data, 16, 4)])

    def gif() -> tf.Tensor:
        # The logical screen: every frame TF decodes has this size, and only the first frame is
        # decoded (see gif_first_frame).
        with tf.control_dependencies([need(10, "GIF")]):
            return tf.stack([_uint_le(data, 8, 2), _uint_le(data, 6, 2)])

    def bmp() -> tf.Tensor:
        with tf.control_dependencies([need(26, "BMP")]):
            width = _uint_le(data, 18, 4)
            height = _uint_le(data, 22, 4)
            # Signed 32-bit: a negative height means a top-down bitmap.
            width = tf.where(width >= 2**31, 2**32 - width, width)
            height = tf.where(height >= 2**31, 2**32 - height, height)
            return tf.stack([height, width])

    return tf.switch_case(fmt, [jpeg, png, gif, bmp])


def decode_rgb(
    data: tf.Tensor,
    max_pixels: int,
    where: tf.Tensor,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> tf.Tensor:
    """Decode one encoded image to uint8 [H, W, 3] exactly as Pillow + ``convert("RGB")``.

    ``where`` is a string tensor prefixed to error messages (e.g. ``image_bytes[3]:``);
    ``limits`` bound the decode work that does not follow the pixel count (structure.py).
    """
    import tensorflow as tf

    fmt, hw = _known_format_and_size(data, where)
    size_checks = _size_checks(hw, max_pixels, where)

    def jpeg() -> tf.Tensor:
        return _decode_jpeg(data, where, limits.max_jpeg_scans)

    def png() -> tf.Tensor:
        return _decode_png(data, where, limits.max_png_text_chunks)

    def gif() -> tf.Tensor:
        return tf.io.decode_gif(gif_first_frame(data, limits.max_gif_blocks, where))[0]

    def bmp() -> tf.Tensor:
        return tf.io.decode_bmp(data, channels=3)

    with tf.control_dependencies(size_checks):
        fmt = tf.identity(fmt)
        image = tf.switch_case(fmt, [jpeg, png, gif, bmp])
    image = tf.ensure_shape(image, [None, None, 3])
    return image


def _known_format_and_size(data: tf.Tensor, where: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The format code and header (height, width) of one image; fails on empty data, an unknown
    format or a header cut short, before anything is decoded."""
    import tensorflow as tf

    not_empty = tf.debugging.Assert(tf.strings.length(data) > 0, [where, "empty image (0 bytes)"])
    with tf.control_dependencies([not_empty]):
        fmt = sniff_format(data)
    known = tf.debugging.Assert(
        fmt != _UNKNOWN,
        [
            where,
            "unsupported or undecodable image format (expected JPEG, PNG, GIF or BMP); "
            "first bytes:",
            # As numbers: raw bytes would make the status message invalid UTF-8.
            tf.io.decode_raw(tf.strings.substr(data, 0, 8), tf.uint8),
        ],
    )
    with tf.control_dependencies([known]):
        fmt = tf.identity(fmt)
        hw = _header_size(data, fmt, where)
    return fmt, hw


def _size_checks(hw: tf.Tensor, max_pixels: int, where: tf.Tensor) -> list[tf.Operation]:
    """Assertions that the header's (height, width) is neither over ``max_pixels`` nor empty."""
    import tensorflow as tf

    pixels = hw[0] * hw[1]
    small_enough = tf.debugging.Assert(
        pixels <= max_pixels,
        [
            where,
            f"image too large: more than --max-pixels={max_pixels} pixels; header says "
            "height x width =",
            hw[0],
            hw[1],
        ],
        summarize=4,
    )
    non_zero = tf.debugging.Assert(pixels > 0, [where, "image header declares zero size:", hw])
    return [small_enough, non_zero]


def _decode_jpeg(data: tf.Tensor, where: tf.Tensor, max_scans: int) -> tf.Tensor:
    """RGB with libjpeg's accurate integer DCT (Pillow's), once the scan count is within limit."""
    import tensorflow as tf

    scans = structure.jpeg_scan_count(data, max_scans)
    few_scans = tf.debugging.Assert(
        scans <= max_scans,
        [
            where,
            f"JPEG has more than --max-jpeg-scans={max_scans} scans (each "
            "progressive scan is one more pass over the whole image)",
        ],
    )
    with tf.control_dependencies([few_scans]):
        return tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE")


def _decode_png(data: tf.Tensor, where: tf.Tensor, max_text_chunks: int) -> tf.Tensor:
    """RGB as Pillow converts it (16-bit grey saturated), once the compressed text chunks are
    within limit."""
    import tensorflow as tf

    bit_depth = tf.strings.substr(data, 24, 1)
    colour_type = tf.strings.substr(data, 25, 1)
    grey16 = tf.logical_and(
        tf.equal(bit_depth, b"\x10"),
        tf.logical_or(tf.equal(colour_type, b"\x00"), tf.equal(colour_type, b"\x04")),
    )

    def saturate16() -> tf.Tensor:
        # Pillow opens 16-bit grey as I;16 and convert("RGB") clips it to 0..255.
        wide = tf.io.decode_png(data, channels=3, dtype=tf.uint16)
        return tf.cast(tf.minimum(wide, 255), tf.uint8)

    few_texts = tf.debugging.Assert(
        structure.png_text_chunks(data) <= max_text_chunks,
        [
            where,
            f"PNG has more than --max-png-text-chunks={max_text_chunks} "
            "compressed text chunks (zTXt, iTXt: each is inflated, up to 8 MB)",
        ],
    )
    with tf.control_dependencies([few_texts]):
        return tf.cond(grey16, saturate16, lambda: tf.io.decode_png(data, channels=3))


def _true_divide(numerator: tf.Tensor, denominator: float) -> tf.Tensor:
    """``numerator / denominator`` as an IEEE division even in a graph.

    Grappler's constant folding rewrites a division by a constant into a multiply by its
    reciprocal, which is 1 ulp off for many pairs (e.g. 96 / 80); on a tie of Pillow's running
    sum (96 -> 80 rows: 0.6 + 12 * 1.2 = 15) that moves a whole row. DivNoNan is not rewritten
    and divides exactly for a non-zero denominator.
    """
    import tensorflow as tf

    return tf.math.divide_no_nan(numerator, tf.constant(denominator, numerator.dtype))


def _pillow_nearest_indices(in_size: tf.Tensor, out_size: int) -> tf.Tensor:
    """Source indices Pillow's NEAREST resize reads along one axis (float64 running sum)."""
    import tensorflow as tf

    n = tf.cast(in_size, tf.float64)
    step = _true_divide(n, float(out_size))
    steps = tf.concat([[step / 2.0], tf.fill([out_size - 1], step)], axis=0)
    idx = tf.cast(tf.floor(tf.cumsum(steps)), tf.int32)
    return tf.minimum(idx, tf.cast(in_size, tf.int32) - 1)


# Pillow's filters (src/libImaging/Resample.c): support radius and weight function on float64.
_SUPPORT: Final = {"box": 0.5, "bilinear": 1.0, "hamming": 1.0, "bicubic": 2.0, "lanczos": 3.0}
_PRECISION_BITS: Final = 32 - 8 - 2  # Pillow's fixed-point coefficient precision
_F32_054: Final = 0.5400000214576721  # float32(0.54) as a double
_F32_046: Final = 0.46000000834465027  # float32(0.46) as a double


def _pillow_filter(name: str, x: tf.Tensor) -> tf.Tensor:
    import math

    import tensorflow as tf

    zero = tf.zeros_like(x)
    one = tf.ones_like(x)
    ax = tf.abs(x)

    def sinc(t: tf.Tensor) -> tf.Tensor:
        tp = t * math.pi
        safe = tf.where(tf.equal(t, 0.0), one, tp)
        return tf.where(tf.equal(t, 0.0), one, tf.sin(safe) / safe)

    if name == "box":
        return tf.where(tf.logical_and(x > -0.5, x <= 0.5), one, zero)
    if name == "bilinear":
        return tf.where(ax < 1.0, 1.0 - ax, zero)
    if name == "hamming":
        axp = ax * math.pi
        safe = tf.where(tf.equal(ax, 0.0), one, axp)
        # Pillow writes these two as float literals (0.54f, 0.46f).
        value = tf.sin(safe) / safe * (_F32_054 + _F32_046 * tf.cos(safe))
        return tf.where(tf.equal(ax, 0.0), one, tf.where(ax >= 1.0, zero, value))
    if name == "bicubic":
        a = -0.5
        near = ((a + 2.0) * ax - (a + 3.0)) * ax * ax + 1.0
        far = (((ax - 5.0) * ax + 8.0) * ax - 4.0) * a
        return tf.where(ax < 1.0, near, tf.where(ax < 2.0, far, zero))
    if name == "lanczos":
        inside = tf.logical_and(x >= -3.0, x < 3.0)
        return tf.where(inside, sinc(x) * sinc(x / 3.0), zero)
    raise ValueError(f"no Pillow filter {name!r}")


def _pillow_coefficients(in_size: tf.Tensor, out_size: int, name: str) -> tf.Tensor:
    """Pillow's fixed-point resampling weights as a float64 [out_size, in_size] matrix.

    Follows ``precompute_coeffs`` + ``normalize_coeffs_8bpc``: the filter widens by the scale when
    reducing, each row is normalised by its (sequential) sum, then rounded to 22-bit fixed point.
    """
    import tensorflow as tf

    n = tf.cast(in_size, tf.float64)
    scale = _true_divide(n, float(out_size))
    filterscale = tf.maximum(scale, 1.0)
    support = _SUPPORT[name] * filterscale
    centre = (tf.range(out_size, dtype=tf.float64) + 0.5) * scale  # [out]
    xmin = tf.maximum(tf.floor(centre - support + 0.5), 0.0)
    xmax = tf.minimum(tf.floor(centre + support + 0.5), n)
    src = tf.range(tf.cast(in_size, tf.float64), dtype=tf.float64)  # [in]
    offsets = (src[tf.newaxis, :] - centre[:, tf.newaxis] + 0.5) * (1.0 / filterscale)
    inside = tf.logical_and(
        src[tf.newaxis, :] >= xmin[:, tf.newaxis], src[tf.newaxis, :] < xmax[:, tf.newaxis]
    )
    weights = tf.where(inside, _pillow_filter(name, offsets), tf.zeros_like(offsets))
    # Pillow sums left to right; a running sum keeps that order (zeros outside change nothing).
    total = tf.cumsum(weights, axis=1)[:, -1:]
    weights = tf.where(tf.equal(total, 0.0), weights, weights / total)
    fixed = tf.sign(weights) * tf.floor(tf.abs(weights) * float(1 << _PRECISION_BITS) + 0.5)
    return fixed


def _pillow_pass(image: tf.Tensor, coeffs: tf.Tensor, axis: int) -> tf.Tensor:
    """One fixed-point pass along ``axis`` (0 rows, 1 columns) of float64 [H, W, 3] in 0..255:
    ``clip8((2**21 + sum(pixel * k)) >> 22)``. Every partial sum is an integer below 2**53, so the
    float64 matmul is exact whatever its summation order."""
    import tensorflow as tf

    if axis == 1:
        acc = tf.einsum("hwc,xw->hxc", image, coeffs)
    else:
        acc = tf.einsum("hwc,yh->ywc", image, coeffs)
    shifted = tf.floor((acc + float(1 << (_PRECISION_BITS - 1))) / float(1 << _PRECISION_BITS))
    return tf.clip_by_value(shifted, 0.0, 255.0)


def _pillow_resample(image: tf.Tensor, size: tuple[int, int], name: str) -> tf.Tensor:
    """Pillow's ``ImagingResample`` for RGB: horizontal pass then vertical, each to uint8 values,
    a pass skipped when that axis already has the target size."""
    import tensorflow as tf

    height, width = size
    shape = tf.shape(image)
    x = tf.cast(image, tf.float64)
    x = tf.cond(
        tf.equal(shape[1], width),
        lambda: x,
        lambda: _pillow_pass(x, _pillow_coefficients(shape[1], width, name), axis=1),
    )
    x = tf.cond(
        tf.equal(shape[0], height),
        lambda: x,
        lambda: _pillow_pass(x, _pillow_coefficients(shape[0], height, name), axis=0),
    )
    return tf.cast(x, tf.float32)


def resize(image: tf.Tensor, size: Size, interpolation: str) -> tf.Tensor:
    """Resize uint8 [h, w, 3] to float32 [H, W, 3] (``size`` = (H, W) or a square side) as
    Pillow's ``Image.resize`` would for ``load_img(target_size=(H, W))``.

    Nearest is exact; the other filters approximate Pillow's (fixed-point rounding and filter
    support differ), bounded by tests.
    """
    import tensorflow as tf

    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}. "
            f"Received: interpolation={interpolation!r}"
        )
    height, width = height_width(size)
    shape = tf.shape(image)
    if interpolation == "nearest":
        rows = _pillow_nearest_indices(shape[0], height)
        cols = _pillow_nearest_indices(shape[1], width)
        out = tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)
        return tf.cast(out, tf.float32)

    same = tf.logical_and(tf.equal(shape[0], height), tf.equal(shape[1], width))
    # load_img skips the resize when the image already has the target size.
    return tf.cond(
        same,
        lambda: tf.cast(image, tf.float32),
        lambda: _pillow_resample(image, (height, width), interpolation),
    )


def normalize(pixels: tf.Tensor, divisor: tf.Tensor) -> tf.Tensor:
    """Xception's ``preprocess_input`` (mode "tf"): ``x / 127.5 - 1`` in float32.

    ``divisor`` must hold 127.5 but not be a graph constant (see the module docstring).
    """
    import tensorflow as tf

    return tf.cast(pixels, tf.float32) / divisor - 1.0


Normalizer = Callable[["tf.Tensor"], "tf.Tensor"]


def _normalizer(divisor: tf.Tensor | None, normalizer: Normalizer | None) -> Normalizer:
    if normalizer is not None:
        return normalizer
    if divisor is None:
        raise ValueError("give divisor (mode 'tf') or normalizer (see normalization.py)")
    return lambda x: normalize(x, divisor)


def preprocess_one(
    data: tf.Tensor,
    where: tf.Tensor,
    *,
    size: Size,
    interpolation: str,
    max_pixels: int,
    divisor: tf.Tensor | None = None,
    normalizer: Normalizer | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> tf.Tensor:
    """One encoded image -> float32 [H, W, 3] model input, identical to the Keras pipeline.

    ``normalizer`` is the preprocess_input mode (default: mode "tf" with ``divisor``).
    """
    image = decode_rgb(data, max_pixels, where, limits)
    return _normalizer(divisor, normalizer)(resize(image, size, interpolation))


def preprocess_batch(
    images: tf.Tensor,
    *,
    size: Size,
    interpolation: str,
    max_pixels: int,
    divisor: tf.Tensor | None = None,
    normalizer: Normalizer | None = None,
    name: str = "image_bytes",
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> tf.Tensor:
    """A [N] string batch of encoded images (mixed sizes/formats) -> float32 [N, H, W, 3]."""
    import tensorflow as tf

    norm = _normalizer(divisor, normalizer)
    height, width = height_width(size)

    indices = tf.range(tf.shape(images)[0])
    wheres = tf.strings.join([f"{name}[", tf.strings.as_string(indices), "]:"])

    def one(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        return preprocess_one(
            args[0],
            args[1],
            size=size,
            interpolation=interpolation,
            max_pixels=max_pixels,
            normalizer=norm,
            limits=limits,
        )

    return tf.map_fn(
        one,
        (images, wheres),
        fn_output_signature=tf.TensorSpec([height, width, 3], tf.float32),
    )
