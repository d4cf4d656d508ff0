"""The HTTP/1.1 plumbing under the REST port: waitress, WSGI, client limits and a graceful stop.

TF Serving's REST port is libevent (`net_http/server`) under `http_server.cc`'s handlers; the same
seam is kept here. This module knows sockets, WSGI environs and waitress's internals (raw request
URIs, in-flight counting, closing listeners then channels on the I/O thread) and nothing of TF
Serving's API: it serves any `Handler`, a plain function of method, raw URI, headers and body
to an `HttpResponse`. `rest.RestApi.handle` is that function, so routing is unit-tested without
sockets and this module without a model. `RestLimits` bounds what one client may hold (a
whole-request read deadline, a connection limit that answers instead of queueing), enforced by
a waitress listener and channel subclass; the pages the port answers with by itself come from
the caller (`ErrorPage`), so they read as the API's own errors.
"""

from __future__ import annotations

import http
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

if TYPE_CHECKING:  # wsgiref.types is new in Python 3.11
    from wsgiref.types import StartResponse, WSGIEnvironment


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


# (method, raw URI path[?query], lower-case headers, body) -> response.
Handler = Callable[[str, str, Mapping[str, str], bytes], HttpResponse]
# (status, message) -> the page the server itself answers with (a refusal, a read timeout).
ErrorPage = Callable[[int, str], HttpResponse]


def plain_error_page(status: int, message: str) -> HttpResponse:
    return HttpResponse(status, [("Content-Type", "text/plain")], message.encode())


@dataclass(frozen=True)
class RestLimits:
    """What one client may hold of the REST port. libevent (TF Serving) bounds none of these but
    the idle time; they are this server's own options.

    - max_connections: open connections served at once. At the limit a new caller still gets
      in by closing the connection that has spent longest sending an unfinished request (or,
      failing that, the longest idle one); only when every connection has a request in
      service is the caller answered 503 at once, never left waiting in the backlog.
    - request_read_timeout_s: a whole-request deadline: the head and body of a request must
      arrive within this time of its first byte (of the accept, for a connection's first
      request). It does not restart when a byte arrives, so a client trickling bytes cannot
      hold a connection longer; it is answered 408 and closed.
    - idle_timeout_s: a keep-alive connection with no request is closed after this (libevent's
      50 s).
    """

    max_connections: int = 100
    request_read_timeout_s: float = 60.0
    idle_timeout_s: float = 50.0

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, not {self.max_connections}")
        if not self.request_read_timeout_s > 0 or not self.idle_timeout_s > 0:
            raise ValueError("request_read_timeout_s and idle_timeout_s must be positive")


DEFAULT_LIMITS = RestLimits()


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

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        with self._idle:
            self._in_flight += 1
        try:
            headers = {"content-encoding": environ.get("HTTP_CONTENT_ENCODING", "")}
            body = environ["wsgi.input"].read()
            response = self.handler(environ["REQUEST_METHOD"], _raw_uri(environ), headers, body)
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
        self,
        handler: Handler,
        *,
        host: str,
        port: int,
        num_threads: int,
        max_body_bytes: int,
        limits: RestLimits = DEFAULT_LIMITS,
        error_page: ErrorPage = plain_error_page,
    ) -> None:
        self._app = _WsgiApp(handler)
        self._host = host
        self._requested_port = port
        self._num_threads = num_threads
        self._max_body_bytes = max_body_bytes
        self._limits = limits
        self._error_page = error_page
        self._server: Any = None  # waitress ships no type hints
        self._thread: threading.Thread | None = None
        self.port = port

    def start(self) -> None:
        """Bind and start serving on a background thread; returns once listening."""
        # waitress warns "Task queue depth is N" when all workers are busy: one line per
        # request under load, which TF Serving does not log.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        self._server = _create_guarded_server(
            self._app,
            self._limits,
            self._error_page,
            host=self._host,
            port=self._requested_port,
            threads=self._num_threads,
            max_request_body_size=self._max_body_bytes,
            ident="",  # no Server: header (TF Serving sends none)
        )
        self.port = int(self._listeners()[0].effective_port)
        self._thread = threading.Thread(target=self._server.run, name="rest-api-loop", daemon=True)
        self._thread.start()

    def _listeners(self) -> list[Any]:  # waitress BaseWSGIServer objects (no type hints)
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
        on_loop(lambda: wasyncore.close_all(server.map if hasattr(server, "map") else server._map))
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None


# ---------------------------------------------------------------------------------------------
# waitress with RestLimits: a whole-request read deadline and a connection limit that never
# leaves a caller in the backlog. waitress's own limits do neither: its channel_timeout restarts
# on every byte received, and at its connection_limit it stops accepting, so callers queue in
# the kernel until a slot frees.


