"""Fetch an image from a URL with a size cap, a timeout and no requests to private addresses.

A gateway that fetches any URL it is given is a server-side request forgery tool: by default only
http(s) URLs whose host resolves to public addresses are fetched (the check resolves the name once
before connecting; a DNS answer that changes in between is not caught, so put the gateway behind
an egress policy too). The body is streamed and cut off past the cap, so a huge or endless
response costs at most the cap in memory.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}


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
            raise FetchError(f"refusing to fetch from {host} ({address}): not a public address")


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
            http.stream("GET", url) as response,
        ):
            if response.status_code != 200:
                raise FetchError(f"GET {url[:200]} answered HTTP {response.status_code}")
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise TooLarge(f"the image at {url[:200]} is over {max_bytes} bytes")
            return bytes(body)

    try:
        return await asyncio.wait_for(get(), timeout)
    except asyncio.TimeoutError:
        raise FetchError(f"fetching {url[:200]} took over {timeout:g} s") from None
    except httpx.HTTPError as error:
        raise FetchError(f"cannot fetch {url[:200]}: {type(error).__name__}: {error}") from None
