"""The exported Xception (small fixture) through the local server and the official stubs."""

from __future__ import annotations

import re

import grpc
import numpy as np
import pytest
import tensorflow as tf
import xception_contract as contract
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)


@pytest.fixture(scope="module")
def stub(xception_server):
    with grpc.insecure_channel(xception_server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def test_xception_predict_on_image_bytes_returns_typed_top_k(
    stub, sample_jpeg: bytes, small_xception_model
) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = contract.DEFAULT_MODEL_NAME
    images = request.inputs[contract.IMAGE_BYTES_INPUT]
    images.dtype = types_pb2.DT_STRING
    images.tensor_shape.dim.add().size = 2
    images.string_val.extend([sample_jpeg, sample_jpeg])
    response = stub.Predict(request, timeout=120)
    k = small_xception_model.top_k
    scores = response.outputs[contract.TOP_K_SCORES_OUTPUT]
    assert scores.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in scores.tensor_shape.dim] == [2, k]
    ids = response.outputs[contract.TOP_K_CLASS_IDS_OUTPUT]
    assert ids.dtype == types_pb2.DT_INT32 and len(ids.int_val) == 2 * k
    labels = response.outputs[contract.TOP_K_LABELS_OUTPUT]
    assert labels.dtype == types_pb2.DT_STRING and len(labels.string_val) == 2 * k
    probabilities = np.asarray(response.outputs[contract.PROBABILITIES_OUTPUT].float_val)
    assert probabilities.shape == (2 * small_xception_model.num_classes,)
    assert np.isclose(probabilities[: small_xception_model.num_classes].sum(), 1.0, atol=1e-3)
    assert response.model_spec.signature_name == contract.BYTES_SIGNATURE
    assert response.model_spec.version.value == small_xception_model.version


def test_xception_classify_returns_labelled_scores(stub, sample_jpeg: bytes) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = contract.DEFAULT_MODEL_NAME
    request.model_spec.signature_name = contract.CLASSIFY_SIGNATURE
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[sample_jpeg]))
    request.input.example_list.examples.add().features.feature[
        contract.EXAMPLE_IMAGE_FEATURE
    ].CopyFrom(feature)
    response = stub.Classify(request, timeout=120)
    classes = response.result.classifications[0].classes
    assert len(classes) >= 1
    assert all(c.label for c in classes)
    assert all(0.0 <= c.score <= 1.0 for c in classes)


def test_xception_regress_answers_as_tf_serving_without_regression_signature(stub) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = contract.DEFAULT_MODEL_NAME
    request.input.example_list.examples.add()
    with pytest.raises(grpc.RpcError) as info:
        stub.Regress(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # serving_default has one input and several outputs: TF Serving's structure check order.
    assert info.value.details() == "Expected one output Tensor."


def test_xception_metadata_lists_the_contract_signatures(stub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = contract.DEFAULT_MODEL_NAME
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=60)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    for key in (
        contract.BYTES_SIGNATURE,
        contract.PIXELS_SIGNATURE,
        contract.PREPROCESSED_SIGNATURE,
        contract.CLASSIFY_SIGNATURE,
    ):
        assert key in signatures.signature_def
    inputs = signatures.signature_def[contract.BYTES_SIGNATURE].inputs
    assert inputs[contract.IMAGE_BYTES_INPUT].dtype == types_pb2.DT_STRING


# How a Session names the node of a failed assertion (inside a function of the graph, or not).
ASSERT_NODE = re.compile(r"\t \[\[(?:\{\{function_node \w+\}\})?\{\{node [\w/]+/Assert\}\}\]\]")


def test_xception_bad_image_is_invalid_argument(stub) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = contract.DEFAULT_MODEL_NAME
    images = request.inputs[contract.IMAGE_BYTES_INPUT]
    images.dtype = types_pb2.DT_STRING
    images.tensor_shape.dim.add().size = 1
    images.string_val.append(b"definitely not an image")
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The graph's own check, naming the image and its first bytes ("def", tf.debugging.Assert
    # shows three), then the node, as a Session reports a failed assertion.
    first_line, node = info.value.details().split("\n")
    assert first_line == (
        "assertion failed: [image_bytes[0]:] [unsupported or undecodable image format (expected "
        "JPEG, PNG, GIF or BMP); first bytes:] [100 101 102...]"
    )
    assert ASSERT_NODE.fullmatch(node), node
