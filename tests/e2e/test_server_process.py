"""`xception-serve` as a process: startup failures as TF Serving words them, graceful SIGTERM."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from xception_serving.testing.process import BIND_FAILURE, free_port

from tests.fixtures.pki import make_pki
from tests.fixtures.rpc import assert_refused_in_the_tls_handshake
from tests.fixtures.servers import start_local_server, write_corrupt_version


def xception_serve() -> str:
    found = shutil.which("xception-serve", path=str(Path(sys.executable).parent))
    assert found, "the xception-serve console script is not installed"
    return found


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [xception_serve(), f"--port={free_port()}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_malformed_model_config_fails_startup_like_tf_serving(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'x' base_path: }")
    result = run_cli(f"--model_config_file={config}")
    assert result.returncode == 255
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in result.stderr
    assert "Failed to start server. Error: INVALID_ARGUMENT" in result.stderr


def test_model_whose_only_version_fails_to_load_fails_startup(tmp_path: Path) -> None:
    write_corrupt_version(tmp_path / "m", 1)
    result = run_cli(
        "--model_name=m", f"--model_base_path={tmp_path / 'm'}", "--max_num_load_retries=0"
    )
    assert result.returncode == 255
    assert (
        "Failed to start server. Error: UNKNOWN: 1 servable(s) did not become available: "
        "{{{name: m version: 1} due to error: " in result.stderr
    )


def test_sigterm_finishes_in_flight_requests_and_exits_zero(
    tmp_path: Path, half_plus_two_base: Path
) -> None:
    batching = tmp_path / "batching.config"
    # A request waits ~2 s for its batch to fill: SIGTERM arrives while it is in flight.
    batching.write_text(
        "max_batch_size { value: 64 } batch_timeout_micros { value: 2000000 } "
        "num_batch_threads { value: 1 }"
    )
    args = ["--enable_batching", f"--batching_parameters_file={batching}"]
    with start_local_server(
        model_name="default", model_base_path=half_plus_two_base, extra_args=args
    ) as server:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "default"
        x = request.inputs["x"]
        x.dtype = types_pb2.DT_FLOAT
        x.tensor_shape.dim.add().size = 1
        x.float_val.append(2.0)
        outcome: list[object] = []
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

            def call() -> None:
                try:
                    outcome.append(stub.Predict(request, timeout=30))
                except grpc.RpcError as err:
                    outcome.append(err)

            thread = threading.Thread(target=call)
            started = time.monotonic()
            thread.start()
            time.sleep(0.7)
            code = server.stop(signal.SIGTERM, timeout=30)
            thread.join(30)
        log = server.log_text()
    assert code == 0, log
    assert time.monotonic() - started >= 1.5  # the request really was waiting in its batch
    response = outcome[0]
    assert isinstance(response, predict_pb2.PredictResponse), response
    assert response.outputs["y"].float_val[0] == 3.0
    assert "Received SIGTERM, shutting down" in log
    assert "Predict" not in log  # no per-request logging by default


def _text_proto_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def test_ssl_config_file_enables_mutual_tls_on_grpc(
    tmp_path: Path, half_plus_two_base: Path
) -> None:
    pki = make_pki()
    ssl_config = tmp_path / "ssl.config"
    ssl_config.write_text(
        f"server_key: {_text_proto_string(pki.server_key.decode())}\n"
        f"server_cert: {_text_proto_string(pki.server_cert.decode())}\n"
        f"custom_ca: {_text_proto_string(pki.ca.decode())}\n"
        "client_verify: true\n"
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    x = request.inputs["x"]
    x.dtype = types_pb2.DT_FLOAT
    x.float_val.append(2.0)
    with start_local_server(
        model_name="default",
        model_base_path=half_plus_two_base,
        extra_args=[f"--ssl_config_file={ssl_config}"],
    ) as server:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca,
            private_key=pki.client_key,
            certificate_chain=pki.client_cert,
        )
        with grpc.secure_channel(server.grpc_target, credentials) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            assert stub.Predict(request, timeout=30).outputs["y"].float_val == [3.0]
        anonymous = grpc.ssl_channel_credentials(root_certificates=pki.ca)
        with grpc.secure_channel(server.grpc_target, anonymous) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=30)
        assert_refused_in_the_tls_handshake(info.value, server.grpc_target)


# Measured 0.1-0.2 s on the 2-core machine (flags and the probe, no TensorFlow); loading this
# model first, the start took 8.1 s before failing on the port (Xception: 9 s more).
PORT_CHECK_WITHIN_S = 3.0


@pytest.mark.parametrize("taken", ["--port", "--rest_api_port"])
def test_a_port_another_process_holds_fails_the_start_at_once_naming_it(
    half_plus_two_base: Path, taken: str
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        ports = {"--port": free_port(), "--rest_api_port": free_port(), taken: busy}
        started = time.monotonic()
        result = subprocess.run(
            [
                xception_serve(),
                *(f"{flag}={port}" for flag, port in ports.items()),
                "--model_name=m",
                f"--model_base_path={half_plus_two_base}",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        elapsed = time.monotonic() - started
    what = "gRPC" if taken == "--port" else "REST"
    assert result.returncode == 255
    assert result.stderr.strip().splitlines()[-1] == (
        f"Failed to start server. Error: UNAVAILABLE: could not bind {what} port "
        f"127.0.0.1:{busy} ({taken}): Address already in use"
    )
    assert BIND_FAILURE in result.stderr  # what the process helper looks for
    assert elapsed < PORT_CHECK_WITHIN_S, f"took {elapsed:.1f} s: the model was loaded first?"
    assert "servable" not in result.stderr.lower()  # no model load began
