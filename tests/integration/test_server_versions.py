"""Versions and config as TF Serving manages them: hot swap without failed requests, failed loads
that never take traffic, warmup, version policies, labels, config reload by polling and by RPC."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.fixtures.rpc import model_statuses, rpc_error, wait_for
from tests.fixtures.servers import (
    start_local_server,
    write_corrupt_version,
    write_half_plus_two,
)

State = get_model_status_pb2.ModelVersionStatus.State
FAST_POLL = ["--file_system_poll_wait_seconds=1", "--max_num_load_retries=0"]


def predict_request(name: str = "default", x: float = 2.0) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    tensor = request.inputs["x"]
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add().size = 1
    tensor.float_val.append(x)
    return request


class Callers:
    """Concurrent Predict loops recording every failure and every (version, y) answer."""

    def __init__(self, target: str, threads: int = 4) -> None:
        self.failures: list[str] = []
        self.answers: set[tuple[int, float]] = set()
        self.count = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._threads = [threading.Thread(target=self._loop) for _ in range(threads)]

    def _loop(self) -> None:
        deadline = time.monotonic() + 120  # bounded even if the test forgets to stop us
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                response = self._stub.Predict(predict_request(), timeout=30)
            except grpc.RpcError as err:
                with self._lock:
                    self.failures.append(f"{err.code()}: {err.details()}")
                continue
            with self._lock:
                self.count += 1
                self.answers.add(
                    (response.model_spec.version.value, response.outputs["y"].float_val[0])
                )

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)
        self._channel.close()


def warmup_record(signature: str = "serving_default") -> bytes:
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.CopyFrom(predict_request())
    request.model_spec.signature_name = signature
    record: bytes = log.SerializeToString()
    return record


def test_new_version_takes_traffic_without_failures_and_bad_versions_never_do(
    tmp_path: Path,
) -> None:
    base = tmp_path / "default"
    write_half_plus_two(base, 1, offset=1.0, warmup_records=[warmup_record()])
    (base / "not-a-version").mkdir()  # non-numeric directories are ignored
    with start_local_server(model_name="default", model_base_path=base, extra_args=FAST_POLL) as s:
        with grpc.insecure_channel(s.grpc_target) as channel:
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            with Callers(s.grpc_target) as callers:
                wait_for(lambda: callers.count > 5, what="first answers")
                write_half_plus_two(base, 2, offset=2.0)  # atomically renamed into place
                wait_for(
                    lambda: (
                        model_statuses(models).get(1, None) is not None
                        and model_statuses(models)[1].state == State.END
                        and model_statuses(models)[2].state == State.AVAILABLE
                    ),
                    what="version 2 available and version 1 unloaded",
                )
                served_before = callers.count
                wait_for(lambda: callers.count > served_before + 5, what="answers from v2")

                write_corrupt_version(base, 3)
                wait_for(
                    lambda: 3 in (s := model_statuses(models)) and s[3].state == State.END,
                    what="version 3 failing",
                )
                # A version whose warmup fails never takes traffic either.
                write_half_plus_two(base, 4, offset=4.0, warmup_records=[warmup_record("nope")])
                wait_for(
                    lambda: 4 in (s := model_statuses(models)) and s[4].state == State.END,
                    what="version 4 failing warmup",
                )
                served_before = callers.count
                wait_for(lambda: callers.count > served_before + 5, what="answers after v4")
            final = model_statuses(models)
        log = s.log_text()
    assert callers.failures == []
    # y = 0.5 * 2 + offset; offset == version for the good versions.
    assert callers.answers == {(1, 2.0), (2, 3.0)}
    assert [final[v].state for v in (4, 3, 2, 1)] == [
        State.END,
        State.END,
        State.AVAILABLE,
        State.END,
    ]
    assert list(final) == [4, 3, 2, 1]  # descending, as TF Serving's state map
    # The garbage saved_model.pb fails as TensorFlow's ReadBinaryProto fails it (env.cc).
    assert (final[3].status.error_code, final[3].status.error_message) == (
        grpc.StatusCode.DATA_LOSS.value[0],
        f"Can't parse {base / '3' / 'saved_model.pb'} as binary proto",
    )
    assert final[4].status.error_code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert 'Serving signature key "nope" not found.' in final[4].status.error_message
    assert final[2].status.error_code == 0 and final[1].status.error_code == 0
    assert "Successfully loaded servable version {name: default version: 2}" in log
    assert "Successfully unloaded servable version {name: default version: 1}" in log


def config_text(models: list[tuple[str, Path, str]]) -> str:
    parts = [
        f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'
        for name, base, extra in models
    ]
    return "model_config_list {\n" + "\n".join(parts) + "\n}\n"


# -- version policies, labels and config reload ------------------------------------------------
#
# One server runs a scenario in steps, each a module-scoped fixture that depends on the previous
# one, acts, waits for the server to apply it, and records what the server answered then: started
# under latest(2) -> config file rewritten and polled -> ReloadConfig RPC -> a version directory
# deleted. The tests assert on those records, so each reads one behaviour, and neither their order
# nor a selection of them changes what they see.


@dataclass
class PolicyServer:
    """The scenario's server: versions 1-3 of "default" under `base`, models from `config`."""

    base: Path
    config: Path
    half_plus_three_base: Path
    models: model_service_pb2_grpc.ModelServiceStub
    predict: prediction_service_pb2_grpc.PredictionServiceStub

    def states(self, name: str = "default") -> dict[int, int]:
        return {v: st.state for v, st in model_statuses(self.models, name).items()}

    def available(self, name: str = "default") -> set[int]:
        return {v for v, state in self.states(name).items() if state == State.AVAILABLE}

    def answer(self, request: predict_pb2.PredictRequest) -> tuple[int, float]:
        """(version, y) of a Predict the server must answer."""
        response = self.predict.Predict(request, timeout=10)
        return response.model_spec.version.value, response.outputs["y"].float_val[0]

    def refusal(self, call: Any, request: Any, timeout: float = 10) -> tuple[grpc.StatusCode, str]:
        error = rpc_error(call, request, timeout=timeout)
        return error.code(), error.details()


