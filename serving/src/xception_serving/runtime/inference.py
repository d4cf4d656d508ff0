"""Predict, Classify, Regress and MultiInference on one loaded version, as TF Serving does them.

Each function checks the request against the servable's SignatureDef, builds the feeds, has `run`
execute the signature, and turns the outputs into the response, with TF Serving's status codes and
wording (predict_util.cc, classifier.cc, regressor.cc, multi_inference.cc, and util.cc for the
tf.Example input). Checks run in TF Serving's order so the first error reported is the one TF
Serving would report. Finding the servable, deadlines and batching are the caller's (core.py):
`run` is how it executes a signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import grpc
import numpy as np
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    inference_pb2,
    input_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from xception_serving.runtime import tensors
from xception_serving.runtime.errors import ServingError, invalid
from xception_serving.runtime.servable import Servable, SignatureInfo

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
EXAMPLES_INPUT = "inputs"  # the serialized tf.Example input of classify and regress signatures
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_OUTPUTS = "outputs"

Inputs = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]
# (servable, signature key, feeds by input alias, API name) -> outputs by output alias. The API
# name is the `API` label of the runtime latency metric.
Run = Callable[[Servable, str, Inputs, str], Outputs]


def _joined(keys: Iterable[str]) -> str:
    return ",".join(sorted(keys))


def _text(label: object) -> str:
    return label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)


def _fill_spec(out: model_pb2.ModelSpec, name: str, signature: str, servable: Servable) -> None:
    out.name = name
    out.signature_name = signature
    out.version.value = servable.version


# -- Predict (predict_util.cc) ---------------------------------------------------------------------


def predict(
    servable: Servable, request: predict_pb2.PredictRequest, run: Run
) -> predict_pb2.PredictResponse:
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    info = servable.signatures.get(key)
    if info is None:
        raise ServingError(
            grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.'
        )
    response = predict_pb2.PredictResponse()
    _fill_spec(response.model_spec, request.model_spec.name, key, servable)
    inputs = _predict_inputs(info, request)
    aliases = _output_aliases(info, request.output_filter)
    outputs = run(servable, key, inputs, "Predict")
    if any(alias not in outputs for alias in aliases):
        raise ServingError(grpc.StatusCode.UNKNOWN, "Predict internal error")
    for alias in aliases:
        tensors.fill_proto(response.outputs[alias], outputs[alias], info.output_dtypes[alias])
    return response


def _predict_inputs(info: SignatureInfo, request: predict_pb2.PredictRequest) -> Inputs:
    sig = info.signature_def
    sent = set(request.inputs)
    expected = set(info.input_aliases)
    defaults = set(getattr(sig, "defaults", {}))
    if len(sent) > len(expected) or (len(sent) < len(expected) and not defaults):
        raise invalid(
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
            raise invalid(
                f"Signature input alias: {alias}(feed name: {sig.inputs[alias].name}) not "
                "found in request and no default value provided. Inputs expected to be in "
                f"the request {{{_joined(sent)}}}, or default input alias set: "
                f"{_joined(defaults)}"
            )
        try:
            inputs[alias] = tensors.to_numpy(proto)
        except tensors.TensorParseError:
            raise invalid(f"tensor parsing error: {alias}") from None
    used = sent & expected
    if sent and used != sent:
        raise invalid(
            f"Inputs contains invalid name. Used request inputs: {_joined(used)}, "
            f"request input: {_joined(sent)}"
        )
    # TF's call frame rejects a feed whose dtype differs from the placeholder's.
    for index, alias in enumerate(info.input_aliases):
        want = info.input_dtypes[alias]
        got = request.inputs[alias].dtype if alias in request.inputs else want
        if got != want:
            raise invalid(
                f"Expects arg[{index}] to be {tensors.type_name(want)} but "
                f"{tensors.type_name(got)} is provided"
            )
    return inputs


def _output_aliases(info: SignatureInfo, output_filter: Iterable[str]) -> list[str]:
    wanted = list(output_filter)
    if not wanted:
        return list(info.output_aliases)
    seen: set[str] = set()
    for alias in wanted:
        if alias not in info.output_dtypes:
            raise invalid(
                f"output tensor alias not found in signature: {alias} Outputs expected to "
                f"be in the set {{{_joined(info.output_aliases)}}}."
            )
        if alias in seen:
            raise invalid(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return wanted


# -- Classify and Regress (classifier.cc, regressor.cc) --------------------------------------------


def _serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """util.cc's InputToSerializedExampleTensor: one serialized tf.Example per element."""
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
        raise invalid("Input is empty.")
    array = np.empty(len(serialized), dtype=object)
    array[:] = serialized
    return array