def _raw_response(page: HttpResponse) -> bytes:
    head = [f"HTTP/1.1 {page.status} {_reason(page.status)}"]
    head += [
        f"{k}: {v}" for k, v in page.headers if k.lower() not in ("connection", "content-length")
    ]
    head += [f"Content-Length: {len(page.body)}", "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + page.body


class _GuardedChannel(HTTPChannel):  # type: ignore[misc]  # waitress ships no type hints
    """waitress's channel, plus when its unfinished request began (`reading_since`: the accept
    for a connection's first request, else the request's first byte; None while idle or in
    service), and a way to answer by itself and close (`answer_and_close`)."""

    request: Any  # waitress's parser of the unfinished request, or None
    will_close: bool
    reading_since: float | None = None
    answered_at: float | None = None  # set once the channel is only finishing a refusal
    _write_shut = False

    def __init__(
        self, server: Any, sock: socket.socket, addr: Any, adj: Any, map: Any = None
    ) -> None:
        super().__init__(server, sock, addr, adj, map=map)
        self.reading_since = time.monotonic()

    def received(self, data: bytes) -> bool:
        if self.answered_at is not None:
            return True  # already answered: drain and drop what the client still sends
        result: bool = super().received(data)
        if self.request is None:
            self.reading_since = None
        elif self.reading_since is None:
            self.reading_since = time.monotonic()
        return result

    def answer_and_close(self, page: HttpResponse) -> None:
        """Send `page`, half-close, and keep reading until the client closes (closing with its
        request unread would reset the connection, and could drop the answer on the way)."""
        payload = _raw_response(page)
        self.answered_at = time.monotonic()
        self.reading_since = None
        if self.request is not None:
            self.request.close()  # its body buffer
            self.request = None
        with self.outbuf_lock:
            self.outbufs[-1].append(payload)
            self.current_outbuf_count += len(payload)
            self.total_outbufs_len += len(payload)

    def readable(self) -> bool:
        if self.answered_at is not None:
            return not self.will_close
        return bool(super().readable())

    def writable(self) -> bool:
        if self.answered_at is not None:
            return bool(self.total_outbufs_len or self.will_close)
        return bool(super().writable())

    def handle_write(self) -> None:
        if self.answered_at is None:
            super().handle_write()
            return
        if not self.will_close:
            self._flush_exception(self._flush_some)
            if not self.total_outbufs_len and not self._write_shut:
                self._write_shut = True
                try:
                    self.socket.shutdown(socket.SHUT_WR)
                except OSError:
                    self.will_close = True
        if self.will_close:
            self.handle_close()

    def evictable(self) -> bool:
        """No request in service and nothing left to send: closing loses no answer."""
        return not (
            self.requests
            or self.total_outbufs_len
            or self.will_close
            or self.close_when_flushed
            or self.answered_at is not None
        )


class _GuardedServer(TcpWSGIServer):  # type: ignore[misc]  # waitress ships no type hints
    channel_class = _GuardedChannel
    limits: RestLimits
    error_page: ErrorPage
    # How long a refused caller may take to read its answer and close.
    ANSWER_GRACE_S = 2.0

    def _channels(self) -> list[_GuardedChannel]:
        # Every listener's channels share one socket map (several listen addresses).
        return [c for c in list(self._map.values()) if isinstance(c, _GuardedChannel)]

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # idle keep-alive connections (adj.channel_timeout)
        # Runs while the loop collects readiness over the socket map: flag, never close here.
        clock = time.monotonic()
        for channel in self._channels():
            if channel.answered_at is not None:
                if clock - channel.answered_at > self.ANSWER_GRACE_S:
                    channel.will_close = True
            elif (
                channel.reading_since is not None
                and not channel.requests
                and clock - channel.reading_since > self.limits.request_read_timeout_s
            ):
                self._read_timed_out(channel)

    def _read_timed_out(self, channel: _GuardedChannel) -> None:
        if channel.request is None:  # nothing received: there is no request to answer
            channel.will_close = True
            return
        seconds = f"{self.limits.request_read_timeout_s:g}"
        channel.answer_and_close(
            self.error_page(408, f"The request was not received in full within {seconds} s.")
        )

    def handle_accept(self) -> None:
        channels = self._channels()
        serving = [c for c in channels if c.answered_at is None and not c.will_close]
        if len(serving) >= self.limits.max_connections and not self._make_room(serving):
            self._accept_and_refuse(answering=len(channels) - len(serving))
            return
        super().handle_accept()

    def _make_room(self, channels: list[_GuardedChannel]) -> bool:
        """Evict the connection that has spent longest sending an unfinished request, else the
        longest idle one. It is flagged, and closed by the loop as waitress closes any channel:
        closing it here could hand its descriptor, and its pending events, to the caller about
        to be accepted."""
        reading = [c for c in channels if c.evictable() and c.reading_since is not None]
        if reading:
            victim = min(reading, key=lambda c: c.reading_since or 0.0)
        else:
            idle = [c for c in channels if c.evictable()]
            if not idle:
                return False
            victim = min(idle, key=lambda c: c.last_activity)
        victim.will_close = True
        return True

    def _accept_and_refuse(self, answering: int) -> None:
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, addr = accepted
        if answering >= self.limits.max_connections:  # refusals must not pile up either
            conn.close()
            return
        self.set_socket_options(conn)
        channel = self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
        channel.answer_and_close(
            self.error_page(
                503,
                f"The server has {self.limits.max_connections} connections with requests in "
                "service (its limit); try again later.",
            )
        )


def _create_guarded_server(
    app: Any, limits: RestLimits, error_page: ErrorPage, **settings: Any
) -> Any:
    """waitress's create_server for TCP listeners, with _GuardedServer as the listener."""
    adj = Adjustments(
        channel_timeout=max(1, round(limits.idle_timeout_s)),
        connection_limit=2**31 - 1,  # ours is enforced in handle_accept instead
        **settings,
    )
    # Adjustments takes whole seconds; the deadline needs a finer tick, and the loop must wake
    # up at it even when no socket is ready.
    tick = min(1.0, max(0.05, limits.request_read_timeout_s / 8))
    adj.cleanup_interval = tick
    adj.asyncore_loop_timeout = tick
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    listeners = []
    for sockinfo in adj.listen:
        listener = _GuardedServer(
            app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo
        )
        listener.limits = limits
        listener.error_page = error_page
        listeners.append(listener)
    if len(listeners) == 1:
        return listeners[0]
    addresses = [(lst.effective_host, lst.effective_port) for lst in listeners]
    return MultiSocketServer(socket_map, adj, addresses, dispatcher, listeners[-1].log_info)
