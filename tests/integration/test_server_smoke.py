"""The local server starts on the half_plus_two fixture and answers Predict as TF Serving does."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.fixtures.servers import start_local_server


def test_local_server_predict_answers_half_plus_two(half_plus_two_base: Path) -> None:
    with start_local_server(model_name="default", model_base_path=half_plus_two_base) as server:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "default"
            x = request.inputs["x"]
            x.dtype = 1  # DT_FLOAT
            x.tensor_shape.dim.add().size = 1
            x.float_val.append(2.0)
            response = stub.Predict(request, timeout=30)
        assert list(response.outputs["y"].float_val) == [3.0]
        assert response.model_spec.version.value == 123
        assert np.isclose(response.outputs["y"].float_val[0], 3.0)
        assert server.stop() == 0
