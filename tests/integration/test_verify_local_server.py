"""``xception-client verify`` against the local server: the session's small Xception passes; a model
from other weights under the same name, a bilinear-resize export of the same weights and an export
with other output shapes each fail with exit 1 and one line naming the difference; a corrupt or
reference-less artifact fails before any replay.

Exports here (module scope, 71x71): other weights, bilinear, top-k 3, untrained; one extra server
serves all four (the other-weights one under the default name "xception"). A pass against another
served version, or with reference answers that cannot tell classes apart, carries a warning.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import xception_contract as contract
from xception_client import AsyncClient, Client
from xception_client.cli import main
from xception_client.verify import RecordResult, VerifyReport
from xception_serving.testing.process import ServerProcess

from tests.fixtures.models import SMALL_IMAGE_SIZE, ExportedModel, build_sensitive_xception
from tests.fixtures.servers import start_local_server

WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
# The one stderr line of a replay that differs: the first record (the JPEG through the bytes
# signature), the output and index, and both values (labels as text, scores with |dp| > atol).
FIRST_RECORD_DIFFERS = re.compile(
    r"xception-client: verify failed: record 1 \(serving_default, JPEG\): output '\w+'"
    r"\[\d+(?:, \d+)*\] observed \S+ expected \S+(?: \(\|dp\| \S+ > atol \S+\))?\n"
)
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
        "random": {"weights": "random"},  # untrained Keras Xception: every class ties
    }
    bases = {}
    for name, kwargs in options.items():
        bases[name] = root / name
        export(
            bases[name], image_size=SMALL_IMAGE_SIZE, model_version=1, log=lambda _m: None, **kwargs
        )
    return bases


@pytest.fixture(scope="module")
def variant_server(
    variants: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    names = {
        contract.DEFAULT_MODEL_NAME: "other_weights",
        "bilinear": "bilinear",
        "top3": "top3",
        "random": "random",
    }
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
    capsys: pytest.CaptureFixture[str],
    xception_server: ServerProcess,
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
        capsys,
        str(small_xception_model.version_dir),
        "--server",
        xception_server.grpc_target,
        "--json",
    )
    report = json.loads(out)
    assert code == 0 and report["passed"] and report["signature_problems"] == []
    assert report["warnings"] == []  # the served version, and answers that rank classes
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


async def test_async_client_verify_passes_on_every_signature(
    xception_server: ServerProcess, small_xception_model: ExportedModel
) -> None:
    async with AsyncClient(xception_server.grpc_target) as client:
        report = await client.verify(small_xception_model.base_path)
    assert report.passed, report.first_failure
    assert {s.signature for s in report.signatures} == ALL_SIGNATURES


def _verify_variant(
    capsys: pytest.CaptureFixture[str], server: ServerProcess, model: ExportedModel, *args: str
) -> tuple[int, str, str]:
    """verify of the session's small Xception against the variant server."""
    return _verify(capsys, str(model.version_dir), "--server", server.grpc_target, *args)


def test_other_weights_under_the_same_name_fail(
    capsys: pytest.CaptureFixture[str],
    variant_server: ServerProcess,
    small_xception_model: ExportedModel,
) -> None:
    code, out, err = _verify_variant(capsys, variant_server, small_xception_model)
    assert code == 1
    assert FIRST_RECORD_DIFFERS.fullmatch(err), err
    assert out.splitlines()[-1].startswith("FAIL: xception version 1 at "), out


def test_bilinear_resize_of_the_same_weights_fails_on_encoded_images_only(
    capsys: pytest.CaptureFixture[str],
    variant_server: ServerProcess,
    small_xception_model: ExportedModel,
) -> None:
    code, out, err = _verify_variant(
        capsys, variant_server, small_xception_model, "--model", "bilinear", "--json"
    )
    assert code == 1
    assert FIRST_RECORD_DIFFERS.fullmatch(err), err
    by_signature = {s["signature"]: s for s in json.loads(out)["signatures"]}
    # Pixels and preprocessed inputs skip the resize: the same weights answer the same there.
    assert by_signature[contract.PIXELS_SIGNATURE]["passed"]
    assert by_signature[contract.PREPROCESSED_SIGNATURE]["passed"]
    assert not by_signature[contract.BYTES_SIGNATURE]["passed"]
    assert not by_signature[contract.CLASSIFY_SIGNATURE]["passed"]


