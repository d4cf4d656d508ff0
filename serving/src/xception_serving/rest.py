"""TF Serving's REST API and Prometheus endpoint over the ServingCore (`--rest_api_port`).

Routing follows `http_server.cc` / `http_rest_api_handler.cc`:

    <monitoring path>                 -> Prometheus text (any method); with a query -> 400
    /v1/... (case-insensitive)        -> the REST API below
    anything else                     -> 404 with libevent's HTML page

    POST /v1/models/<name>[/versions/<n>|/labels/<l>]:(predict|classify|regress)
    GET  /v1/models[/<name>][/versions/<n>|/labels/<l>][/metadata]
    any other method or shape under /v1 -> 400 {"error": "Malformed request: <METHOD> <path>"}

Bodies are built by `rest_json` exactly as TF Serving writes them; every call is recorded in
`Metrics` (entrypoint "REST", API = the URL verb, "" for status/metadata).

HTTP server: waitress (see `RestServer`). The request handling (`RestApi.handle`) is a plain
function of method, URI, headers and body, so it is unit-tested without sockets.
"""

from __future__ import annotations

import http
import logging
import os
import re
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from xception_serving import rest_json
from xception_serving.errors import ServingError, from_exception

if TYPE_CHECKING:  # annotations only: importing the core here would load TensorFlow
    from xception_serving.core import ServingCore
    from xception_serving.metrics import Metrics

log = logging.getLogger(__name__)

# Full-match, case-insensitive, on the raw (not percent-decoded) path *including* the query
# string, as TF Serving matches `uri_path()` (which is path + "?" + query).
PREDICT_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:/versions/([0-9]+)|/labels/([^/:]+))?:(classify|regress|predict)",
    re.IGNORECASE,
)
STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:/versions/([0-9]+)|/labels/([^/:]+))?(?:/(metadata))?",
    re.IGNORECASE,
)
API_PATH = re.compile(r"/v1/.*", re.IGNORECASE)

# Methods libevent lets through (evhttp_set_allowed_methods in evhttp_server.cc); others -> 501.
ALLOWED_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})

# TF Serving's gzip limit for `Content-Encoding: gzip` bodies (net_http ZLib
# kMaxUncompressedBytes); beyond it, or on corrupt data, the body reads as empty.
MAX_GUNZIPPED_BYTES = 10 * 1024 * 1024

# Our own cap on a request body (TF Serving's libevent sets none). 256 MiB holds a batch of ~90
# 299x299x3 float images as JSON; larger bodies get waitress's 413 before anything is read.
DEFAULT_MAX_BODY_BYTES = 256 * 1024 * 1024

# --rest_api_timeout_in_ms default (30 s): the deadline handed to the core for each call.
DEFAULT_TIMEOUT_S = 30.0

JSON_HEADERS = (("Content-Type", "application/json"),)
REST_TIMEOUT_MESSAGE = "Timed out waiting for notification"


@dataclass(frozen=True)
class Route:
    """What ParseModelInfo extracted from the method and path."""

    matched: bool = False
    model_name: str = ""
    version: int | None = None
    label: str | None = None
    verb: str = ""  # POST: the verb as written in the URL (case kept)
    subresource: str = ""  # GET: "metadata" (as written) or ""

    def model_spec(self) -> model_pb2.ModelSpec:
        spec = model_pb2.ModelSpec(name=self.model_name)
        if self.version is not None:
            spec.version.value = self.version
        if self.label is not None:
            spec.version_label = self.label
        return spec


def _decode(component: str) -> str:
    # curl_easy_unescape: %XX only ('+' stays), invalid escapes kept as they are.
    return urllib.parse.unquote_to_bytes(component).decode("utf-8", "replace")