@pytest.fixture(scope="module")
def policy_server(
    tmp_path_factory: pytest.TempPathFactory, half_plus_three_base: Path
) -> Iterator[PolicyServer]:
    tmp_path = tmp_path_factory.mktemp("policies")
    base = tmp_path / "multi"
    for version in (1, 2, 3):
        write_half_plus_two(base, version, offset=float(version))
    config = tmp_path / "models.config"
    config.write_text(
        config_text([("default", base, "model_version_policy { latest { num_versions: 2 } }")])
    )
    args = [*FAST_POLL, "--model_config_file_poll_wait_seconds=1"]
    with (
        start_local_server(model_config_file=config, extra_args=args) as s,
        grpc.insecure_channel(s.grpc_target) as channel,
    ):
        yield PolicyServer(
            base,
            config,
            half_plus_three_base,
            model_service_pb2_grpc.ModelServiceStub(channel),
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
        )


@dataclass(frozen=True)
class AtStart:
    states: dict[int, int]
    answer: tuple[int, float]


@pytest.fixture(scope="module")
def at_start(policy_server: PolicyServer) -> AtStart:
    """Right after start, under the config file's latest(2)."""
    return AtStart(policy_server.states(), policy_server.answer(predict_request()))


@dataclass(frozen=True)
class AfterPoll:
    states: dict[int, int]
    half_plus_three_available: set[int]
    half_plus_three_answer: tuple[int, float]


@pytest.fixture(scope="module")
def after_poll(policy_server: PolicyServer, at_start: AtStart) -> AfterPoll:
    """The config file rewritten: specific version 1 of "default", plus a second model."""
    server = policy_server
    server.config.write_text(
        config_text(
            [
                ("default", server.base, "model_version_policy { specific { versions: 1 } }"),
                ("half_plus_three", server.half_plus_three_base, ""),
            ]
        )
    )
    wait_for(
        lambda: (
            server.states().get(1) == State.AVAILABLE
            and server.states().get(3) == State.END
            and bool(server.available("half_plus_three"))
        ),
        what="config poll applying the new config",
    )
    return AfterPoll(
        server.states(),
        server.available("half_plus_three"),
        server.answer(predict_request("half_plus_three")),
    )


@dataclass(frozen=True)
class AfterReloadRpc:
    bad_label_refusal: tuple[grpc.StatusCode, str]
    reply_error_code: int
    available: set[int]
    canary_answer: tuple[int, float]
    removed_model_refusal: tuple[grpc.StatusCode, str]


