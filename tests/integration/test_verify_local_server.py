"""``xception-client verify`` against the local server: the session's small Xception passes; a model
from other weights under the same name, a bilinear-resize export of the same weights and an export
with other output shapes each fail with exit 1 and one line naming the difference; a corrupt or
reference-less artifact fails before any replay.

Exports here (module scope, 71x71): other weights, bilinear, top-k 3; one extra server serves all
three (the other-weights one under the default name "xception").
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xception_contract as contract
from xception_client import AsyncClient, Client
from xception_client.cli import main
from xception_client.verify import RecordResult, VerifyReport

from tests.fixtures.models import SMALL_IMAGE_SIZE, ExportedModel, build_sensitive_xception
from tests.fixtures.servers import ServerProcess, start_local_server

WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
ALL_SIGNATURES = {
    contract.BYTES_SIGNATURE,
    contract.PIXELS_SIGNATURE,
    contract.PREPROCESSED_SIGNATURE,
    contract.CLASSIFY_SIGNATURE,
}


def _verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["verify", *args])
    captured = capsys.readouterr()
    with capsys.disabled():  # the table and verdict in the log of `pytest -s`
        print(f"\n$ xception-client verify {' '.join(args)}\n{captured.out}{captured.err}")
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def variants(
    tmp_path_factory: pytest.TempPathFactory, small_xception_weights: Path
) -> dict[str, Path]:
    from xception_export.api import export

    root = tmp_path_factory.mktemp("variants")
    other_weights = root / "other.weights.h5"
    build_sensitive_xception(seed=8).save_weights(str(other_weights))
    options: dict[str, dict[str, Any]] = {
        "other_weights": {"weights": str(other_weights)},
        "bilinear": {"weights": str(small_xception_weights), "interpolation": "bilinear"},
        "top3": {"weights": str(small_xception_weights), "top_k": 3},
    }
    bases = {}
    for name, kwargs in options.items():
        bases[name] = root / name
        export(bases[name], image_size=SMALL_IMAGE_SIZE, model_version=1,
               log=lambda _m: None, **kwargs)
    return bases


@pytest.fixture(scope="module")
def variant_server(variants: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[ServerProcess]:
    names = {contract.DEFAULT_MODEL_NAME: "other_weights", "bilinear": "bilinear", "top3": "top3"}
    config = tmp_path_factory.mktemp("variant-config") / "models.config"
    config.write_text(
        "model_config_list {\n"
        + "".join(
            f'  config {{ name: "{served}" base_path: "{variants[base]}" '
            'model_platform: "tensorflow" }\n'
            for served, base in names.items()
        )
        + "}\n"
    )
    with start_local_server(model_config_file=config) as server:
        yield server


def test_verify_passes_against_the_local_server(
    capsys: pytest.CaptureFixture[str], xception_server: ServerProcess,
    small_xception_model: ExportedModel,
) -> None:
    # A base path: verify picks its latest version.
    code, out, err = _verify(
        capsys, str(small_xception_model.base_path), "--server", xception_server.grpc_target
    )
    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith(f"artifact {small_xception_model.version_dir} -> model xception")
    assert {line.split()[0] for line in lines[2:6]} == ALL_SIGNATURES
    assert all(line.endswith(" ok") for line in lines[2:6])
    assert lines[-1].startswith("PASS: xception version 1 at ")

    code, out, _ = _verify(
        capsys, str(small_xception_model.version_dir), "--server", xception_server.grpc_target,
        "--json",
    )
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["signature_problems"] == []
    assert {s["signature"] for s in report["signatures"]} == ALL_SIGNATURES
    assert all(r["failure"] is None and r["max_abs_diff"] <= 1e-4 for r in report["records"])
    assert sum(r["rows"] for r in report["records"]) >= len(report["records"]) + 1  # a batch


def test_client_and_async_client_return_a_typed_report(
    xception_server: ServerProcess, small_xception_model: ExportedModel
) -> None:
    with Client(xception_server.grpc_target) as client:
        report = client.verify(small_xception_model.version_dir, atol=1e-5)
    assert isinstance(report, VerifyReport) and report.passed, report.first_failure
    assert all(isinstance(r, RecordResult) for r in report.records)
    assert report.served_version == report.artifact_version == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.atol = 1.0  # type: ignore[misc]


async def test_async_client_verify(
    xception_server: ServerProcess, small_xception_model: ExportedModel
) -> None:
    async with AsyncClient(xception_server.grpc_target) as client:
        report = await client.verify(small_xception_model.base_path)
    assert report.passed, report.first_failure
    assert {s.signature for s in report.signatures} == ALL_SIGNATURES


def test_other_weights_under_the_same_name_fail(
    capsys: pytest.CaptureFixture[str], variant_server: ServerProcess,
    small_xception_model: ExportedModel,
) -> None:
    code, out, err = _verify(
        capsys, str(small_xception_model.version_dir), "--server", variant_server.grpc_target
    )
    assert code == 1
    assert err.startswith(
        "xception-client: verify failed: record 1 (serving_default, JPEG): output "
    ), err
    assert " observed " in err and " expected " in err and len(err.splitlines()) == 1
    assert "FAIL: xception version 1" in out


def test_bilinear_resize_of_the_same_weights_fails_on_encoded_images_only(
    capsys: pytest.CaptureFixture[str], variant_server: ServerProcess,
    small_xception_model: ExportedModel,
) -> None:
    code, out, err = _verify(
        capsys, str(small_xception_model.version_dir), "--server", variant_server.grpc_target,
        "--model", "bilinear", "--json",
    )
    assert code == 1
    assert err.startswith("xception-client: verify failed: record 1 (serving_default, JPEG): ")
    assert "observed" in err and "expected" in err
    by_signature = {s["signature"]: s for s in json.loads(out)["signatures"]}
    # Pixels and preprocessed inputs skip the resize: the same weights answer the same there.
    assert by_signature[contract.PIXELS_SIGNATURE]["passed"]
    assert by_signature[contract.PREPROCESSED_SIGNATURE]["passed"]
    assert not by_signature[contract.BYTES_SIGNATURE]["passed"]
    assert not by_signature[contract.CLASSIFY_SIGNATURE]["passed"]


def test_other_output_shapes_fail_on_the_signature_check(
    capsys: pytest.CaptureFixture[str], variant_server: ServerProcess,
    small_xception_model: ExportedModel,
) -> None:
    code, out, err = _verify(
        capsys, str(small_xception_model.version_dir), "--server", variant_server.grpc_target,
        "--model", "top3",
    )
    assert code == 1
    assert err == (
        "xception-client: verify failed: signatures differ: signature 'serving_default' output "
        "'top_k_class_ids': served DT_INT32 [-1, 3], artifact DT_INT32 [-1, 5]\n"
    )
    assert "signature difference: signature 'serving_pixels' output 'top_k_labels'" in out


def _copy_artifact(small_xception_model: ExportedModel, tmp_path: Path) -> Path:
    copy = tmp_path / "copy" / "1"
    shutil.copytree(small_xception_model.version_dir, copy)
    return copy


def test_corrupt_warmup_file_fails_naming_the_record(
    capsys: pytest.CaptureFixture[str], xception_server: ServerProcess,
    small_xception_model: ExportedModel, tmp_path: Path,
) -> None:
    copy = _copy_artifact(small_xception_model, tmp_path)
    data = bytearray((copy / WARMUP).read_bytes())
    data[len(data) - 100] ^= 0xFF  # inside the last record's payload
    (copy / WARMUP).write_bytes(bytes(data))
    code, out, err = _verify(capsys, str(copy), "--server", xception_server.grpc_target)
    assert code == 1 and out == ""
    assert "record 8 at byte" in err and "corrupted data (CRC32C mismatch)" in err


def test_artifact_without_reference_answers_fails_clearly(
    capsys: pytest.CaptureFixture[str], xception_server: ServerProcess,
    small_xception_model: ExportedModel, tmp_path: Path,
) -> None:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    copy = _copy_artifact(small_xception_model, tmp_path)
    logs = [
        prediction_log_pb2.PredictionLog.FromString(raw)
        for raw in tf.data.TFRecordDataset(str(copy / WARMUP)).as_numpy_iterator()
    ]
    with tf.io.TFRecordWriter(str(copy / WARMUP)) as writer:
        for log in logs:
            getattr(log, log.WhichOneof("log_type")).ClearField("response")
            writer.write(log.SerializeToString())
    code, _, err = _verify(capsys, str(copy), "--server", xception_server.grpc_target)
    assert code == 1
    assert err.startswith("xception-client: error: ")
    assert "record 1: no reference response" in err and "re-export" in err


def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], xception_server: ServerProcess, tmp_path: Path
) -> None:
    code, _, err = _verify(capsys, str(tmp_path / "missing"), "--server",
                           xception_server.grpc_target)
    assert code == 2 and "is not a directory" in err
    code, _, err = _verify(capsys, str(tmp_path), "--server", xception_server.grpc_target)
    assert code == 2 and "neither a version directory" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(tmp_path), "--atol", "-1"])
    assert exit_info.value.code == 2
    assert "--atol must be a finite number >= 0" in capsys.readouterr().err
