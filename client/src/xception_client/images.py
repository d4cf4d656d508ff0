"""Turn what users hold (paths, bytes, files, PIL images, arrays, URLs) into bytes to send.

Rules, so predictions match Keras ``load_img`` on the server side:

- Encoded files in a format the exported graph decodes (``contract.GRAPH_DECODABLE_FORMATS``:
  JPEG, PNG, GIF, BMP) are sent as their original bytes: no re-encoding, no resize on the client.
- Everything else (numpy arrays, PIL images, files in other formats such as WebP or TIFF) is
  encoded losslessly as PNG.
- Every image is checked locally first: a readable header and at most ``max_pixels`` pixels,
  read from the header without decoding; failures raise :class:`~xception_client.InvalidImage`
  before anything is sent.
- EXIF orientation is ignored by default, like Keras ``load_img``; ``apply_exif_orientation=True``
  rotates the pixels (and then re-encodes as PNG).
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias, Union

import numpy as np
import xception_contract as contract
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InvalidImage

__all__ = ["EncodedImage", "ImageInput", "load_image"]

#: Anything :func:`load_image` (and so every predict method) accepts.
ImageInput: TypeAlias = Union[
    str,
    "os.PathLike[str]",
    bytes,
    bytearray,
    memoryview,
    IO[bytes],
    Image.Image,
    "np.ndarray[Any, Any]",
]

DEFAULT_URL_TIMEOUT = 10.0  # seconds
DEFAULT_URL_MAX_BYTES = 50 * 1024 * 1024
# Pillow calls JPEGs with a multi-picture (MPO) segment "MPO"; the graph decodes them as JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
# PNG stores these modes losslessly; other modes (CMYK, YCbCr, float) are converted to RGB first,
# which is what Keras load_img does with them too.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16"})


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """Bytes ready to send, with what the local check found."""

    data: bytes
    format: str  # format of ``data``: one of GRAPH_DECODABLE_FORMATS
    width: int
    height: int
    reencoded: bool  # True when the client encoded the bytes (PNG), False for the original file


def load_image(
    source: ImageInput,
    *,
    max_pixels: int = contract.DEFAULT_MAX_PIXELS,
    apply_exif_orientation: bool = False,
    url_timeout: float = DEFAULT_URL_TIMEOUT,
    url_max_bytes: int = DEFAULT_URL_MAX_BYTES,
) -> EncodedImage:
    """Load, check and (only if needed) encode one image. Raises InvalidImage on any problem."""
    if isinstance(source, Image.Image):
        return _from_pil(source, max_pixels, apply_exif_orientation)
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, str) and source.startswith(("http://", "https://")):
        data = _fetch_url(source, timeout=url_timeout, max_bytes=url_max_bytes)
        return _from_bytes(data, source, max_pixels, apply_exif_orientation)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            data = path.read_bytes()
        except OSError as error:
            raise InvalidImage(f"cannot read image file {str(path)!r}: {error.strerror}") from error
        return _from_bytes(data, str(path), max_pixels, apply_exif_orientation)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source), "<bytes>", max_pixels, apply_exif_orientation)
    read = getattr(source, "read", None)
    if callable(read):
        data = read()
        if not isinstance(data, bytes):
            raise InvalidImage(
                f"file-like image must be opened in binary mode; read() returned "
                f"{type(data).__name__}"
            )
        name = str(getattr(source, "name", "<file>"))
        return _from_bytes(data, name, max_pixels, apply_exif_orientation)
    raise InvalidImage(
        "expected a path, URL, bytes, binary file, PIL.Image or uint8 numpy array; "
        f"received: {type(source).__name__}"
    )


def _from_bytes(
    data: bytes, name: str, max_pixels: int, apply_exif_orientation: bool
) -> EncodedImage:
    if not data:
        raise InvalidImage(f"image {name} is empty (0 bytes)")
    try:
        # Header only: open() reads the size and format without decoding pixels. Pillow's own bomb
        # guard is replaced by the explicit max_pixels check below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:  # Pillow's hard cap (2 x its MAX_IMAGE_PIXELS)
        raise InvalidImage(f"image {name} declares too many pixels ({error})") from error
    except UnidentifiedImageError as error:
        head = data[:8].hex(" ")
        raise InvalidImage(
            f"image {name} is not in a known image format ({len(data)} bytes, starting {head})"
        ) from error
    except (OSError, ValueError, SyntaxError) as error:
        raise InvalidImage(f"image {name} has a broken header ({error})") from error
    fmt = _FORMAT_ALIASES.get(image.format or "", image.format or "")
    _check_pixels(image.width, image.height, max_pixels, name)
    if fmt in contract.GRAPH_DECODABLE_FORMATS and not (
        apply_exif_orientation and _exif_rotation(image)
    ):
        return EncodedImage(data, fmt, image.width, image.height, reencoded=False)
    return _from_pil(image, max_pixels, apply_exif_orientation, name=name)


def _from_pil(
    image: Image.Image, max_pixels: int, apply_exif_orientation: bool, *, name: str = "<PIL.Image>"
) -> EncodedImage:
    _check_pixels(image.width, image.height, max_pixels, name)
    try:
        if apply_exif_orientation:
            image = ImageOps.exif_transpose(image)
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)  # the graph reads the first frame of animations too
        if image.mode not in _PNG_MODES:
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        out = io.BytesIO()
        # Level 1: lossless either way, and several times faster than the default level 6.
        image.save(out, format="PNG", compress_level=1)
    except (OSError, ValueError, SyntaxError) as error:
        raise InvalidImage(f"image {name} cannot be decoded ({error})") from error
    return EncodedImage(out.getvalue(), "PNG", image.width, image.height, reencoded=True)


def _from_array(array: np.ndarray[Any, Any], max_pixels: int) -> EncodedImage:
    if array.dtype != np.uint8:
        raise InvalidImage(
            f"numpy image must be uint8 (0-255); received dtype={array.dtype}. Convert with "
            "np.clip(x, 0, 255).astype(np.uint8) if it holds 0-255 values."
        )
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise InvalidImage(
            f"numpy image must have shape (H, W, 3) or (H, W); received shape={array.shape}"
        )
    height, width = array.shape[:2]
    if height == 0 or width == 0:
        raise InvalidImage(f"numpy image is empty; received shape={array.shape}")
    _check_pixels(width, height, max_pixels, "<numpy array>")
    image = Image.fromarray(np.ascontiguousarray(array), mode="L" if array.ndim == 2 else "RGB")
    return _from_pil(image, max_pixels, False, name="<numpy array>")


def _check_pixels(width: int, height: int, max_pixels: int, name: str) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image {name} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidImage(
            f"image {name} is {width}x{height} = {width * height} pixels, above the limit of "
            f"{max_pixels} (max_pixels)"
        )


def _exif_rotation(image: Image.Image) -> bool:
    try:
        return image.getexif().get(0x0112, 1) not in (0, 1)  # 0x0112 = Orientation
    except (OSError, ValueError, SyntaxError):
        return False


def _fetch_url(url: str, *, timeout: float, max_bytes: int) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": "image/*"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            content_type = response.headers.get_content_type()
            if not content_type.startswith("image/") and content_type != "application/octet-stream":
                raise InvalidImage(
                    f"URL {url} returned Content-Type {content_type!r}, not an image"
                )
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise InvalidImage(f"URL {url} is {declared} bytes, above the {max_bytes}-byte cap")
            data: bytes = response.read(max_bytes + 1)
    except InvalidImage:
        raise
    except urllib.error.HTTPError as error:
        raise InvalidImage(f"URL {url} answered HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise InvalidImage(f"cannot fetch image URL {url}: {reason}") from error
    if len(data) > max_bytes:
        raise InvalidImage(f"URL {url} is larger than the {max_bytes}-byte cap")
    return data
