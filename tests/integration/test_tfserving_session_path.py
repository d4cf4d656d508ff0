"""The artifact and the local server against TF Serving's runtime path: a TF1 Session.

TF Serving imports the `serve` MetaGraphDef into a Session, restores variables through the saver
and runs Session::Run on the SignatureDef's tensor names. These tests hold the export and the
local server to that path, and pin the bug class that once shipped: a SavedModel that reloads
under TF2's `tf.saved_model.load` but fails in a Session.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tests.fixtures.models import SMALL_IMAGE_SIZE, ExportedModel
from tests.fixtures.session_models import (
    INPUT_ALIAS,
    OUTPUT_ALIAS,
    WARMUP_INPUT,
    write_keras_module_version,
)

MISSING_VARIABLE = "Could not find variable"


def _tf2_outputs(version_dir: Path) -> list[dict[str, np.ndarray]]:
    """Every warmup record run through TF2's object-graph loader (the path tests used before)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    loaded = tf.saved_model.load(str(version_dir))
    results = []
    path = version_dir / "assets.extra" / "tf_serving_warmup_requests"
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        entry = prediction_log_pb2.PredictionLog.FromString(raw)
        if entry.WhichOneof("log_type") == "predict_log":
            request = entry.predict_log.request
            function = loaded.signatures[request.model_spec.signature_name]
            feeds = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        else:
            request = entry.classify_log.request
            function = loaded.signatures[request.model_spec.signature_name]
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            feeds = {"inputs": tf.constant(examples)}
        results.append({k: v.numpy() for k, v in function(**feeds).items()})
    return results


def test_every_warmup_record_of_an_export_answers_in_a_session_as_under_tf2(
    small_xception_model: ExportedModel,
) -> None:
    from xception_export.preflight import check_version

    report = check_version(small_xception_model.version_dir)
    assert report.ok, report.signature_status()
    assert set(report.signature_status().values()) == {"OK"}
    assert sorted(report.signatures) == [
        "classify",
        "serving_default",
        "serving_pixels",
        "serving_preprocessed",
    ]
    reference = _tf2_outputs(small_xception_model.version_dir)
    assert len(report.records) == len(reference) >= 5
    worst = 0.0
    for record, expected in zip(report.records, reference, strict=True):
        assert sorted(record.outputs) == sorted(expected)
        for alias, want in expected.items():
            got = record.outputs[alias]
            assert got["shape"] == list(want.shape), (record.index, alias)
            if want.dtype.kind == "f":
                diff = float(np.max(np.abs(np.asarray(got["values"], np.float32) - want.ravel())))
                worst = max(worst, diff)
            else:
                as_text = [v.decode() if isinstance(v, bytes) else int(v) for v in want.ravel()]
                assert got["values"] == as_text, (record.index, alias)
    print(f"\nSession path vs TF2 loader, {len(reference)} warmup records: max |d| = {worst:.3g}")
    assert worst <= 1e-7


def test_an_export_stores_each_network_weight_exactly_once(
    small_xception_model: ExportedModel,
) -> None:
    import keras
    import tensorflow as tf

    network = keras.applications.Xception(
        weights=None, input_shape=(SMALL_IMAGE_SIZE, SMALL_IMAGE_SIZE, 3), classes=1000
    )
    network_values = sum(int(np.prod(v.shape)) for v in network.variables)
    prefix = str(small_xception_model.version_dir / "variables" / "variables")
    stored = {
        name: int(np.prod(shape))
        for name, shape in tf.train.list_variables(prefix)
        if name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }
    # The network's variables plus the one scalar divisor (kept a variable against folding).
    assert sum(stored.values()) == network_values + 1
    assert not [name for name in stored if name.startswith("model/")]


def test_a_keras_attached_savedmodel_runs_under_tf2_but_fails_the_preflight(
    tmp_path: Path,
) -> None:
    import tensorflow as tf
    from xception_export.preflight import check_version

    version_dir = write_keras_module_version(tmp_path, 1, attach_keras_object=True)
    tf2 = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    assert tf2(**{INPUT_ALIAS: tf.constant(WARMUP_INPUT)})[OUTPUT_ALIAS].shape == (1, 3)

    report = check_version(version_dir)
    assert not report.ok
    assert report.load_error is None  # the load itself succeeds, as in TF Serving
    status = report.signature_status()["serving_default"]
    assert status.startswith("FAILED_PRECONDITION: ") and MISSING_VARIABLE in status