def parse_route(method: str, path: str) -> Route:
    """ParseModelInfo. Raises TF Serving's error for a version that does not fit int64."""
    if method == "POST":
        match = PREDICT_PATH.fullmatch(path)
    elif method == "GET":
        match = STATUS_PATH.fullmatch(path)
    else:
        match = None
    if match is None:
        return Route()
    name, version_text, label, last = match.groups()
    model_name = _decode(name) if name else ""
    version = None
    if version_text:
        version = int(version_text)
        if version > 2**63 - 1:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Failed to convert version: {version_text} to numeric.",
            )
    return Route(
        matched=True,
        model_name=model_name,
        version=version,
        label=_decode(label) if label else None,
        verb=(last or "") if method == "POST" else "",
        subresource=(last or "") if method == "GET" else "",
    )


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def libevent_error_page(status: int) -> HttpResponse:
    """evhttp_send_error(req, status, NULL): libevent's HTML page, connection closed."""
    phrase = http.HTTPStatus(status).phrase
    body = (
        f"<HTML><HEAD>\n<TITLE>{status} {phrase}</TITLE>\n</HEAD><BODY>\n<H1>{phrase}</H1>\n"
        "</BODY></HTML>\n"
    ).encode()
    headers = [("Content-Type", "text/html; charset=ISO-8859-1"), ("Connection", "close")]
    return HttpResponse(status, headers, body)


