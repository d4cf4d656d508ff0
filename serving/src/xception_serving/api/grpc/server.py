"""gRPC shells over ServingCore: PredictionService, ModelService and grpc.health.v1.Health.

Registered with TF Serving's generated servicer bases (tensorflow-serving-api), so method paths
and messages are TF Serving's own. Receive/send limits are 2147483647 bytes as in TF Serving;
error messages are cut at 1024 characters + "...TRUNCATED" as TF Serving's ToGRPCStatus does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from xception_serving.config.files import SSLConfig
from xception_serving.observability.metrics import Metrics
from xception_serving.options import BIND_FAILURE
from xception_serving.runtime.core import ServingCore
from xception_serving.runtime.errors import from_exception, grpc_message

MAX_MESSAGE_BYTES = 2147483647
# Names set to SERVING: "" (overall), TF Serving's short names, and the full service names.
HEALTH_SERVICES = (
    "",
    "ModelService",
    "PredictionService",
    "tensorflow.serving.ModelService",
    "tensorflow.serving.PredictionService",
)

_R = TypeVar("_R")


def _deadline(context: grpc.ServicerContext) -> float | None:
    remaining: float | None = context.time_remaining()
    if remaining is None or remaining > 10 * 365 * 86400:
        return None
    return time.monotonic() + remaining


def _call(
    context: grpc.ServicerContext,
    fn: Callable[[], _R],
    *,
    metrics: Metrics | None = None,
    model_name: str = "",
    api: str = "",
) -> _R:
    """`fn()`, or the call aborted with TF Serving's status and message (ToGRPCStatus).

    With `metrics`, recorded as prediction_service_impl.cc records Predict, Classify and Regress:
    every request counted by status, the latency of successful ones.
    """

    def record(status: str, latency_s: float | None) -> None:
        if metrics is not None:
            metrics.record_request(
                model_name=model_name,
                api=api,
                entrypoint="GRPC",
                status=status,
                latency_s=latency_s,
            )

    started = time.monotonic()
    try:
        result = fn()
    except Exception as err:
        error = from_exception(err)
        record(error.code.name, None)
        context.abort(error.code, grpc_message(error.message))
    record("OK", time.monotonic() - started)
    return result


# tensorflow-serving-api ships no stubs, so its generated servicer bases are Any to mypy.
class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, core: ServingCore) -> None:
        self._core = core

    def _inference(
        self,
        context: grpc.ServicerContext,
        api: str,
        model_name: str,
        run: Callable[[float | None], _R],
    ) -> _R:
        """An API TF Serving counts: `run(deadline)` with the call's deadline, recorded as `api`."""
        return _call(
            context,
            lambda: run(_deadline(context)),
            metrics=self._core.metrics,
            model_name=model_name,
            api=api,
        )

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        return self._inference(
            context,
            "Predict",
            request.model_spec.name,
            lambda deadline: self._core.predict(request, deadline=deadline),
        )

    def Classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        return self._inference(
            context,
            "Classify",
            request.model_spec.name,
            lambda deadline: self._core.classify(request, deadline=deadline),
        )

    def Regress(
        self, request: regression_pb2.RegressionRequest, context: grpc.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        return self._inference(
            context,
            "Regress",
            request.model_spec.name,
            lambda deadline: self._core.regress(request, deadline=deadline),
        )

    def MultiInference(
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        # Not counted: TF Serving records no request metrics for MultiInference.
        return _call(
            context, lambda: self._core.multi_inference(request, deadline=_deadline(context))
        )

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        return _call(context, lambda: self._core.get_model_metadata(request))


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, core: ServingCore) -> None:
        self._core = core

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        return _call(context, lambda: self._core.get_model_status(request))

    def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        return _call(
            context, lambda: self._core.reload_config(request, deadline=_deadline(context))
        )


def server_credentials(ssl: SSLConfig) -> grpc.ServerCredentials:
    """TF Serving's SSLConfig: PEM contents inline; client_verify requires client certificates."""
    root = ssl.custom_ca.encode() if ssl.custom_ca else None
    return grpc.ssl_server_credentials(
        [(ssl.server_key.encode(), ssl.server_cert.encode())],
        root_certificates=root,
        require_client_auth=bool(ssl.client_verify),
    )


class GrpcServer:
    """The gRPC endpoint: servicers, health, limits, optional TLS."""

    def __init__(
        self,
        core: ServingCore,
        *,
        host: str,
        port: int,
        ssl: SSLConfig | None = None,
        max_workers: int = 64,
        extra_options: Sequence[tuple[str, int | str]] = (),
        interceptors: Sequence[grpc.ServerInterceptor] = (),
    ) -> None:
        self._core = core
        self.health = health.HealthServicer()
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),  # a taken port is an error, never shared
                *extra_options,
            ],
            # As TF Serving's --grpc_max_threads (a gRPC thread quota): a call beyond that many
            # is refused at once with RESOURCE_EXHAUSTED instead of queueing unseen behind busy
            # workers past its deadline.
            maximum_concurrent_rpcs=max_workers,
            # Server spans when OTEL_TRACES_EXPORTER asks for them (cli.py builds them with
            # tracing.server_interceptors() before loading models, so bad OTEL_* fails fast).
            interceptors=list(interceptors),
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(core), self._server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if ssl is not None:
            self.port = self._server.add_secure_port(address, server_credentials(ssl))
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"{BIND_FAILURE} gRPC port {address}")
        self.set_serving(False)

    def add_unix_socket(self, path: str) -> None:
        """Also listen on `unix:<path>` (TF Serving's --grpc_socket_path)."""
        if self._server.add_insecure_port(f"unix:{path}") == 0:
            raise OSError(f"{BIND_FAILURE} unix:{path}")

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in HEALTH_SERVICES:
            self.health.set(service, status)

    def start(self) -> None:
        self._server.start()

    def stop(self, grace: float) -> None:
        """Refuse new RPCs, let in-flight ones finish within `grace` seconds."""
        self.set_serving(False)
        self._server.stop(grace).wait(grace + 5)
