"""Client-only cost: our client and the usual way streamed against a stub server that answers at
once (stub_server.py), so the client CPU per image has no model time in it.

Importing this module loads TensorFlow (usual_way.py: TF Serving's own Python API).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tensorflow_serving.apis import prediction_service_pb2_grpc

from benchmarks import SOURCE_ROOT, load, stats, usual_way
from benchmarks.measure import STREAM_IMAGES, Row, measure_stream

STUB_MODULE = "benchmarks.stub_server"
# What packing buys (Client.predict_many's images_per_request; its default was chosen from this).
IMAGES_PER_REQUEST_SWEEP = (1, 2, 4, 8)


def capture_response(target: str, model_name: str, image: bytes) -> bytes:
    """One real serialized PredictResponse of the bytes signature, for the stub server to give."""
    with usual_way.channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(usual_way.bytes_request(model_name, [image]), timeout=120)
        return bytes(response.SerializeToString())


def measure_against_stub(
    response: bytes,
    data: Sequence[bytes],
    size: int,
    model_name: str,
    concurrency: int,
    build_dir: Path,
) -> Row:
    """Both paths' streams against the stub answering ``response``; the results'
    ``client_side.against_stub`` object."""
    canned = build_dir / "canned-response.pb"
    canned.write_bytes(response)
    stub = subprocess.Popen(
        [sys.executable, "-m", STUB_MODULE, str(canned)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=SOURCE_ROOT,
    )
    try:
        assert stub.stdout is not None
        port = int(stub.stdout.readline())
        target = f"127.0.0.1:{port}"
        repeated = (list(data) * 3)[: STREAM_IMAGES * 3]  # more images: each costs little
        out: Row = {}
        ours = load.OursGrpc(target, model_name, repeated, 30.0)
        usual = usual_way.UsualGrpc(target, model_name, repeated, size, 30.0)
        try:
            drivers: tuple[tuple[str, load.StreamDriver], ...] = (("ours", ours), ("usual", usual))
            for key, driver in drivers:
                driver.stream(concurrency, concurrency)  # connect and warm up
                out[key] = measure_stream(driver, repeated, concurrency, count=len(repeated))
            out["ours_by_images_per_request"] = {
                str(n): measure_stream(
                    ours, repeated, concurrency, count=len(repeated), images_per_request=n
                )
                for n in IMAGES_PER_REQUEST_SWEEP
            }
        finally:
            ours.close()
            usual.close()
        out["client_cpu_usual_over_ours"] = stats.ratio(
            out["usual"]["client_cpu_ms_per_image"], out["ours"]["client_cpu_ms_per_image"]
        )
        return out
    finally:
        stub.kill()
        stub.wait(10)