def all_versions_config(base: Path, **labels: int) -> model_server_config_pb2.ModelServerConfig:
    """ "default" under `base`, every version, with the given version labels."""
    config = model_server_config_pb2.ModelServerConfig()
    entry = config.model_config_list.config.add(
        name="default", base_path=str(base), model_platform="tensorflow"
    )
    entry.model_version_policy.all.SetInParent()
    for label, version in labels.items():
        entry.version_labels[label] = version
    return config


@pytest.fixture(scope="module")
def after_reload_rpc(policy_server: PolicyServer, after_poll: AfterPoll) -> AfterReloadRpc:
    """ReloadConfig by RPC: first with a label on a version that does not exist (refused), then
    all versions with "canary" on version 2, and half_plus_three left out."""
    server = policy_server
    reload = server.models.HandleReloadConfigRequest
    bad = all_versions_config(server.base, canary=2, broken=9)
    bad_label_refusal = server.refusal(
        reload, model_management_pb2.ReloadConfigRequest(config=bad), timeout=60
    )
    good = all_versions_config(server.base, canary=2)
    reply = reload(model_management_pb2.ReloadConfigRequest(config=good), timeout=60)
    available = server.available()
    labelled = predict_request()
    labelled.model_spec.version_label = "canary"
    canary_answer = server.answer(labelled)
    wait_for(
        lambda: all(state == State.END for state in server.states("half_plus_three").values()),
        what="half_plus_three unloaded",
    )
    removed = server.refusal(server.predict.Predict, predict_request("half_plus_three"))
    return AfterReloadRpc(
        bad_label_refusal, reply.status.error_code, available, canary_answer, removed
    )


@dataclass(frozen=True)
class AfterDeletion:
    states: dict[int, int]
    answer: tuple[int, float]


@pytest.fixture(scope="module")
def after_deletion(policy_server: PolicyServer, after_reload_rpc: AfterReloadRpc) -> AfterDeletion:
    """Version 3's directory deleted under the all-versions policy."""
    server = policy_server
    shutil.rmtree(server.base / "3")
    wait_for(lambda: server.states().get(3) == State.END, what="deleted v3 unloading")
    return AfterDeletion(server.states(), server.answer(predict_request()))


def test_latest_policy_loads_only_the_newest_versions_from_the_config_file_at_start(
    at_start: AtStart,
) -> None:
    # latest(2): versions 3 and 2 load, 1 never does.
    assert at_start.states == {3: State.AVAILABLE, 2: State.AVAILABLE}


def test_predict_without_a_version_is_answered_by_the_newest_available_version(
    at_start: AtStart,
) -> None:
    assert at_start.answer[0] == 3


def test_config_file_poll_loads_the_specific_version_and_unloads_the_rest(
    after_poll: AfterPoll,
) -> None:
    assert after_poll.states[1] == State.AVAILABLE
    assert after_poll.states[3] == State.END


def test_config_file_poll_loads_a_model_added_to_the_file(after_poll: AfterPoll) -> None:
    assert after_poll.half_plus_three_available
    assert after_poll.half_plus_three_answer[1] == 4.0  # y = 0.5 * 2 + 3


def test_reload_rpc_refuses_a_label_on_a_version_that_is_not_available(
    after_reload_rpc: AfterReloadRpc,
) -> None:
    # A label on a version that is not available is rejected, as TF Serving does.
    assert after_reload_rpc.bad_label_refusal == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "Request to assign label to version 9 of model default, which is not currently "
        "available for inference",
    )


def test_reload_rpc_with_the_all_policy_loads_every_version(
    after_reload_rpc: AfterReloadRpc,
) -> None:
    assert after_reload_rpc.reply_error_code == 0
    assert after_reload_rpc.available == {1, 2, 3}


def test_version_label_from_reload_rpc_routes_predict_to_its_version(
    after_reload_rpc: AfterReloadRpc,
) -> None:
    assert after_reload_rpc.canary_answer == (2, 3.0)


def test_model_left_out_of_a_reloaded_config_unloads_and_is_not_found(
    after_reload_rpc: AfterReloadRpc,
) -> None:
    assert after_reload_rpc.removed_model_refusal == (
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(half_plus_three)",
    )


