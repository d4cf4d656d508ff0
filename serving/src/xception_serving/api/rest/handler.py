"""TF Serving's REST API and Prometheus endpoint over the ServingCore (`--rest_api_port`).

Routing follows `http_server.cc` / `http_rest_api_handler.cc`:

    <monitoring path>                 -> Prometheus text (any method); with a query -> 400
    /v1/... (case-insensitive)        -> the REST API below
    anything else                     -> 404 with libevent's HTML page

    POST /v1/models/<name>[/versions/<n>|/labels/<l>]:(predict|classify|regress)
    GET  /v1/models[/<name>][/versions/<n>|/labels/<l>][/metadata]
    any other method or shape under /v1 -> 400 {"error": "Malformed request: <METHOD> <path>"}

This module is `http_rest_api_handler.cc`'s part: routing, the gzip body, the error body and
TF Serving's status code -> HTTP status map, and metrics (entrypoint "REST", API = the URL verb,
"" for status/metadata). The bodies are built, exactly as TF Serving writes them, by the modules
that follow TF Serving's own files: `rest_tensors` (predict, json_tensor.cc), `rest_examples`
(classify/regress), `rest_status` (status/metadata, http_rest_api_util.cc), all on `json_text`
(rapidjson). The socket side is `http_server` (waitress); `RestApi.handle` is a plain function of
method, URI, headers and body, so routing is unit-tested without sockets.
"""

from __future__ import annotations

import http
import logging
import os
import re
import time
import urllib.parse
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
)

from xception_serving.api.rest import examples as rest_examples
from xception_serving.api.rest import status as rest_status
from xception_serving.api.rest import tensors as rest_tensors
from xception_serving.api.rest.http_server import (
    DEFAULT_LIMITS,
    HttpResponse,
    RestLimits,
    WaitressServer,
)
from xception_serving.api.rest.json_reader import parse_json
from xception_serving.api.rest.json_text import INT64_MAX, PrettyWriter, to_bytes
from xception_serving.runtime.errors import ServingError, from_exception

if TYPE_CHECKING:  # annotations only: importing the core here would load TensorFlow
    from xception_serving.observability.metrics import Metrics
    from xception_serving.runtime.core import ServingCore

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

# http_server.cc ToHTTPStatusCode.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def error_json(message: str) -> bytes:
    """MakeJsonFromStatus: `{"error": "<message>"}`, pretty printed; nothing for an empty
    message."""
    if not message:
        return b""
    writer = PrettyWriter()
    writer.start_object()
    writer.key("error")
    writer.string(to_bytes(message))
    writer.end_object()
    return writer.getvalue()


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


def parse_version(text: str) -> int:
    """absl::SimpleAtoi into int64 on the route's digits: leading zeros are fine, a value past
    int64 (of any length: Python's int() refuses over 4300 digits) is TF Serving's error."""
    digits = text.lstrip("0") or "0"
    if len(digits) > 19 or int(digits) > INT64_MAX:
        raise ServingError(
            grpc.StatusCode.INVALID_ARGUMENT, f"Failed to convert version: {text} to numeric."
        )
    return int(digits)


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
        version = parse_version(version_text)
    return Route(
        matched=True,
        model_name=model_name,
        version=version,
        label=_decode(label) if label else None,
        verb=(last or "") if method == "POST" else "",
        subresource=(last or "") if method == "GET" else "",
    )


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


INTERNAL_ERROR_MESSAGE = "Internal error while processing the request; see the server log."


def _failure(exc: Exception, method: str, uri: str) -> ServingError:
    """The status a failed request answers with. TF Serving's own statuses (ours, or
    TensorFlow's with its error code) pass as they are and log nothing, as TF Serving logs
    nothing; anything else is a defect here: logged with its traceback, answered 500 without
    Python's words."""
    if isinstance(exc, ServingError) or isinstance(getattr(exc, "error_code", None), int):
        failure = from_exception(exc)
    else:
        log.exception("REST %s %s failed", method, uri[:200])
        failure = ServingError(grpc.StatusCode.INTERNAL, INTERNAL_ERROR_MESSAGE)
    if failure.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        # REST has no client deadline: TF Serving's only timeout here is the Session::Run one
        # set from --rest_api_timeout_in_ms, and that is its wording (TensorFlow's, when the
        # Session ends the run; ours for a deadline missed before the run).
        failure = ServingError(failure.code, REST_TIMEOUT_MESSAGE)
    return failure


