"""The request semantics of TF Serving's PredictionService and ModelService, transport-free.

gRPC servicers and REST handlers are thin shells over ServingCore: every method takes and returns
tensorflow-serving-api messages and raises ServingError with TF Serving's status code and wording
(as in TF Serving's predict_impl.cc, classifier.cc, regressor.cc and get_model_status_impl.cc).
Checks run in TF Serving's order so the first error reported is the one TF Serving would report.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from xception_serving import tensors
from xception_serving.batching import BatchingOptions, BatchScheduler
from xception_serving.config.files import ConfigError, read_model_server_config
from xception_serving.errors import ServingError, code_number, from_exception
from xception_serving.manager import ModelManager
from xception_serving.metrics import Metrics
from xception_serving.servable import Servable, SessionOptions, SignatureInfo
from xception_serving.warmup import run_warmup

log = logging.getLogger("xception_serving")

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"
SIGNATURE_DEF_FIELD = "signature_def"
SIGNATURE_DEF_MAP_TYPE = "type.googleapis.com/tensorflow.serving.SignatureDefMap"

Inputs = dict[str, np.ndarray]


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _require_spec(request: object) -> model_pb2.ModelSpec:
    if not request.HasField("model_spec"):  # type: ignore[attr-defined]
        raise _invalid("Missing ModelSpec")
    spec: model_pb2.ModelSpec = request.model_spec  # type: ignore[attr-defined]
    if not spec.name:
        raise _invalid("ModelSpec has no name specified.")
    return spec


def _fill_spec(out: model_pb2.ModelSpec, name: str, signature: str, servable: Servable) -> None:
    out.name = name
    out.signature_name = signature
    out.version.value = servable.version


def _text(label: object) -> str:
    return label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)


def _joined(keys: Iterable[str]) -> str:
    return ",".join(sorted(keys))


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

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._batcher is not None:
            self._batcher.stop(timeout)
        self.manager.stop(timeout)
        if self._config_poller is not None:
            self._config_poller.join(timeout)

    # -- running signatures ----------------------------------------------------------------------
    def _run_direct(
        self, servable: Servable, signature: str, inputs: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        try:
            return servable.run(signature, inputs)
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
            outputs = self._run_direct(servable, signature, inputs)
        self.metrics.runtime_latency.observe(
            (time.monotonic() - started) * 1e6, servable.name, api, "TF1"
        )
        return outputs

    # -- Predict ---------------------------------------------------------------------------------
    def predict(
        self, request: predict_pb2.PredictRequest, *, deadline: float | None = None
    ) -> predict_pb2.PredictResponse:
        spec = _require_spec(request)
        with self.manager.acquire(spec) as servable:
            return self.predict_on(servable, request, deadline=deadline)

    def predict_on(
        self,
        servable: Servable,
        request: predict_pb2.PredictRequest,
        *,
        deadline: float | None = None,
    ) -> predict_pb2.PredictResponse:
        key = request.model_spec.signature_name or DEFAULT_SIGNATURE
        info = servable.signatures.get(key)
        if info is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
            )
        response = predict_pb2.PredictResponse()
        _fill_spec(response.model_spec, request.model_spec.name, key, servable)
        inputs = self._predict_inputs(info, request)
        aliases = self._output_aliases(info, request.output_filter)
        outputs = self._run(servable, key, inputs, "Predict", deadline)
        if any(alias not in outputs for alias in aliases):
            raise ServingError(grpc.StatusCode.UNKNOWN, "Predict internal error")
        for alias in aliases:
            tensors.fill_proto(response.outputs[alias], outputs[alias], info.output_dtypes[alias])
        return response

    @staticmethod
    def _predict_inputs(info: SignatureInfo, request: predict_pb2.PredictRequest) -> Inputs:
        sig = info.signature_def
        sent = set(request.inputs)
        expected = set(info.input_aliases)
        defaults = set(getattr(sig, "defaults", {}))
        if len(sent) > len(expected) or (len(sent) < len(expected) and not defaults):
            raise _invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{_joined(sent)}}}) != len({{{_joined(expected)}}}). "
                f"Sent extra: {{{_joined(sent - expected)}}}. "
                f"Missing but required: {{{_joined(expected - sent)}}}."
            )
        inputs: Inputs = {}
        for alias in info.input_aliases:
            if alias in request.inputs:
                proto = request.inputs[alias]
            elif alias in defaults:
                proto = sig.defaults[alias]
            else:
                raise _invalid(
                    f"Signature input alias: {alias}(feed name: {sig.inputs[alias].name}) not "
                    "found in request and no default value provided. Inputs expected to be in "
                    f"the request {{{_joined(sent)}}}, or default input alias set: "
                    f"{_joined(defaults)}"
                )
            try:
                inputs[alias] = tensors.to_numpy(proto)
            except tensors.TensorParseError:
                raise _invalid(f"tensor parsing error: {alias}") from None
        used = sent & expected
        if sent and used != sent:
            raise _invalid(
                f"Inputs contains invalid name. Used request inputs: {_joined(used)}, "
                f"request input: {_joined(sent)}"
            )
        # TF's call frame rejects a feed whose dtype differs from the placeholder's.
        for index, alias in enumerate(info.input_aliases):
            want = info.input_dtypes[alias]
            got = request.inputs[alias].dtype if alias in request.inputs else want
            if got != want:
                raise _invalid(
                    f"Expects arg[{index}] to be {tensors.type_name(want)} but "
                    f"{tensors.type_name(got)} is provided"
                )
        return inputs

    @staticmethod
    def _output_aliases(info: SignatureInfo, output_filter: Iterable[str]) -> list[str]:
        wanted = list(output_filter)
        if not wanted:
            return list(info.output_aliases)
        seen: set[str] = set()
        for alias in wanted:
            if alias not in info.output_dtypes:
                raise _invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{_joined(info.output_aliases)}}}."
                )
            if alias in seen:
                raise _invalid(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        return wanted

    # -- Classify / Regress / MultiInference -----------------------------------------------------
    @staticmethod
    def _serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
        kind = request_input.WhichOneof("kind")
        if kind == "example_list":
            serialized = [e.SerializeToString() for e in request_input.example_list.examples]
        elif kind == "example_list_with_context":
            with_context = request_input.example_list_with_context
            # Concatenated serializations parse as a merge: context features in every example.
            context = with_context.context.SerializeToString()
            serialized = [context + e.SerializeToString() for e in with_context.examples]
        else:
            serialized = []
        if not serialized:
            raise _invalid("Input is empty.")
        array = np.empty(len(serialized), dtype=object)
        array[:] = serialized
        return array

    @staticmethod
    def _signature_for(servable: Servable, key: str) -> SignatureInfo:
        info = servable.signatures.get(key)
        if info is None:
            raise _invalid(f"No signature was found with the name: {key}")
        return info

    @staticmethod
    def _check_classification_signature(info: SignatureInfo) -> None:
        sig = info.signature_def
        if len(sig.inputs) != 1:
            raise _invalid("Expected one input Tensor.")
        if len(sig.outputs) not in (1, 2):
            raise _invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}")
        if CLASSIFY_INPUTS not in sig.inputs:
            raise _invalid(f"No classification inputs found in SignatureDef: {sig}")
        classes = sig.outputs.get(CLASSIFY_CLASSES)
        scores = sig.outputs.get(CLASSIFY_SCORES)
        if classes is None and scores is None:
            raise _invalid(
                f"Expected classification signature outputs to contain classes or scores: {sig}"
            )
        if classes is not None and classes.dtype != types_pb2.DT_STRING:
            raise _invalid(
                "Expected classes Tensor of DT_STRING.  Got: "
                f"{types_pb2.DataType.Name(classes.dtype)}"
            )
        if scores is not None and scores.dtype != types_pb2.DT_FLOAT:
            raise _invalid(
                f"Expected scores Tensor of DT_FLOAT.  Got: {types_pb2.DataType.Name(scores.dtype)}"
            )

    @staticmethod
    def _check_regression_signature(info: SignatureInfo) -> None:
        sig = info.signature_def
        if len(sig.inputs) != 1:
            raise _invalid("Expected one input Tensor.")
        if len(sig.outputs) != 1:
            raise _invalid("Expected one output Tensor.")
        if REGRESS_INPUTS not in sig.inputs:
            raise _invalid(f"No regression inputs found in SignatureDef: {sig}")
        if REGRESS_OUTPUTS not in sig.outputs:
            raise _invalid(f"No regression outputs found in SignatureDef: {sig}")
        if sig.outputs[REGRESS_OUTPUTS].dtype != types_pb2.DT_FLOAT:
            raise _invalid(
                "Expected output Tensor of DT_FLOAT.  Got: "
                f"{types_pb2.DataType.Name(sig.outputs[REGRESS_OUTPUTS].dtype)}"
            )

    @staticmethod
    def _classification_result(
        outputs: Mapping[str, np.ndarray],
        num_examples: int,
        result: classification_pb2.ClassificationResult,
    ) -> None:
        classes = outputs.get(CLASSIFY_CLASSES)
        scores = outputs.get(CLASSIFY_SCORES)
        for name, tensor in ((CLASSIFY_CLASSES, classes), (CLASSIFY_SCORES, scores)):
            if tensor is None:
                continue
            if tensor.ndim != 2:
                raise _invalid(
                    f"Expected Tensor shape: [batch_size num_classes] but got "
                    f"[{','.join(str(d) for d in tensor.shape)}] ({name})"
                )
            if tensor.shape[0] != num_examples:
                raise _invalid(
                    "Input batch size did not match output batch size: "
                    f"{num_examples} vs. {tensor.shape[0]}"
                )
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise _invalid(
                "Tensors class and score should match in dim_size(1). Got "
                f"{classes.shape[1]} vs. {scores.shape[1]}"
            )
        labels = classes.tolist() if classes is not None else None
        values = scores.astype(np.float32).tolist() if scores is not None else None
        make = classification_pb2.Class
        for i in range(num_examples):
            if labels is not None and values is not None:
                pairs = zip(labels[i], values[i], strict=True)
                row = [make(label=_text(name), score=v) for name, v in pairs]
            elif labels is not None:
                row = [make(label=_text(name)) for name in labels[i]]
            else:
                row = [make(score=v) for v in values[i]]  # type: ignore[index]
            result.classifications.add().classes.extend(row)

    @staticmethod
    def _regression_result(
        outputs: Mapping[str, np.ndarray],
        num_examples: int,
        result: regression_pb2.RegressionResult,
    ) -> None:
        values = outputs[REGRESS_OUTPUTS]
        shape = values.shape
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise _invalid(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
                f"got [{','.join(str(d) for d in shape)}]"
            )
        if shape[0] != num_examples:
            raise _invalid(
                f"Input batch size did not match output batch size: {num_examples} vs. {shape[0]}"
            )
        for value in values.reshape(-1).astype(np.float32).tolist():
            result.regressions.add().value = value

    def classify(
        self,
        request: classification_pb2.ClassificationRequest,
        *,
        deadline: float | None = None,
    ) -> classification_pb2.ClassificationResponse:
        spec = _require_spec(request)
        with self.manager.acquire(spec) as servable:
            return self.classify_on(servable, request, deadline=deadline)

    def classify_on(
        self,
        servable: Servable,
        request: classification_pb2.ClassificationRequest,
        *,
        deadline: float | None = None,
    ) -> classification_pb2.ClassificationResponse:
        key = request.model_spec.signature_name or DEFAULT_SIGNATURE
        info = self._signature_for(servable, key)
        self._check_classification_signature(info)
        examples = self._serialized_examples(request.input)
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, request.model_spec.name, key, servable)
        outputs = self._run(servable, key, {CLASSIFY_INPUTS: examples}, "Classify", deadline)
        self._classification_result(outputs, len(examples), response.result)
        return response

    def regress(
        self, request: regression_pb2.RegressionRequest, *, deadline: float | None = None
    ) -> regression_pb2.RegressionResponse:
        spec = _require_spec(request)
        with self.manager.acquire(spec) as servable:
            return self.regress_on(servable, request, deadline=deadline)

    def regress_on(
        self,
        servable: Servable,
        request: regression_pb2.RegressionRequest,
        *,
        deadline: float | None = None,
    ) -> regression_pb2.RegressionResponse:
        key = request.model_spec.signature_name or DEFAULT_SIGNATURE
        info = self._signature_for(servable, key)
        self._check_regression_signature(info)
        examples = self._serialized_examples(request.input)
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, request.model_spec.name, key, servable)
        outputs = self._run(servable, key, {REGRESS_INPUTS: examples}, "Regress", deadline)
        self._regression_result(outputs, len(examples), response.result)
        return response

    def multi_inference(
        self,
        request: inference_pb2.MultiInferenceRequest,
        *,
        deadline: float | None = None,
    ) -> inference_pb2.MultiInferenceResponse:
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        if not spec.name:
            raise _invalid("ModelSpec has no name specified.")
        with self.manager.acquire(spec) as servable:
            return self.multi_inference_on(servable, request, deadline=deadline)

    def multi_inference_on(
        self,
        servable: Servable,
        request: inference_pb2.MultiInferenceRequest,
        *,
        deadline: float | None = None,
    ) -> inference_pb2.MultiInferenceResponse:
        model_name = ""
        seen: set[str] = set()
        input_tensor = ""
        plan: list[tuple[inference_pb2.InferenceTask, str, SignatureInfo]] = []
        for task in request.tasks:
            if not task.model_spec.name:
                raise _invalid("Found ModelSpec with an empty model name.")
            if not model_name:
                model_name = task.model_spec.name
            elif model_name != task.model_spec.name:
                raise _invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            key = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if key in seen:
                raise _invalid(f"Duplicate evaluation of signature: {key}")
            seen.add(key)
            info = servable.signatures.get(key)
            if info is None:
                raise _invalid(f"Requested signature not found in model graph: {key}")
            if task.method_name == CLASSIFY_METHOD:
                self._check_classification_signature(info)
            elif task.method_name == REGRESS_METHOD:
                self._check_regression_signature(info)
            else:
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"Unsupported signature method_name: {task.method_name}",
                )
            # TF Serving feeds one tensor once for all tasks.
            name = info.signature_def.inputs[CLASSIFY_INPUTS].name
            if not input_tensor:
                input_tensor = name
            elif input_tensor != name:
                raise _invalid("Input tensor must be the same for all Signatures.")
            plan.append((task, key, info))
        examples = self._serialized_examples(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task, key, _info in plan:
            outputs = self._run(
                servable, key, {CLASSIFY_INPUTS: examples}, "MultiInference", deadline
            )
            result = response.results.add()
            _fill_spec(result.model_spec, task.model_spec.name, key, servable)
            if task.method_name == CLASSIFY_METHOD:
                self._classification_result(outputs, len(examples), result.classification_result)
            else:
                self._regression_result(outputs, len(examples), result.regression_result)
        return response

    # -- metadata and status ---------------------------------------------------------------------
    def get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise _invalid(f"Metadata field {field} is not supported")
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
            raise _invalid("Missing ModelSpec")
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
        kind = entry.WhichOneof("log_type")
        if kind == "predict_log":
            self.predict_on(servable, entry.predict_log.request)
        elif kind == "classify_log":
            self.classify_on(servable, entry.classify_log.request)
        elif kind == "regress_log":
            self.regress_on(servable, entry.regress_log.request)
        elif kind == "multi_inference_log":
            self.multi_inference_on(servable, entry.multi_inference_log.request)