def test_deleted_version_directory_unloads_and_predict_moves_to_the_next_newest(
    after_deletion: AfterDeletion,
) -> None:
    assert after_deletion.states[3] == State.END
    assert after_deletion.answer[0] == 2


@pytest.mark.parametrize(
    ("mutate", "code", "message"),
    [
        (
            lambda c: c.model_config_list.config.add(name="default", base_path="/x"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Illegal to list model default multiple times in config list",
        ),
        (
            lambda c: setattr(c.model_config_list.config[0], "base_path", "relative/path"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "Expected model default to have an absolute path or URI; got base_path()=relative/path",
        ),
        (
            lambda c: c.ClearField("model_config_list"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
            "ModelConfigList is currently supported",
        ),
    ],
)
def test_reload_config_rpc_rejects_invalid_configs(
    mutate: Callable[[model_server_config_pb2.ModelServerConfig], object],
    code: grpc.StatusCode,
    message: str,
    half_plus_two_server_target: str,
    half_plus_two_base: Path,
) -> None:
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(
        name="default", base_path=str(half_plus_two_base), model_platform="tensorflow"
    )
    mutate(config)
    with grpc.insecure_channel(half_plus_two_server_target) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            models.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(config=config), timeout=30
            )
        assert (info.value.code(), info.value.details()) == (code, message)
        # The server keeps serving the previous config.
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        assert predict.Predict(predict_request(), timeout=10).outputs["y"].float_val[0] == 3.0


def test_reload_config_rpc_reports_a_model_that_fails_to_load(
    tmp_path: Path, half_plus_two_server_target: str, half_plus_two_base: Path
) -> None:
    broken = tmp_path / "broken"
    write_corrupt_version(broken, 5)
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(
        name="default", base_path=str(half_plus_two_base), model_platform="tensorflow"
    )
    config.model_config_list.config.add(
        name="broken", base_path=str(broken), model_platform="tensorflow"
    )
    with grpc.insecure_channel(half_plus_two_server_target) as channel:
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            models.HandleReloadConfigRequest(
                model_management_pb2.ReloadConfigRequest(config=config), timeout=60
            )
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        status = model_statuses(models, "broken")[5]
        # server_core.cc's summary quotes each version's load status (absl's ToString).
        assert info.value.details() == (
            "1 model(s) did not become available: {{{name: broken version: 5} due to error: "
            f"{status_text(status.status)}}}, }}"
        )
        assert status.state == State.END
        assert status.status.error_message == (
            f"Can't parse {broken / '5' / 'saved_model.pb'} as binary proto"
        ), status.status.error_message


def status_text(status: Any) -> str:
    """A StatusProto as absl::Status::ToString() prints it: "<CODE>: <message>"."""
    code = next(c for c in grpc.StatusCode if c.value[0] == status.error_code)
    return f"{code.name}: {status.error_message}"


def test_a_garbage_saved_model_pb_fails_its_load_with_tensorflow_s_data_loss(
    tmp_path: Path,
) -> None:
    from xception_serving.runtime.core import ServingCore

    write_corrupt_version(tmp_path / "broken", 5)
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(
        name="broken", base_path=str(tmp_path / "broken"), model_platform="tensorflow"
    )
    core = ServingCore(file_system_poll_wait_seconds=0, max_num_load_retries=0)
    try:
        with pytest.raises(Exception, match="did not become available"):
            core.load(config)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "broken"
        (status,) = core.get_model_status(request).model_version_status
    finally:
        core.stop(5)
    assert (status.status.error_code, status.status.error_message) == (
        grpc.StatusCode.DATA_LOSS.value[0],
        f"Can't parse {tmp_path / 'broken' / '5' / 'saved_model.pb'} as binary proto",
    )


@pytest.fixture(scope="module")
def half_plus_two_server_target(half_plus_two_base: Path) -> Iterator[str]:
    with start_local_server(
        model_name="default",
        model_base_path=half_plus_two_base,
        # TF Serving's testGoodGrpcChannelArgs arguments are accepted.
        extra_args=[
            *FAST_POLL,
            "--grpc_channel_arguments=grpc.max_connection_age_ms=2000,grpc.lb_policy_name=grpclb",
        ],
    ) as server:
        yield server.grpc_target
