"""Versions and config as TF Serving manages them: hot swap without failed requests, failed loads
(a garbage saved_model.pb, a failing warmup) that never take traffic, and the ReloadConfig RPC's
refusals. Version policies, labels and config reload by polling and by RPC, step by step:
test_server_version_policies.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.fixtures.half_plus_two import FAST_POLL, predict_request
from tests.fixtures.rpc import model_statuses, wait_for
from tests.fixtures.servers import (
    start_local_server,
    write_corrupt_version,
    write_half_plus_two,
)
from tests.fixtures.traffic import PredictLoops

State = get_model_status_pb2.ModelVersionStatus.State


def callers(target: str) -> PredictLoops[tuple[int, float]]:
    """Four concurrent Predict loops recording every failure and every (version, y) answer."""
    return PredictLoops(
        target,
        lambda _call: predict_request(),
        lambda response, _call: (
            response.model_spec.version.value,
            response.outputs["y"].float_val[0],
        ),
        threads=4,
        call_timeout=30,
        for_seconds=120,
    )


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
            with callers(s.grpc_target) as traffic:
                wait_for(lambda: traffic.answered() > 5, what="first answers")
                write_half_plus_two(base, 2, offset=2.0)  # atomically renamed into place
                wait_for(
                    lambda: (
                        model_statuses(models).get(1, None) is not None
                        and model_statuses(models)[1].state == State.END
                        and model_statuses(models)[2].state == State.AVAILABLE
                    ),
                    what="version 2 available and version 1 unloaded",
                )
                served_before = traffic.answered()
                wait_for(lambda: traffic.answered() > served_before + 5, what="answers from v2")

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
                served_before = traffic.answered()
                wait_for(lambda: traffic.answered() > served_before + 5, what="answers after v4")
            final = model_statuses(models)
        log = s.log_text()
    assert traffic.failures == []
    # y = 0.5 * 2 + offset; offset == version for the good versions.
    assert set(traffic.answers) == {(1, 2.0), (2, 3.0)}
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
