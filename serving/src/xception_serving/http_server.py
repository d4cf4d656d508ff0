"""The HTTP/1.1 plumbing under the REST port: waitress, WSGI, and a graceful stop.

TF Serving's REST port is libevent (`net_http/server`) under `http_server.cc`'s handlers; the same
seam is kept here. This module knows sockets, WSGI environs and waitress's internals (raw request
URIs, in-flight counting, closing listeners then channels on the I/O thread) and nothing of TF
Serving's API: it serves any `Handler`, a plain function of method, raw URI, headers and body
to an `HttpResponse`. `rest.RestApi.handle` is that function, so routing is unit-tested without
sockets and this module without a model.
"""

from __future__ import annotations

import http
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # wsgiref.types is new in Python 3.11
    from wsgiref.types import StartResponse, WSGIEnvironment


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


# (method, raw URI path[?query], lower-case headers, body) -> response.
Handler = Callable[[str, str, Mapping[str, str], bytes], HttpResponse]


def _reason(status: int) -> str:
    if status == 499:
        return "Client Closed Request"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _raw_uri(environ: WSGIEnvironment) -> str:
    uri = environ.get("REQUEST_URI")
    if not uri:  # not waitress: rebuild an encoded path from the decoded PATH_INFO
        uri = urllib.parse.quote(environ.get("PATH_INFO", "/").encode("latin-1"))
        if environ.get("QUERY_STRING"):
            uri += "?" + environ["QUERY_STRING"]
    elif not uri.startswith("/"):  # absolute-form target: keep path[?query]
        parts = urllib.parse.urlsplit(uri)
        uri = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return str(uri)


class _WsgiApp:
    """WSGI shell over a Handler that counts in-flight requests for a graceful stop."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self._in_flight = 0
        self._idle = threading.Condition()

    @property
    def in_flight(self) -> int:
        with self._idle:
            return self._in_flight

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        with self._idle:
            self._in_flight += 1
        try:
            headers = {"content-encoding": environ.get("HTTP_CONTENT_ENCODING", "")}
            body = environ["wsgi.input"].read()
            response = self.handler(
                environ["REQUEST_METHOD"], _raw_uri(environ), headers, body
            )
            # WSGI forbids hop-by-hop headers: waitress manages Connection itself.
            out_headers = [(k, v) for k, v in response.headers if k.lower() != "connection"]
            out_headers.append(("Content-Length", str(len(response.body))))
            start_response(f"{response.status} {_reason(response.status)}", out_headers)
            return [response.body]
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()


class WaitressServer:
    """A Handler served by waitress on a background thread, with a graceful stop.

    Why waitress: the core is blocking, so a threaded server fits; waitress is a maintained,
    pure-Python HTTP/1.1 server whose single I/O thread parks idle keep-alive connections and
    hands only complete requests to a bounded worker pool (the shape of TF Serving's libevent
    loop + `--rest_api_num_threads` executor). It enforces a body-size cap with a 413 before
    reading the body, and logs no access lines. The standard library's ThreadingHTTPServer
    would tie one unbounded thread to every open connection.
    """

    def __init__(
        self, handler: Handler, *, host: str, port: int, num_threads: int, max_body_bytes: int
    ) -> None:
        self._app = _WsgiApp(handler)
        self._host = host
        self._requested_port = port
        self._num_threads = num_threads
        self._max_body_bytes = max_body_bytes
        self._server: Any = None  # waitress ships no type hints
        self._thread: threading.Thread | None = None
        self.port = port

    def start(self) -> None:
        """Bind and start serving on a background thread; returns once listening."""
        from waitress.server import create_server

        # waitress warns "Task queue depth is N" when all workers are busy: one line per
        # request under load, which TF Serving does not log.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._server = create_server(
            self._app,
            host=self._host,
            port=self._requested_port,
            threads=self._num_threads,
            max_request_body_size=self._max_body_bytes,
            ident="",  # no Server: header (TF Serving sends none)
            channel_timeout=50,  # idle keep-alive connections closed after libevent's 50 s
            connection_limit=max(100, 4 * self._num_threads),
        )
        self.port = int(self._listeners()[0].effective_port)
        self._thread = threading.Thread(
            target=self._server.run, name="rest-api-loop", daemon=True
        )
        self._thread.start()

    def _listeners(self) -> list[Any]:  # waitress BaseWSGIServer objects (no type hints)
        from waitress.server import BaseWSGIServer

        if isinstance(self._server, BaseWSGIServer):
            return [self._server]
        # MultiSocketServer (a host name resolving to several addresses): one per address.
        return [d for d in self._server.map.values() if isinstance(d, BaseWSGIServer)]

    def _busy(self, listeners: list[Any]) -> bool:
        if self._app.in_flight or self._server.task_dispatcher.queue:
            return True
        return any(
            channel.requests or channel.total_outbufs_len
            for listener in listeners
            for channel in list(listener.active_channels.values())
        )

    def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `grace` seconds), then close."""
        server = self._server
        if server is None:
            return
        from waitress import wasyncore

        listeners = self._listeners()
        trigger = listeners[0].trigger  # runs callables on the I/O loop thread

        def on_loop(fn: Callable[[], None]) -> None:
            ran = threading.Event()

            def run() -> None:
                try:
                    fn()
                finally:
                    ran.set()

            trigger.pull_trigger(run)
            ran.wait(timeout=5)

        def stop_accepting() -> None:
            for listener in listeners:
                wasyncore.dispatcher.close(listener)  # the listening socket only

        on_loop(stop_accepting)
        deadline = time.monotonic() + max(grace, 0.0)
        while self._busy(listeners) and time.monotonic() < deadline:
            time.sleep(0.02)
        # Closing every channel (and the trigger) empties the socket map: the loop returns.
        on_loop(lambda: wasyncore.close_all(server.map if hasattr(server, "map") else
                                            server._map))
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
