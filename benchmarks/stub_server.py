"""A gRPC PredictionService/Predict that answers at once with a canned response (a child process).

Client CPU measured against the real server includes what grpcio spends while a call waits
(timers and wake-ups, about 1-2 ms per second of waiting on this machine), so on a slow CPU server
it grows with latency. Against this stub, which answers every Predict with a response the real
server gave, the same client code shows its own cost per image: building, sending, receiving and
parsing, with no model time in between. A request of N images gets the canned (one-image)
answer's rows repeated N times, so packed requests (`images_per_request`) parse as they would.

    python -m benchmarks.stub_server RESPONSE_FILE   # prints the port, serves until killed

Its messages are TF Serving's own (tensorflow_serving.apis), so it imports TensorFlow: that costs
this process a few seconds at start, and the benchmark process nothing.
"""

from __future__ import annotations

import sys
from concurrent import futures
from pathlib import Path

import grpc

SERVICE = "tensorflow.serving.PredictionService"


def main() -> int:
    import xception_contract as contract
    from xception_contract import tf_startup

    tf_startup.install()  # TensorFlow (under the messages) without its C++ start-up lines
    from tensorflow_serving.apis import predict_pb2

    canned = predict_pb2.PredictResponse.FromString(Path(sys.argv[1]).read_bytes())
    by_count: dict[int, bytes] = {}

    def answer(count: int) -> bytes:
        """The canned response with every output's single row repeated ``count`` times."""
        if count not in by_count:
            response = predict_pb2.PredictResponse()
            response.CopyFrom(canned)
            for tensor in response.outputs.values():
                tensor.tensor_shape.dim[0].size = count
                for field in ("float_val", "int_val", "string_val"):
                    values = list(getattr(tensor, field))
                    if values:
                        getattr(tensor, field).extend(values * (count - 1))
            by_count[count] = response.SerializeToString()
        return by_count[count]

    def predict(request: bytes, _context: grpc.ServicerContext) -> bytes:
        parsed = predict_pb2.PredictRequest.FromString(request)
        tensor = parsed.inputs.get(contract.IMAGE_BYTES_INPUT)
        return answer(len(tensor.string_val) if tensor is not None else 1)

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Predict": grpc.unary_unary_rpc_method_handler(
                predict, request_deserializer=lambda b: b, response_serializer=lambda b: b
            )
        },
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32),
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
