"""What `xception-export check` says loaded the version: a TF Serving release only when the check
ran under that release's TensorFlow (--tfserving-version), never this environment's TensorFlow
version dressed as a release (TensorFlow 2.21.0 here is not TF Serving 2.21.0; the pinned
release is 2.20.0)."""

from __future__ import annotations

from xception_export.preflight import PreflightReport, format_report, runtime_label


def test_a_check_under_a_pinned_release_names_that_release() -> None:
    assert runtime_label("2.20.0", "2.20.0") == "TF Serving 2.20.0"


def test_a_check_on_this_environments_tensorflow_names_no_release() -> None:
    label = runtime_label("2.21.0")
    assert label == "TF Serving's Session path on this environment's TensorFlow 2.21.0"
    assert "TF Serving 2.21.0" not in label


def test_the_report_lines_carry_the_label_given() -> None:
    report = PreflightReport(version_dir="/m/1", tensorflow_version="2.21.0", tags=["serve"])
    text = format_report(report, runtime_label("2.21.0"))
    assert text.splitlines()[0] == (
        "checking /m/1 as TF Serving's Session path on this environment's TensorFlow 2.21.0 "
        "loads it (TensorFlow 2.21.0 Session, tags serve)"
    )
