"""A gRPC PredictionService/Predict that answers at once with a canned response (a child process).

Client CPU measured against the real server includes what grpcio spends while a call waits
(timers and wake-ups, about 1-2 ms per second of waiting on this machine), so on a slow CPU server
it grows with latency. Against this stub, which answers every Predict with a response the real
server gave, the same client code shows its own cost per image: building, sending, receiving and
parsing, with no model time in between.

    python benchmarks/stub_server.py RESPONSE_FILE   # prints the port, serves until killed
"""

from __future__ import annotations

import sys
from concurrent import futures
from pathlib import Path

import grpc

SERVICE = "tensorflow.serving.PredictionService"


def main() -> int:
    canned = Path(sys.argv[1]).read_bytes()

    def predict(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        return canned

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {"Predict": grpc.unary_unary_rpc_method_handler(
            predict, request_deserializer=lambda b: b, response_serializer=lambda b: b)},
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