def gunzip_body(body: bytes, limit: int = MAX_GUNZIPPED_BYTES) -> bytes:
    """Inflate a gzip body as TF Serving does: corrupt or over-limit input reads as empty."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error:
        return b""
    if len(data) > limit or not inflater.eof:
        return b""
    return data


class RestApi:
    """The REST request handler: (method, raw URI, headers, body) -> HTTP response."""

    def __init__(
        self,
        core: ServingCore,
        metrics: Metrics,
        *,
        monitoring_path: str | None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._core = core
        self._metrics = metrics
        self._monitoring_path = monitoring_path
        self._timeout_s = timeout_s

    def handle(
        self, method: str, uri: str, headers: Mapping[str, str], body: bytes
    ) -> HttpResponse:
        """`headers` keys are lower-case. `uri` is the raw request target (path[?query])."""
        if method not in ALLOWED_METHODS:
            return libevent_error_page(501)
        path = uri.split("?", 1)[0].split("#", 1)[0]
        if self._monitoring_path is not None and path == self._monitoring_path:
            return self._prometheus(uri)
        if not API_PATH.fullmatch(uri):
            return libevent_error_page(404)
        started = time.monotonic()
        if "gzip" in headers.get("content-encoding", ""):
            body = gunzip_body(body)
        error, route, output = self._process(method, uri, body)
        code = grpc.StatusCode.OK if error is None else error.code
        self._record(route, code, time.monotonic() - started)
        return HttpResponse(rest_json.http_status(code), list(JSON_HEADERS), output)

    def _prometheus(self, uri: str) -> HttpResponse:
        headers = [("Content-Type", "text/plain")]
        if uri != self._monitoring_path:
            message = f"Unexpected path: {uri}. Should be {self._monitoring_path}"
            return HttpResponse(400, headers, message.encode("utf-8", "replace"))
        return HttpResponse(200, headers, self._metrics.render_prometheus())

    def _record(self, route: Route, code: grpc.StatusCode, latency_s: float) -> None:
        try:
            self._metrics.record_request(
                model_name=route.model_name,
                api=route.verb,
                entrypoint="REST",
                status=code.name,
                latency_s=latency_s if code == grpc.StatusCode.OK else None,
            )
        except Exception:  # metrics must never fail a request
            log.exception("recording REST metrics failed")

    def _process(
        self, method: str, uri: str, body: bytes
    ) -> tuple[ServingError | None, Route, bytes]:
        try:
            route = parse_route(method, uri)
        except ServingError as err:
            # TF Serving returns before writing the error JSON here: the body stays empty.
            return err, Route(), b""
        try:
            if method == "POST" and route.matched and route.verb in self._verbs:
                output = self._verbs[route.verb](self, route, body)
            elif method == "GET" and route.matched:
                if route.subresource == "metadata":
                    output = self._metadata(route)
                else:
                    output = self._status(route)
            else:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT, f"Malformed request: {method} {uri}"
                )
        except Exception as exc:  # every failure answers as TF Serving would
            failure = from_exception(exc)
            if failure.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                # REST has no client deadline: TF Serving's only timeout here is the Session::Run
                # one set from --rest_api_timeout_in_ms, and that is its wording.
                failure = ServingError(failure.code, REST_TIMEOUT_MESSAGE)
            if not isinstance(exc, ServingError):
                log.exception("REST %s %s failed", method, uri)
            return failure, route, rest_json.error_json(failure.message)
        return None, route, output

    def _deadline(self) -> float | None:
        return time.monotonic() + self._timeout_s if self._timeout_s > 0 else None

    def _input_dtypes(self, route: Route) -> Callable[[str], Mapping[str, int]]:
        """GetInfoMap: the signature's input dtypes, via GetModelMetadata (which also reports
        an unknown model / version / label exactly as TF Serving does)."""

        def lookup(signature_name: str) -> Mapping[str, int]:
            request = get_model_metadata_pb2.GetModelMetadataRequest(
                model_spec=route.model_spec(), metadata_field=["signature_def"]
            )
            signatures = rest_json.signature_defs_of(self._core.get_model_metadata(request))
            key = signature_name or "serving_default"
            if key not in signatures:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'Serving signature name: "{key}" not found in signature def',
                )
            return rest_json.input_dtypes_of(signatures[key])

        return lookup

    def _predict(self, route: Route, body: bytes) -> bytes:
        doc = rest_json.parse_json(body)
        signature_name = rest_json.signature_name_of(doc)
        inputs, fmt = rest_json.fill_predict_inputs(
            doc, signature_name, self._input_dtypes(route)
        )
        request = predict_pb2.PredictRequest(model_spec=route.model_spec())
        request.model_spec.signature_name = signature_name
        for alias, tensor in inputs.items():
            request.inputs[alias].CopyFrom(tensor)
        response = self._core.predict(request, deadline=self._deadline())
        return rest_json.predict_response_json(response.outputs, fmt)

    def _classify(self, route: Route, body: bytes) -> bytes:
        request = rest_json.classification_request(body, route.model_spec())
        response = self._core.classify(request, deadline=self._deadline())
        return rest_json.classification_json(response.result)

    def _regress(self, route: Route, body: bytes) -> bytes:
        request = rest_json.regression_request(body, route.model_spec())
        response = self._core.regress(request, deadline=self._deadline())
        return rest_json.regression_json(response.result)

    _verbs: Mapping[str, Callable[[RestApi, Route, bytes], bytes]] = {
        "predict": _predict,
        "classify": _classify,
        "regress": _regress,
    }

    def _status(self, route: Route) -> bytes:
        if not route.model_name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=route.model_spec())
        return rest_json.status_json(self._core.get_model_status(request))

    def _metadata(self, route: Route) -> bytes:
        if not route.model_name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=route.model_spec(), metadata_field=["signature_def"]
        )
        return rest_json.metadata_json(self._core.get_model_metadata(request))


def _reason(status: int) -> str:
    if status == 499:
        return "Client Closed Request"
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _raw_uri(environ: Mapping[str, Any]) -> str:
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
    """WSGI shell over RestApi that counts in-flight requests for a graceful stop."""

    def __init__(self, api: RestApi) -> None:
        self.api = api
        self._in_flight = 0
        self._idle = threading.Condition()

    @property
    def in_flight(self) -> int:
        with self._idle:
            return self._in_flight

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        with self._idle:
            self._in_flight += 1
        try:
            headers = {"content-encoding": environ.get("HTTP_CONTENT_ENCODING", "")}
            body = environ["wsgi.input"].read()
            response = self.api.handle(
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


class RestServer:
    """TF Serving's REST port: `RestApi` served by waitress on a background thread.

    Why waitress: the core is blocking, so a threaded server fits; waitress is a maintained,
    pure-Python HTTP/1.1 server whose single I/O thread parks idle keep-alive connections and
    hands only complete requests to a bounded worker pool (the shape of TF Serving's libevent
    loop + `--rest_api_num_threads` executor). It enforces a body-size cap with a 413 before
    reading the body, and logs no access lines. The standard library's ThreadingHTTPServer
    would tie one unbounded thread to every open connection.
    """

    def __init__(
        self,
        core: ServingCore,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        monitoring_path: str | None,
        num_threads: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self._app = _WsgiApp(
            RestApi(core, metrics, monitoring_path=monitoring_path, timeout_s=timeout_s)
        )
        self._host = host
        self._requested_port = port
        # TF Serving's --rest_api_num_threads default: 4 x schedulable CPUs.
        self._num_threads = num_threads or 4 * (os.cpu_count() or 1)
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
