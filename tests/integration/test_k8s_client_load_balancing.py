"""Client-side load balancing, the way the client reaches TF Serving replicas behind the headless
Service: three local servers on loopback, one xception_client.Client with a multi-address target
(round_robin is its policy). Requests spread over every replica, and a replica killed mid-run costs
no request (UNAVAILABLE is retried on another replica)."""

from __future__ import annotations

import re
import signal
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from xception_client import Client
from xception_contract import DEFAULT_MODEL_NAME

from tests.fixtures.servers import ServerProcess, start_local_server

MONITORING_CONFIG = Path(__file__).resolve().parents[2] / "serving" / "monitoring.config"
REPLICAS = 3
REQUESTS = 300
KILL_AFTER = 100  # completed requests before one replica is killed
WORKERS = 4  # concurrent callers, so requests are in flight when the replica dies
_OK_COUNT = re.compile(r"^:tensorflow:serving:request_count\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")


@pytest.fixture(scope="module")
def replicas(small_xception_model: Any) -> Iterator[list[ServerProcess]]:
    contexts = [
        start_local_server(
            model_name=DEFAULT_MODEL_NAME,
            model_base_path=Path(small_xception_model.base_path),
            rest=True,  # only to read each replica's Prometheus request count
            extra_args=[f"--monitoring_config_file={MONITORING_CONFIG}"],
        )
        for _ in range(REPLICAS)
    ]
    with ExitStack() as stack, ThreadPoolExecutor(REPLICAS) as pool:
        # Start the replicas side by side (each waits for its own readiness); every one that
        # started is stopped at exit even if another failed to start.
        futures = [pool.submit(context.__enter__) for context in contexts]
        servers = []
        for context, future in zip(contexts, futures, strict=True):
            if future.exception() is None:
                stack.push(context.__exit__)
                servers.append(future.result())
        for future in futures:
            future.result()  # re-raise the first start-up failure, after registering cleanups
        yield servers


def _ok_predictions(server: ServerProcess) -> int:
    """`:tensorflow:serving:request_count{model_name="xception",status="OK"}` of one replica."""
    assert server.rest_url is not None
    url = f"{server.rest_url}/monitoring/prometheus/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    total = 0
    for line in text.splitlines():
        match = _OK_COUNT.match(line)
        labels = match["labels"] if match else ""
        if 'status="OK"' in labels and f'model_name="{DEFAULT_MODEL_NAME}"' in labels:
            total += int(float(match["value"])) if match else 0
    return total


def _predict_all(
    client: Client, image: bytes, *, kill: ServerProcess | None = None
) -> list[BaseException]:
    """Send REQUESTS predictions from WORKERS threads; kill `kill` after KILL_AFTER complete."""
    failures: list[BaseException] = []
    killed = threading.Event()
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(client.predict, image, top_k=1) for _ in range(REQUESTS)]
        for done, future in enumerate(as_completed(futures, timeout=600), start=1):
            error = future.exception()
            if error is not None:
                failures.append(error)
            if kill is not None and done == KILL_AFTER and not killed.is_set():
                kill.process.send_signal(signal.SIGKILL)  # a pod crash, not a graceful stop
                killed.set()
    if kill is not None:
        assert killed.is_set()
    return failures


def test_round_robin_client_sends_every_replica_at_least_a_fifth_of_the_requests(
    replicas: list[ServerProcess], sample_jpeg: bytes
) -> None:
    before = [_ok_predictions(server) for server in replicas]
    target = ",".join(server.grpc_target for server in replicas)
    with Client(target, timeout=60) as client:
        failures = _predict_all(client, sample_jpeg)
    assert failures == []
    served = [_ok_predictions(server) - b for server, b in zip(replicas, before, strict=True)]
    assert sum(served) == REQUESTS, served
    for count in served:
        assert count >= REQUESTS // 5, f"requests per replica: {served}"


def test_round_robin_client_loses_no_request_when_a_replica_is_killed_mid_run(
    replicas: list[ServerProcess], sample_jpeg: bytes
) -> None:
    victim, *survivors = replicas
    before = [_ok_predictions(server) for server in survivors]
    target = ",".join(server.grpc_target for server in replicas)
    with Client(target, timeout=60) as client:
        failures = _predict_all(client, sample_jpeg, kill=victim)
    assert failures == [], f"{len(failures)} failed, first: {failures[0]!r}"
    assert victim.process.wait(timeout=30) == -signal.SIGKILL
    # The survivors took over: everything after the kill went to them.
    served = [_ok_predictions(server) - b for server, b in zip(survivors, before, strict=True)]
    assert sum(served) >= REQUESTS - KILL_AFTER, served
