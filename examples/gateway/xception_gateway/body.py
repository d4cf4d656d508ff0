"""The /predict body, read within size caps and kept in memory: an image upload or a URL.

Starlette's request.form() and request.json() take in the whole body before the route sees its
size: an upload is spooled to a temporary file (disk), a JSON body is held in memory. Here a
declared Content-Length over the cap is refused before anything is read, the bytes of every body
are counted as they arrive (a chunked body declares no length), and multipart parts are collected
in memory, each under its own cap, so a huge body costs at most the cap. How long the body may
take is the caller's deadline (app.py wraps this module's reads in it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from xception_gateway.errors import HttpError

MAX_JSON_BYTES = 64 * 1024  # a JSON body holds {"url": ...} and nothing else
MAX_FIELD_BYTES = 16 * 1024  # the `url` form field
MULTIPART_OVERHEAD = 64 * 1024  # boundaries, part headers and a `url` field around the image
USAGE = 'send a multipart `file` upload, or a `url` (form field or JSON {"url": "https://..."})'


@dataclass(frozen=True)
class ImageRequest:
    """What the caller sent: the image's bytes, or the URL to fetch it from."""

    data: bytes | None = None
    url: str | None = None


async def read_image_request(request: Request, max_image_bytes: int) -> ImageRequest:
    media_type, options = parse_options_header(request.headers.get("content-type", ""))
    if media_type == b"multipart/form-data":
        return await _multipart(request, options, max_image_bytes)
    if media_type == b"application/json":
        body = bytearray()
        async for chunk in _chunks(request, MAX_JSON_BYTES, "the JSON body"):
            body += chunk
        return ImageRequest(url=json_url(bytes(body)))
    received = f"Content-Type {media_type.decode('latin-1')!r}" if media_type else "no Content-Type"
    raise HttpError(400, f"{USAGE}; received {received}")


def _declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:  # the HTTP server usually refuses these first
        raise HttpError(
            400, f"Content-Length must be a number of bytes; received {value!r}"
        ) from None


async def _chunks(request: Request, limit: int, what: str, note: str = "") -> AsyncIterator[bytes]:
    """The body as it arrives; 413 as soon as it is declared or counted over `limit` bytes."""
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise HttpError(413, f"{what} is over {limit} bytes (Content-Length: {declared}){note}")
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            yield chunk  # first, so the consumer's own caps (a form part's) name the problem
            if received > limit:
                raise HttpError(413, f"{what} is over {limit} bytes{note}")
    except ClientDisconnect:
        raise HttpError(400, f"the client closed the connection before the end of {what}") from None


_JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}  # fmt: skip


def json_url(body: bytes) -> str:
    """The "url" of a JSON body {"url": "..."}; 400 naming what is wrong with any other body."""
    if not body.strip():
        raise HttpError(400, 'the JSON body is empty; send {"url": "https://..."}')
    try:
        value: Any = json.loads(body.decode("utf-8-sig"))  # JSON on the wire is UTF-8 (RFC 8259)
    except UnicodeDecodeError as error:
        raise HttpError(400, f"the JSON body is not UTF-8 text ({error.reason} at byte "
                             f"{error.start})") from None  # fmt: skip
    except json.JSONDecodeError as error:
        raise HttpError(400, f"the JSON body is not valid JSON ({error})") from None
    except RecursionError:
        raise HttpError(400, "the JSON body is nested too deeply") from None
    if not isinstance(value, dict):
        raise HttpError(400, 'the JSON body must be an object {"url": "https://..."}; received '
                             f"{_JSON_TYPES.get(type(value), 'a value')}")  # fmt: skip
    if "url" not in value:
        keys = ", ".join(sorted(map(repr, value))[:5]) or "none"
        raise HttpError(400, f'the JSON body has no "url" field (its fields: {keys})')
    url = value["url"]
    if not isinstance(url, str):
        raise HttpError(400, 'the JSON body\'s "url" must be a string; received '
                             f"{_JSON_TYPES.get(type(url), 'a value')}")  # fmt: skip
    return url


@dataclass
class _Form:
    """Collects the `file` and `url` parts in memory, each under its cap; other parts are
    counted by the body's cap and dropped."""

    max_image_bytes: int
    parts: dict[str, bytearray] = field(default_factory=dict)
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    disposition: bytes = b""
    current: str | None = None
    ended: bool = False

    def on_part_begin(self) -> None:
        self.disposition, self.current = b"", None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = bytes(self.header_value)
        self.header_name.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        name = parse_options_header(self.disposition)[1].get(b"name", b"")
        if name in (b"file", b"url") and name.decode() not in self.parts:
            self.current = name.decode()
            self.parts[self.current] = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.current is None:
            return
        part = self.parts[self.current]
        part += data[start:end]
        if self.current == "file" and len(part) > self.max_image_bytes:
            raise HttpError(413, f"the upload is over {self.max_image_bytes} bytes")
        if self.current == "url" and len(part) > MAX_FIELD_BYTES:
            raise HttpError(413, f"the form field `url` is over {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        self.current = None

    def on_end(self) -> None:
        self.ended = True


async def _multipart(
    request: Request, options: dict[bytes, bytes], max_image_bytes: int
) -> ImageRequest:
    boundary = options.get(b"boundary")
    if not boundary:
        raise HttpError(400, "the multipart body has no boundary in its Content-Type")
    form = _Form(max_image_bytes)
    callbacks: Any = {name: getattr(form, name) for name in dir(form) if name.startswith("on_")}
    try:
        parser = MultipartParser(boundary, callbacks)
        limit = max_image_bytes + MULTIPART_OVERHEAD
        note = (
            f": the upload may be {max_image_bytes} bytes, plus {MULTIPART_OVERHEAD} for the form"
        )
        async for chunk in _chunks(request, limit, "the multipart body", note):
            parser.write(chunk)
    except FormParserError as error:
        raise HttpError(400, f"the multipart body is malformed ({error})") from None
    if not form.ended:
        raise HttpError(400, "the multipart body ends before its closing boundary")
    if "file" in form.parts:
        return ImageRequest(data=bytes(form.parts["file"]))
    if form.parts.get("url"):
        try:
            return ImageRequest(url=form.parts["url"].decode("utf-8"))
        except UnicodeDecodeError:
            raise HttpError(400, "the form field `url` is not UTF-8 text") from None
    raise HttpError(400, f"{USAGE}; the form has neither")
