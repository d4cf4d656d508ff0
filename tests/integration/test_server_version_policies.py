"""Version policies, version labels and config reload as TF Serving applies them, on one server
serving versions 1-3 of half_plus_two (y = 0.5 x + version) from a models.config file.

The server runs a scenario in steps, each a module-scoped fixture that depends on the previous one,
acts, waits for the server to apply it, and records what the server answered then: started under
latest(2) -> config file rewritten and polled -> ReloadConfig RPC -> a version directory deleted.
The tests assert on those records, so each reads one behaviour, and neither their order nor a
selection of them changes what they see.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.fixtures.half_plus_two import FAST_POLL, predict_request
from tests.fixtures.rpc import model_statuses, rpc_error, wait_for
from tests.fixtures.servers import start_local_server, write_half_plus_two

State = get_model_status_pb2.ModelVersionStatus.State


def config_text(models: list[tuple[str, Path, str]]) -> str:
    parts = [
        f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" {extra} }}'
        for name, base, extra in models
    ]
    return "model_config_list {\n" + "\n".join(parts) + "\n}\n"


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
