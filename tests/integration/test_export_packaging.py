"""xception-export package: the SageMaker tarball and the Vertex AI folder have the layouts those
containers document, hold the version byte for byte, and still load and answer every warmup
record through TF Serving's Session path; bad input fails in one line."""

from __future__ import annotations

import io
import random
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image
from xception_export import cli, packaging
from xception_export.artifact import content_hashes
from xception_export.preflight import check_version
from xception_serving.config import files as config_files

from tests.fixtures.models import ExportedModel

ROOT = Path(__file__).resolve().parents[2]


def _members(tarball: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tarball, "r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def test_sagemaker_tarball_holds_the_version_under_the_model_folder_and_loads(
    small_xception_model: ExportedModel, tmp_path: Path
) -> None:
    version = small_xception_model.version_dir
    tarball = packaging.package_sagemaker(version, tmp_path / "model.tar.gz")
    members = _members(tarball)
    prefix = f"xception/{version.name}"
    assert all(name == "xception" or name.startswith(f"{prefix}") for name in members)
    for required in ("saved_model.pb", "variables/variables.index", "assets.extra"):
        assert f"{prefix}/{required}" in members, required
    assert all(m.uid == 0 and m.uname == "" for m in members.values())
    assert all(m.mode & 0o044 == 0o044 for m in members.values())  # readable by any user
    out = tmp_path / "extracted"
    with tarfile.open(tarball, "r:gz") as tar:
        tar.extractall(out, filter="data")
    extracted = out / prefix
    assert content_hashes(extracted) == content_hashes(version)
    report = check_version(extracted)
    assert report.ok, report.to_json()
    assert report.records  # the warmup records travelled and ran


def test_sagemaker_flat_layout_puts_the_version_folder_at_the_root(
    small_xception_model: ExportedModel, tmp_path: Path
) -> None:
    version = small_xception_model.version_dir
    tarball = packaging.package_sagemaker(version, tmp_path / "m.tar.gz", model_name=None)
    names = _members(tarball)
    assert f"{version.name}/saved_model.pb" in names
    assert all(n.split("/")[0] == version.name for n in names)


def test_sagemaker_env_from_the_gpu_batching_config(
    small_xception_model: ExportedModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ROOT / "serving" / "batching.config"
    status = cli.main(
        ["package", "--target", "sagemaker", str(small_xception_model.version_dir),
         "-o", str(tmp_path / "model.tar.gz"), "--batching-config", str(config)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    lines = captured.out.splitlines()
    assert lines[0] == str(tmp_path / "model.tar.gz")
    env = dict(line.split("=", 1) for line in lines[1:])
    params = config_files.read_batching_parameters(config)
    assert env == {
        "SAGEMAKER_TFS_ENABLE_BATCHING": "true",
        "SAGEMAKER_TFS_MAX_BATCH_SIZE": str(params.max_batch_size.value),
        "SAGEMAKER_TFS_BATCH_TIMEOUT_MICROS": str(params.batch_timeout_micros.value),
        "SAGEMAKER_TFS_NUM_BATCH_THREADS": str(params.num_batch_threads.value),
        "SAGEMAKER_TFS_MAX_ENQUEUED_BATCHES": str(params.max_enqueued_batches.value),
    }
    # The GPU file pads to allowed_batch_sizes, which SageMaker's variables cannot express.
    assert "allowed_batch_sizes 8,16,32,64" in captured.err
    # The operator's guide lists exactly these settings.
    guide = (ROOT / "serving" / "README.md").read_text()
    for name, value in env.items():
        assert f"{name}={value}" in guide, name


def test_vertex_folder_has_the_saved_model_at_its_root_and_loads(
    small_xception_model: ExportedModel, tmp_path: Path
) -> None:
    version = small_xception_model.version_dir
    folder = packaging.package_vertex(version, tmp_path / "vertex" / "xception")
    assert (folder / "saved_model.pb").is_file()
    assert (folder / "variables" / "variables.index").is_file()
    assert not any(p.is_dir() and p.name.isdigit() for p in folder.iterdir())
    assert content_hashes(folder) == content_hashes(version)
    assert check_version(folder).ok


def _noise_png(side: int, seed: int = 3) -> bytes:
    rng = random.Random(seed)
    img = Image.frombytes("RGB", (side, side), rng.randbytes(side * side * 3))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_vertex_warns_for_images_whose_request_exceeds_the_online_limit(
    small_xception_model: ExportedModel,
    tmp_path: Path,
    sample_jpeg: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    small, big = tmp_path / "small.jpg", tmp_path / "big.png"
    small.write_bytes(sample_jpeg)
    big.write_bytes(_noise_png(700))  # incompressible: ~1.47 MB of PNG, ~1.96 MB as base64 JSON
    assert len(big.read_bytes()) < packaging.VERTEX_ONLINE_LIMIT_BYTES  # the file alone fits
    status = cli.main(
        ["package", "--target", "vertex", str(small_xception_model.version_dir),
         "-o", str(tmp_path / "out"), "--check-image", str(small), "--check-image", str(big)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 0
    assert len(err) == 1
    assert str(big) in err[0] and "1500000" in err[0]
    [found] = packaging.oversized_requests([small, big])
    assert found.request_bytes == packaging.rest_request_bytes(big.read_bytes())
    assert found.request_bytes > packaging.VERTEX_ONLINE_LIMIT_BYTES


def test_vertex_refuses_a_saved_model_without_serving_default(
    small_xception_model: ExportedModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    broken = tmp_path / "7"
    shutil.copytree(small_xception_model.version_dir, broken)
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((broken / "saved_model.pb").read_bytes())
    signatures = saved.meta_graphs[0].signature_def
    signatures["renamed"].CopyFrom(signatures["serving_default"])
    del signatures["serving_default"]
    (broken / "saved_model.pb").write_bytes(saved.SerializeToString())
    status = cli.main(["package", "--target", "vertex", str(broken), "-o", str(tmp_path / "v")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 1 and "'serving_default'" in err[0]
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("not-numeric", "numeric version folder"),
        ("missing", "is not a directory"),
        ("exists", "pass --force"),
    ],
)
def test_bad_input_fails_in_one_line_naming_the_problem(
    small_xception_model: ExportedModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    setup: str,
    message: str,
) -> None:
    version = small_xception_model.version_dir
    output = tmp_path / "model.tar.gz"
    if setup == "not-numeric":
        version = tmp_path / "latest"
        shutil.copytree(small_xception_model.version_dir, version)
    elif setup == "missing":
        version = tmp_path / "9"
    else:
        output.write_bytes(b"")
    status = cli.main(["package", "--target", "sagemaker", str(version), "-o", str(output)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert message in err[-1], err
    assert err[-1].startswith("xception-export package: error:")