def _check_classification_signature(info: SignatureInfo) -> None:
    sig = info.signature_def
    if len(sig.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if len(sig.outputs) not in (1, 2):
        raise invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}")
    if EXAMPLES_INPUT not in sig.inputs:
        raise invalid(f"No classification inputs found in SignatureDef: {sig}")
    classes = sig.outputs.get(CLASSIFY_CLASSES)
    scores = sig.outputs.get(CLASSIFY_SCORES)
    if classes is None and scores is None:
        raise invalid(
            f"Expected classification signature outputs to contain classes or scores: {sig}"
        )
    if classes is not None and classes.dtype != types_pb2.DT_STRING:
        raise invalid(
            f"Expected classes Tensor of DT_STRING.  Got: {types_pb2.DataType.Name(classes.dtype)}"
        )
    if scores is not None and scores.dtype != types_pb2.DT_FLOAT:
        raise invalid(
            f"Expected scores Tensor of DT_FLOAT.  Got: {types_pb2.DataType.Name(scores.dtype)}"
        )


def _check_regression_signature(info: SignatureInfo) -> None:
    sig = info.signature_def
    if len(sig.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if len(sig.outputs) != 1:
        raise invalid("Expected one output Tensor.")
    if EXAMPLES_INPUT not in sig.inputs:
        raise invalid(f"No regression inputs found in SignatureDef: {sig}")
    if REGRESS_OUTPUTS not in sig.outputs:
        raise invalid(f"No regression outputs found in SignatureDef: {sig}")
    if sig.outputs[REGRESS_OUTPUTS].dtype != types_pb2.DT_FLOAT:
        raise invalid(
            "Expected output Tensor of DT_FLOAT.  Got: "
            f"{types_pb2.DataType.Name(sig.outputs[REGRESS_OUTPUTS].dtype)}"
        )


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
            raise invalid(
                f"Expected Tensor shape: [batch_size num_classes] but got "
                f"[{','.join(str(d) for d in tensor.shape)}] ({name})"
            )
        if tensor.shape[0] != num_examples:
            raise invalid(
                "Input batch size did not match output batch size: "
                f"{num_examples} vs. {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(
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


def _regression_result(
    outputs: Mapping[str, np.ndarray],
    num_examples: int,
    result: regression_pb2.RegressionResult,
) -> None:
    values = outputs[REGRESS_OUTPUTS]
    shape = values.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise invalid(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got [{','.join(str(d) for d in shape)}]"
        )
    if shape[0] != num_examples:
        raise invalid(
            f"Input batch size did not match output batch size: {num_examples} vs. {shape[0]}"
        )
    for value in values.reshape(-1).astype(np.float32).tolist():
        result.regressions.add().value = value


def _run_examples(
    servable: Servable,
    request: classification_pb2.ClassificationRequest | regression_pb2.RegressionRequest,
    check: Callable[[SignatureInfo], None],
    api: str,
    run: Run,
    response_spec: model_pb2.ModelSpec,
) -> tuple[Outputs, int]:
    """Classify's and Regress's shared part: the signature, checked by `check`, run on the
    request's tf.Examples. Returns the outputs and the number of examples."""
    key = request.model_spec.signature_name or DEFAULT_SIGNATURE
    info = servable.signatures.get(key)
    if info is None:
        raise invalid(f"No signature was found with the name: {key}")
    check(info)
    examples = _serialized_examples(request.input)
    _fill_spec(response_spec, request.model_spec.name, key, servable)
    return run(servable, key, {EXAMPLES_INPUT: examples}, api), len(examples)


def classify(
    servable: Servable, request: classification_pb2.ClassificationRequest, run: Run
) -> classification_pb2.ClassificationResponse:
    response = classification_pb2.ClassificationResponse()
    outputs, count = _run_examples(
        servable, request, _check_classification_signature, "Classify", run, response.model_spec
    )
    _classification_result(outputs, count, response.result)
    return response


def regress(
    servable: Servable, request: regression_pb2.RegressionRequest, run: Run
) -> regression_pb2.RegressionResponse:
    response = regression_pb2.RegressionResponse()
    outputs, count = _run_examples(
        servable, request, _check_regression_signature, "Regress", run, response.model_spec
    )
    _regression_result(outputs, count, response.result)
    return response


# -- MultiInference (multi_inference.cc) -----------------------------------------------------------


# The signature checks of each MultiInference task method.
_TASK_CHECKS: dict[str, Callable[[SignatureInfo], None]] = {
    CLASSIFY_METHOD: _check_classification_signature,
    REGRESS_METHOD: _check_regression_signature,
}


def _task_signature(servable: Servable, key: str, method_name: str) -> SignatureInfo:
    """A task's signature, checked for the task's method."""
    info = servable.signatures.get(key)
    if info is None:
        raise invalid(f"Requested signature not found in model graph: {key}")
    check = _TASK_CHECKS.get(method_name)
    if check is None:
        raise ServingError(
            grpc.StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {method_name}"
        )
    check(info)
    return info


def _plan_tasks(
    servable: Servable, tasks: Iterable[inference_pb2.InferenceTask]
) -> list[tuple[inference_pb2.InferenceTask, str]]:
    """Each task with its signature key, after TF Serving's checks in its order: one model, each
    signature once, a known method, one input tensor for all."""
    model_name = ""
    seen: set[str] = set()
    input_tensor = ""
    plan: list[tuple[inference_pb2.InferenceTask, str]] = []
    for task in tasks:
        if not task.model_spec.name:
            raise invalid("Found ModelSpec with an empty model name.")
        model_name = model_name or task.model_spec.name
        if model_name != task.model_spec.name:
            raise invalid(
                "All ModelSpecs in a MultiInferenceRequest must access the same model name."
            )
        key = task.model_spec.signature_name or DEFAULT_SIGNATURE
        if key in seen:
            raise invalid(f"Duplicate evaluation of signature: {key}")
        seen.add(key)
        info = _task_signature(servable, key, task.method_name)
        # TF Serving feeds one tensor once for all tasks.
        name = info.signature_def.inputs[EXAMPLES_INPUT].name
        input_tensor = input_tensor or name
        if input_tensor != name:
            raise invalid("Input tensor must be the same for all Signatures.")
        plan.append((task, key))
    return plan


def multi_inference(
    servable: Servable, request: inference_pb2.MultiInferenceRequest, run: Run
) -> inference_pb2.MultiInferenceResponse:
    plan = _plan_tasks(servable, request.tasks)
    examples = _serialized_examples(request.input)
    response = inference_pb2.MultiInferenceResponse()
    for task, key in plan:
        outputs = run(servable, key, {EXAMPLES_INPUT: examples}, "MultiInference")
        result = response.results.add()
        _fill_spec(result.model_spec, task.model_spec.name, key, servable)
        if task.method_name == CLASSIFY_METHOD:
            _classification_result(outputs, len(examples), result.classification_result)
        else:
            _regression_result(outputs, len(examples), result.regression_result)
    return response
