"""Image inputs: every kind and format, local checks, no re-encoding of decodable files."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from xception_client import InvalidImage, load_image

from tests.fixtures.images import png_declaring


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **params)
    return out.getvalue()


def _rgb(width: int = 32, height: int = 24) -> Image.Image:
    rng = np.random.default_rng(width * height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_decodable_format_is_sent_as_original_bytes(fmt: str) -> None:
    data = _encode(_rgb(), fmt)
    encoded = load_image(data)
    assert encoded.data == data
    assert (encoded.format, encoded.reencoded) == (fmt, False)
    assert (encoded.width, encoded.height) == (32, 24)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_decodable_format_in_any_mode_is_not_reencoded(mode: str) -> None:
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    data = _encode(_rgb().convert(mode), fmt)
    assert load_image(data).data == data


@pytest.mark.parametrize("fmt", ["WEBP", "TIFF"])
def test_format_the_graph_cannot_decode_is_reencoded_losslessly_as_png(fmt: str) -> None:
    original = _rgb()
    encoded = load_image(
        _encode(original, fmt, lossless=True) if fmt == "WEBP" else _encode(original, fmt)
    )
    assert (encoded.format, encoded.reencoded) == ("PNG", True)
    decoded = np.asarray(Image.open(io.BytesIO(encoded.data)))
    np.testing.assert_array_equal(decoded, np.asarray(original))


def test_path_str_pathlib_and_file_object_give_the_same_bytes(tmp_path: Path) -> None:
    data = _encode(_rgb(), "JPEG", quality=90)
    path = tmp_path / "cat.jpg"
    path.write_bytes(data)
    with path.open("rb") as handle:
        from_file = load_image(handle)
    assert load_image(str(path)).data == load_image(path).data == from_file.data == data
    assert load_image(bytearray(data)).data == load_image(memoryview(data)).data == data


@pytest.mark.parametrize("shape", [(20, 30, 3), (20, 30)], ids=["rgb", "grayscale"])
def test_uint8_array_is_encoded_losslessly_as_png(shape: tuple[int, ...]) -> None:
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    encoded = load_image(array)
    assert (encoded.format, encoded.reencoded, encoded.width, encoded.height) == (
        "PNG",
        True,
        30,
        20,
    )
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(encoded.data))), array)


def test_pil_image_is_encoded_losslessly_as_png() -> None:
    image = _rgb()
    encoded = load_image(image)
    assert encoded.format == "PNG"
    np.testing.assert_array_equal(
        np.asarray(Image.open(io.BytesIO(encoded.data))), np.asarray(image)
    )


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 4, 3), dtype=np.float32), "must be uint8.*dtype=float32"),
        (np.zeros((4, 4, 4), dtype=np.uint8), r"shape \(H, W, 3\).*\(4, 4, 4\)"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
    ],
    ids=["float", "four-channels", "empty"],
)
def test_bad_array_is_rejected_with_the_received_value(array: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        load_image(array)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello, this is text", "not in a known image format"),
        (b"\xff\xd8\xff", "not in a known image format|broken header"),
    ],
    ids=["empty", "text", "truncated-header"],
)
def test_unreadable_bytes_are_rejected_before_sending(data: bytes, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        load_image(data)


def test_image_over_pixel_limit_is_rejected_from_its_header() -> None:
    data = _encode(_rgb(100, 50), "PNG")
    assert load_image(data, max_pixels=5000).width == 100
    with pytest.raises(InvalidImage, match="100x50 = 5000 pixels, above the limit of 4999"):
        load_image(data, max_pixels=4999)


def test_decompression_bomb_header_is_rejected_without_decoding() -> None:
    # A valid PNG header declaring 100000 x 100000 pixels, with no pixel data behind it.
    def png(side: int) -> bytes:
        return png_declaring(side, side, b"")

    with pytest.raises(InvalidImage, match="7000x7000 = 49000000 pixels, above the limit"):
        load_image(png(7000))  # over the contract's 40 M, under Pillow's own bomb cap
    with pytest.raises(InvalidImage, match="too many pixels"):
        load_image(png(100_000))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage, match=r"nope\.jpg"):
        load_image(tmp_path / "nope.jpg")


def test_unsupported_type_names_the_type() -> None:
    with pytest.raises(InvalidImage, match="received: int"):
        load_image(42)  # type: ignore[arg-type]


def test_text_mode_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    path.write_text("abc")
    with path.open() as handle, pytest.raises(InvalidImage, match="binary mode"):
        load_image(handle)  # type: ignore[arg-type]


def _jpeg_with_orientation(orientation: int) -> bytes:
    image = Image.fromarray(np.tile(np.arange(40, dtype=np.uint8), (20, 1)))  # 40 wide, 20 high
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encode(image.convert("RGB"), "JPEG", exif=exif.tobytes())


def test_exif_orientation_is_ignored_by_default_like_keras_load_img() -> None:
    data = _jpeg_with_orientation(6)
    encoded = load_image(data)
    assert encoded.data == data and (encoded.width, encoded.height) == (40, 20)


def test_exif_orientation_is_applied_on_request() -> None:
    encoded = load_image(_jpeg_with_orientation(6), apply_exif_orientation=True)
    assert (encoded.format, encoded.width, encoded.height) == ("PNG", 20, 40)
    upright = _jpeg_with_orientation(1)
    assert load_image(upright, apply_exif_orientation=True).data == upright


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, str, bytes]] = {}

    def do_GET(self) -> None:
        status, content_type, body = self.routes.get(self.path, (404, "text/plain", b"missing"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_url_image_is_fetched_and_sent_as_original_bytes(http_base: str) -> None:
    data = _encode(_rgb(), "JPEG")
    _Handler.routes = {
        "/cat.jpg": (200, "image/jpeg", data),
        "/page": (200, "text/html", b"<p>"),
        "/big.jpg": (200, "image/jpeg", data),
    }
    assert load_image(f"{http_base}/cat.jpg").data == data
    with pytest.raises(InvalidImage, match="Content-Type 'text/html'"):
        load_image(f"{http_base}/page")
    with pytest.raises(InvalidImage, match="HTTP 404"):
        load_image(f"{http_base}/missing.jpg")
    with pytest.raises(InvalidImage, match="cap"):
        load_image(f"{http_base}/big.jpg", url_max_bytes=len(data) - 1)


def test_unreachable_url_is_an_invalid_image_not_a_hang() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(InvalidImage, match="cannot fetch"):
        load_image(f"http://127.0.0.1:{port}/x.jpg", url_timeout=2.0)
