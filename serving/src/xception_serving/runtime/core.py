"""ServingCore: TF Serving's PredictionService and ModelService, transport-free.

gRPC servicers and REST handlers are thin shells over ServingCore: every method takes and returns
tensorflow-serving-api messages and raises ServingError with TF Serving's status code and wording.
This module finds the servable a request names (the ModelManager), runs signatures (directly or
through the batch scheduler, with the request's deadline, which `session_runs.py` holds the
caller to even when TensorFlow cannot stop the run), answers GetModelMetadata,
GetModelStatus and ReloadConfig (get_model_metadata_impl.cc, get_model_status_impl.cc,
model_service_impl.cc) and replays warmup; what each inference API does with the servable it found
is `inference.py`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import grpc
import numpy as np
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from xception_serving.config.files import ConfigError, read_model_server_config
from xception_serving.observability.metrics import Metrics
from xception_serving.runtime import inference
from xception_serving.runtime.batching import BatchingOptions, BatchScheduler
from xception_serving.runtime.errors import ServingError, code_number, from_exception, invalid
from xception_serving.runtime.manager import ModelManager
from xception_serving.runtime.servable import Servable, SessionOptions
from xception_serving.runtime.session_runs import SessionRuns
from xception_serving.runtime.warmup import run_warmup

log = logging.getLogger("xception_serving")

SIGNATURE_DEF_FIELD = "signature_def"


class _NamesAModel(Protocol):
    """A request with a `model_spec` field (every request but MultiInference's)."""

    @property
    def model_spec(self) -> model_pb2.ModelSpec: ...

    def HasField(self, field_name: str) -> bool: ...


def _require_spec(request: _NamesAModel) -> model_pb2.ModelSpec:
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    spec = request.model_spec
    if not spec.name:
        raise invalid("ModelSpec has no name specified.")
    return spec


class ServingCore:
    """Thread-safe, blocking implementation of every TF Serving RPC."""

    def __init__(
        self,
        *,
        metrics: Metrics | None = None,
        file_system_poll_wait_seconds: float = 1.0,
        max_num_load_retries: int = 5,
        load_retry_interval_seconds: float = 60.0,
        enable_model_warmup: bool = True,
        num_request_iterations_for_warmup: int = 1,
        batching: BatchingOptions | None = None,
        session_options: SessionOptions | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self._warmup_iterations = num_request_iterations_for_warmup
        # Runs with a deadline end for their caller at it, even when TensorFlow cannot stop them.
        inter_op = session_options.config.inter_op_parallelism_threads if session_options else 0
        self.session_runs = SessionRuns(inter_op)
        self._batcher = (
            BatchScheduler(batching, self.metrics, self._run_direct) if batching else None
        )
        self.manager = ModelManager(
            metrics=self.metrics,
            file_system_poll_wait_seconds=file_system_poll_wait_seconds,
            max_num_load_retries=max_num_load_retries,
            load_retry_interval_seconds=load_retry_interval_seconds,
            warmup=self._warmup if enable_model_warmup else None,
            session_options=session_options,
        )
        self._config_poller: threading.Thread | None = None
        self._stop = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------
    def load(self, config: model_server_config_pb2.ModelServerConfig) -> None:
        """Load the initial config (blocks until models are available) and start polling."""
        self.manager.apply_config(config, startup=True)
        self.manager.start_polling()

    def watch_config_file(self, path: Path, poll_wait_seconds: float) -> None:
        """Re-read `path` every poll_wait_seconds; parse errors keep the previous config."""
        if poll_wait_seconds <= 0:
            return

        def loop() -> None:
            last = read_model_server_config(path)
            while not self._stop.wait(poll_wait_seconds):
                try:
                    config = read_model_server_config(path)
                except ConfigError as err:
                    log.error("Failed to read ModelServerConfig file: %s", err)
                    continue
                if config == last:
                    continue
                try:
                    self.manager.apply_config(config)
                except ServingError as err:
                    log.error("Failed to apply the new model config from %s: %s", path, err)
                except Exception:
                    log.exception("Failed to apply the new model config from %s", path)
                last = config

        self._config_poller = threading.Thread(target=loop, name="config-poller", daemon=True)
        self._config_poller.start()

    def on_availability_changed(self, callback: Callable[[bool], None]) -> None:
        """Call `callback(any version available)` whenever that changes (the health service)."""
        self.manager.availability_changed = callback

    def any_available(self) -> bool:
        return self.manager.any_available()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._batcher is not None:
            self._batcher.stop(timeout)
        self.manager.stop(timeout)
        if self._config_poller is not None:
            self._config_poller.join(timeout)

    # -- running signatures ----------------------------------------------------------------------
    def _run_direct(
        self,
        servable: Servable,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        try:
            return self.session_runs.run(servable, signature, inputs, deadline)
        except ServingError:
            raise
        except Exception as err:
            raise from_exception(err) from err

    def _run(
        self,
        servable: Servable,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        api: str,
        deadline: float | None,
    ) -> dict[str, np.ndarray]:
        if deadline is not None and time.monotonic() >= deadline:
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        started = time.monotonic()
        if self._batcher is not None:
            outputs = self._batcher.run(servable, signature, inputs, deadline=deadline)
        else:
            outputs = self._run_direct(servable, signature, inputs, deadline)
        self.metrics.runtime_latency.observe(
            (time.monotonic() - started) * 1e6, servable.name, api, "TF1"
        )
        return outputs

    def _runner(self, deadline: float | None) -> inference.Run:
        """How the inference functions run a signature for a request with this deadline."""

        def run(
            servable: Servable, signature: str, inputs: inference.Inputs, api: str
        ) -> inference.Outputs:
            return self._run(servable, signature, inputs, api, deadline)

        return run

    # -- PredictionService: Predict, Classify, Regress, MultiInference ---------------------------
    def predict(
        self, request: predict_pb2.PredictRequest, *, deadline: float | None = None
    ) -> predict_pb2.PredictResponse:
        with self.manager.acquire(_require_spec(request)) as servable:
            return inference.predict(servable, request, self._runner(deadline))

    def classify(
        self,
        request: classification_pb2.ClassificationRequest,
        *,
        deadline: float | None = None,
    ) -> classification_pb2.ClassificationResponse:
        with self.manager.acquire(_require_spec(request)) as servable:
            return inference.classify(servable, request, self._runner(deadline))

    def regress(
        self, request: regression_pb2.RegressionRequest, *, deadline: float | None = None
    ) -> regression_pb2.RegressionResponse:
        with self.manager.acquire(_require_spec(request)) as servable:
            return inference.regress(servable, request, self._runner(deadline))

    def multi_inference(
        self,
        request: inference_pb2.MultiInferenceRequest,
        *,
        deadline: float | None = None,
    ) -> inference_pb2.MultiInferenceResponse:
        # The model is the first task's (multi_inference_helper.cc); the rest must name it too.
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        if not spec.name:
            raise invalid("ModelSpec has no name specified.")
        with self.manager.acquire(spec) as servable:
            return inference.multi_inference(servable, request, self._runner(deadline))

    # -- metadata and status ---------------------------------------------------------------------
    def get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid(f"Metadata field {field} is not supported")
        spec = _require_spec(request)
        with self.manager.acquire(spec) as servable:
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, sig in servable.meta_graph.signature_def.items():
                signature_map.signature_def[key].CopyFrom(sig)
            response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
            return response

    def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        spec = request.model_spec
        version = spec.version.value if spec.WhichOneof("version_choice") == "version" else None
        return self.manager.status(spec.name, version)

    def reload_config(
        self,
        request: model_management_pb2.ReloadConfigRequest,
        *,
        deadline: float | None = None,
    ) -> model_management_pb2.ReloadConfigResponse:
        before = {name: self._counter_value(name) for name in request.metric_names}
        self.manager.apply_config(request.config, deadline=deadline)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = code_number(grpc.StatusCode.OK)
        for name in request.metric_names:
            after = self._counter_value(name)
            old = before[name]
            if after is None or old is None:
                continue
            metric = response.metric.add()
            metric.name = name
            metric.int64_value_increase = int(after - old)
        return response

    def _counter_value(self, tf_name: str) -> float | None:
        for family in (
            self.metrics.request_count,
            self.metrics.load_attempt_count,
            self.metrics.wrapped_run_count,
            self.metrics.warmup_records_read,
        ):
            if family.name == tf_name or family.name == tf_name.replace("/", ":"):
                return family.total()
        return None

    # -- warmup ----------------------------------------------------------------------------------
    def _warmup(self, servable: Servable) -> None:
        run_warmup(servable, self._replay, self.metrics, iterations=self._warmup_iterations)

    def _replay(self, servable: Servable, entry: prediction_log_pb2.PredictionLog) -> None:
        """One warmup record on the version being loaded, without a deadline (as TF Serving)."""
        run = self._runner(None)
        kind = entry.WhichOneof("log_type")
        if kind == "predict_log":
            inference.predict(servable, entry.predict_log.request, run)
        elif kind == "classify_log":
            inference.classify(servable, entry.classify_log.request, run)
        elif kind == "regress_log":
            inference.regress(servable, entry.regress_log.request, run)
        elif kind == "multi_inference_log":
            inference.multi_inference(servable, entry.multi_inference_log.request, run)
