"""Fetch an image from a URL with a size cap, a timeout and no requests to private addresses.

A gateway that fetches any URL it is given is a server-side request forgery tool: by default only
http(s) URLs whose host resolves to public addresses are fetched (the check resolves the name once
before connecting; a DNS answer that changes in between is not caught, so put the gateway behind
an egress policy too). The body is streamed and cut off past the cap, so a huge or endless
response costs at most the cap in memory. The cap counts decoded bytes: httpx inflates each raw
chunk whole (a 64 KiB gzip chunk of zeros is 64 MiB), so gzip and deflate are inflated here with
zlib's max_length, never more than the room left under the cap per step.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import zlib
from urllib.parse import urlsplit

import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Content-Encodings decoded here (zlib window bits); httpx would also offer br and zstd.
_WBITS = {"gzip": zlib.MAX_WBITS | 16, "x-gzip": zlib.MAX_WBITS | 16, "deflate": zlib.MAX_WBITS}
_ACCEPT_ENCODING = "gzip, deflate"


class FetchError(Exception):
    """The URL could not be fetched as an image; the message is one line for the HTTP caller."""


class TooLarge(FetchError):
    pass


async def _check_public(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise FetchError(f"cannot resolve {host}: {error.strerror}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise FetchError(
                f"refusing to fetch from {host} ({address}): not a public address "
                "(GATEWAY_ALLOW_PRIVATE_URLS=1 allows it)"
            )


class _Inflater:
    """gzip or deflate, decoded at most `room` bytes per step: a small compressed chunk cannot
    inflate to more than the cap before the cap is checked."""

    def __init__(self, encoding: str) -> None:
        self.wbits = _WBITS[encoding]
        self.zlib = zlib.decompressobj(self.wbits)
        self.started = False

    def decode(self, data: bytes, room: int) -> bytes:
        """Up to `room` + 1 decoded bytes of `data`; what is left waits in `self.zlib`."""
        try:
            out = self.zlib.decompress(data, room + 1)
        except zlib.error:
            if self.started or self.wbits != zlib.MAX_WBITS:
                raise
            # "deflate" without its zlib header, as some servers send it (httpx accepts both).
            self.wbits = -zlib.MAX_WBITS
            self.zlib = zlib.decompressobj(self.wbits)
            out = self.zlib.decompress(data, room + 1)
        self.started = True
        return out


async def _read_capped(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    body = bytearray()
    if encoding in ("", "identity"):
        if response.headers.get("content-length", "").isdigit() and (
            int(response.headers["content-length"]) > max_bytes
        ):  # said up front: refused before reading
            raise TooLarge(f"the image at {url} is over {max_bytes} bytes")
        async for chunk in response.aiter_raw():
            body += chunk
            if len(body) > max_bytes:
                raise TooLarge(f"the image at {url} is over {max_bytes} bytes")
        return bytes(body)
    if encoding not in _WBITS:
        raise FetchError(f"GET {url} answered Content-Encoding {encoding!r}; "
                         "the gateway decodes gzip and deflate only")  # fmt: skip
    inflater = _Inflater(encoding)
    try:
        async for chunk in response.aiter_raw():
            pending = chunk
            while pending and not inflater.zlib.eof:
                body += inflater.decode(pending, max_bytes - len(body))
                if len(body) > max_bytes:
                    raise TooLarge(f"the image at {url} is over {max_bytes} bytes once "
                                   f"decompressed ({encoding})")  # fmt: skip
                pending = inflater.zlib.unconsumed_tail
    except zlib.error as error:
        raise FetchError(f"cannot decode the {encoding} body of {url}: {error}") from None
    return bytes(body)


async def fetch_image(
    url: str, *, max_bytes: int, timeout: float, allow_private: bool = False
) -> bytes:
    """The body of a GET of `url`, at most `max_bytes`, within `timeout` seconds overall."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"url must be an http:// or https:// URL; received {url[:200]!r}")

    async def get() -> bytes:
        if not allow_private:
            await _check_public(parts.hostname or "", parts.port or _DEFAULT_PORTS[parts.scheme])
        async with (
            httpx.AsyncClient(follow_redirects=False, timeout=timeout) as http,
            http.stream("GET", url, headers={"Accept-Encoding": _ACCEPT_ENCODING}) as response,
        ):
            if response.status_code != 200:
                raise FetchError(f"GET {url[:200]} answered HTTP {response.status_code}")
            return await _read_capped(response, url[:200], max_bytes)

    try:
        return await asyncio.wait_for(get(), timeout)
    except TimeoutError:
        raise FetchError(f"fetching {url[:200]} took over {timeout:g} s") from None
    except httpx.HTTPError as error:
        raise FetchError(f"cannot fetch {url[:200]}: {type(error).__name__}: {error}") from None