def json_error_page(status: int, message: str) -> HttpResponse:
    """What the port answers by itself (a refused connection, a request read too slowly): the
    API's error body, so clients read it as they read any other error."""
    return HttpResponse(status, list(JSON_HEADERS), error_json(message))


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
        return HttpResponse(http_status(code), list(JSON_HEADERS), output)

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
            failure = _failure(exc, method, uri)
            return failure, route, error_json(failure.message)
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
            signatures = rest_status.signature_defs_of(self._core.get_model_metadata(request))
            key = signature_name or "serving_default"
            # A name that is not UTF-8 (bytes kept from the body) names no signature; protobuf's
            # map cannot even be asked about it.
            if not _is_utf8(key) or key not in signatures:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'Serving signature name: "{key}" not found in signature def',
                )
            return rest_tensors.input_dtypes_of(signatures[key])

        return lookup

    def _predict(self, route: Route, body: bytes) -> bytes:
        doc = parse_json(body)
        signature_name = rest_tensors.signature_name_of(doc)
        inputs, fmt = rest_tensors.fill_predict_inputs(
            doc, signature_name, self._input_dtypes(route)
        )
        request = predict_pb2.PredictRequest(model_spec=route.model_spec())
        request.model_spec.signature_name = signature_name
        for alias, tensor in inputs.items():
            request.inputs[alias].CopyFrom(tensor)
        response = self._core.predict(request, deadline=self._deadline())
        return rest_tensors.predict_response_json(response.outputs, fmt)

    def _classify(self, route: Route, body: bytes) -> bytes:
        request = rest_examples.classification_request(body, route.model_spec())
        response = self._core.classify(request, deadline=self._deadline())
        return rest_examples.classification_json(response.result)

    def _regress(self, route: Route, body: bytes) -> bytes:
        request = rest_examples.regression_request(body, route.model_spec())
        response = self._core.regress(request, deadline=self._deadline())
        return rest_examples.regression_json(response.result)

    _verbs: Mapping[str, Callable[[RestApi, Route, bytes], bytes]] = {
        "predict": _predict,
        "classify": _classify,
        "regress": _regress,
    }

    def _status(self, route: Route) -> bytes:
        if not route.model_name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
        request = get_model_status_pb2.GetModelStatusRequest(model_spec=route.model_spec())
        return rest_status.status_json(self._core.get_model_status(request))

    def _metadata(self, route: Route) -> bytes:
        if not route.model_name:
            raise ServingError(grpc.StatusCode.INVALID_ARGUMENT, "Missing model name in request.")
        request = get_model_metadata_pb2.GetModelMetadataRequest(
            model_spec=route.model_spec(), metadata_field=["signature_def"]
        )
        return rest_status.metadata_json(self._core.get_model_metadata(request))


class RestServer:
    """TF Serving's REST port: `RestApi` on the waitress server of `http_server`."""

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
        limits: RestLimits = DEFAULT_LIMITS,
    ) -> None:
        api = RestApi(core, metrics, monitoring_path=monitoring_path, timeout_s=timeout_s)
        self._server = WaitressServer(
            api.handle,
            host=host,
            port=port,
            # TF Serving's --rest_api_num_threads default: 4 x schedulable CPUs.
            num_threads=num_threads or 4 * (os.cpu_count() or 1),
            max_body_bytes=max_body_bytes,
            limits=limits,
            error_page=json_error_page,
        )

    @property
    def port(self) -> int:
        """The bound port (the requested one until `start`, which resolves port 0)."""
        return self._server.port

    def start(self) -> None:
        """Bind and start serving on a background thread; returns once listening."""
        self._server.start()

    def stop(self, grace: float) -> None:
        """Stop accepting, let in-flight requests finish (up to `grace` seconds), then close."""
        self._server.stop(grace)