def test_the_same_model_with_its_variables_tracked_passes_the_preflight(tmp_path: Path) -> None:
    from xception_export.preflight import check_version

    report = check_version(write_keras_module_version(tmp_path, 1, attach_keras_object=False))
    assert report.ok, report.signature_status()
    assert report.records[0].outputs[OUTPUT_ALIAS]["shape"] == [1, 3]


def _status(core: Any, name: str) -> dict[int, tuple[int, int, str]]:
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    response = core.get_model_status(request)
    return {
        s.version: (s.state, int(s.status.error_code), s.status.error_message)
        for s in response.model_version_status
    }


def _core(base: Path, *, warmup: bool, poll_seconds: float = 0) -> Any:
    from tensorflow_serving.config import model_server_config_pb2
    from xception_serving.runtime.core import ServingCore

    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="m", base_path=str(base), model_platform="tensorflow")
    core = ServingCore(
        file_system_poll_wait_seconds=poll_seconds,
        max_num_load_retries=0,
        enable_model_warmup=warmup,
    )
    core.load(config)
    return core


def _predict(core: Any) -> Any:
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs[INPUT_ALIAS].CopyFrom(tf.make_tensor_proto(WARMUP_INPUT))
    return core.predict(request)


def test_the_local_server_refuses_a_keras_attached_version_and_keeps_serving_the_previous(
    tmp_path: Path,
) -> None:
    from tensorflow_serving.apis import get_model_status_pb2

    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    end = get_model_status_pb2.ModelVersionStatus.END
    write_keras_module_version(tmp_path, 1, attach_keras_object=False)
    core = _core(tmp_path, warmup=True, poll_seconds=0.2)
    try:
        assert _status(core, "m")[1][0] == available
        write_keras_module_version(tmp_path, 2, attach_keras_object=True)
        deadline = time.monotonic() + 60
        while 2 not in _status(core, "m") or _status(core, "m")[2][0] != end:
            assert time.monotonic() < deadline, _status(core, "m")
            time.sleep(0.1)
        _state, code, message = _status(core, "m")[2]
        assert code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert MISSING_VARIABLE in message
        assert _status(core, "m")[1][0] == available
        assert _predict(core).model_spec.version.value == 1
    finally:
        core.stop(5)


def test_with_warmup_off_every_request_to_a_keras_attached_version_fails_as_in_tf_serving(
    tmp_path: Path,
) -> None:
    from xception_serving.runtime.errors import ServingError

    write_keras_module_version(tmp_path, 1, attach_keras_object=True)
    core = _core(tmp_path, warmup=False)
    try:
        with pytest.raises(ServingError) as info:
            _predict(core)
        assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert info.value.message.startswith(MISSING_VARIABLE)
    finally:
        core.stop(5)


def _write_jit_compiled_version(base: Path) -> Path:
    import tensorflow as tf

    module = tf.Module()
    module.scale = tf.Variable(2.0)

    @tf.function(
        input_signature=[tf.TensorSpec([None, 4], tf.float32, name=INPUT_ALIAS)],
        jit_compile=True,
    )
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_ALIAS: x * module.scale}

    module.serve = serve
    version_dir = base / "1"
    tf.saved_model.save(
        module, str(version_dir), signatures={"serving_default": serve.get_concrete_function()}
    )
    return version_dir


def test_a_jit_compiled_model_fails_when_xla_compilation_is_off_as_by_default(
    tmp_path: Path,
) -> None:
    from xception_serving.runtime.errors import ServingError

    _write_jit_compiled_version(tmp_path)
    core = _core(tmp_path, warmup=False)  # the server's default: both XLA flags off
    try:
        with pytest.raises(ServingError) as info:
            _predict(core)
        assert info.value.code == grpc.StatusCode.INTERNAL
        assert info.value.message == "XLA compilation disabled"
    finally:
        core.stop(5)


def test_a_jit_compiled_model_runs_when_an_xla_flag_enables_compilation(tmp_path: Path) -> None:
    from xception_serving.runtime.servable import Servable
    from xception_serving.runtime.session_config import session_options

    _write_jit_compiled_version(tmp_path)
    servable = Servable("m", 1, tmp_path / "1", session_options(xla_cpu_compilation_enabled=True))
    try:
        outputs = servable.run("serving_default", {INPUT_ALIAS: WARMUP_INPUT})
        np.testing.assert_array_equal(outputs[OUTPUT_ALIAS], WARMUP_INPUT * 2)
    finally:
        servable.close()