def test_other_output_shapes_fail_on_the_signature_check(
    capsys: pytest.CaptureFixture[str],
    variant_server: ServerProcess,
    small_xception_model: ExportedModel,
) -> None:
    code, out, err = _verify_variant(
        capsys, variant_server, small_xception_model, "--model", "top3"
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
    capsys: pytest.CaptureFixture[str],
    xception_server: ServerProcess,
    small_xception_model: ExportedModel,
    tmp_path: Path,
) -> None:
    copy = _copy_artifact(small_xception_model, tmp_path)
    data = bytearray((copy / WARMUP).read_bytes())
    starts = _record_starts(bytes(data))
    data[len(data) - 100] ^= 0xFF  # inside the last record's payload
    (copy / WARMUP).write_bytes(bytes(data))
    code, out, err = _verify(capsys, str(copy), "--server", xception_server.grpc_target)
    assert (code, out) == (1, "")
    assert len(starts) == 8
    assert err == (
        f"xception-client: error: {copy / WARMUP}: record 8 at byte {starts[-1]}: corrupted data "
        "(CRC32C mismatch)\n"
    )


def _record_starts(data: bytes) -> list[int]:
    """The byte offset of each TFRecord (length, length CRC, payload, payload CRC)."""
    starts, offset = [], 0
    while offset < len(data):
        starts.append(offset)
        offset += 12 + int.from_bytes(data[offset : offset + 8], "little") + 4
    return starts


def test_artifact_without_reference_answers_fails_clearly(
    capsys: pytest.CaptureFixture[str],
    xception_server: ServerProcess,
    small_xception_model: ExportedModel,
    tmp_path: Path,
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
    assert err == (
        f"xception-client: error: {copy / WARMUP}: record 1: no reference response (the artifact "
        "was exported before warmup records carried Keras reference answers); re-export it with "
        "this version of xception-export\n"
    )


def test_usage_errors_exit_2(
    capsys: pytest.CaptureFixture[str], xception_server: ServerProcess, tmp_path: Path
) -> None:
    missing = tmp_path / "missing"
    code, _, err = _verify(capsys, str(missing), "--server", xception_server.grpc_target)
    assert (code, err) == (
        2,
        f"xception-client: error: ARTIFACT {str(missing)!r} is not a directory\n",
    )
    code, _, err = _verify(capsys, str(tmp_path), "--server", xception_server.grpc_target)
    assert (code, err) == (
        2,
        f"xception-client: error: ARTIFACT {str(tmp_path)!r} is neither a version directory (no "
        "saved_model.pb) nor a base path whose latest numeric version directory holds one\n",
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(tmp_path), "--atol", "-1"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "xception-client: error: --atol must be a finite number >= 0; received: -1.0"
    )


def test_an_artifact_of_another_version_than_the_served_one_passes_with_a_warning(
    capsys: pytest.CaptureFixture[str],
    xception_server: ServerProcess,
    small_xception_model: ExportedModel,
    tmp_path: Path,
) -> None:
    newer = tmp_path / "base" / "7"  # the same model, published as version 7; 1 is served
    shutil.copytree(small_xception_model.version_dir, newer)
    code, out, err = _verify(capsys, str(newer), "--server", xception_server.grpc_target)
    assert code == 0
    assert out.splitlines()[-1].startswith("PASS: xception version 1 at ")
    assert err == (
        "xception-client: warning: the artifact is version 7 but xception answered as version "
        "1: the records were replayed against another version\n"
    )


def test_an_untrained_artifact_passes_with_a_warning_that_its_answers_rank_nothing(
    capsys: pytest.CaptureFixture[str],
    variant_server: ServerProcess,
    variants: dict[str, Path],
) -> None:
    artifact = variants["random"] / "1"
    code, out, err = _verify(
        capsys, str(artifact), "--server", variant_server.grpc_target, "--model", "random"
    )
    assert code == 0, err
    assert out.splitlines()[-1].startswith("PASS: random version 1 at ")
    assert re.fullmatch(
        r"xception-client: warning: (\d+) of \1 reference records cannot tell classes apart: "
        r"the top 5 scores of each image lie within atol 0\.0001 of each other \(first: record 1 "
        r"\(serving_default, JPEG\)\); random weights\? A pass then proves little about the "
        r"classes\n",
        err,
    ), err
