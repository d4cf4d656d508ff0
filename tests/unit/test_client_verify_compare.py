"""verify's comparisons: atol on floats, exact labels/ids/keys with the top-k tie rule, shapes,
classify rows, signature differences, the report's verdict and first failure, and its warnings
(another version served; reference answers that cannot tell classes apart), and a record left
without a usable answer (the call failed, or its answer cannot be read)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import grpc
import numpy as np
import pytest
import xception_contract as contract
from xception_client import ServerUnavailable
from xception_client._proto import serving_pb2
from xception_client._wire import ModelRef
from xception_client.metadata import Signature, TensorSpec
from xception_client.verify import plan
from xception_client.verify.artifact import Artifact
from xception_client.verify.compare import (
    compare_outputs,
    indistinct_classes,
    signature_differences,
)
from xception_client.verify.records import Record
from xception_client.verify.report import RecordResult, VerifyReport

ATOL = 1e-4
LABELS = np.array([b"cat", b"dog", b"fox", b"owl"], dtype=object)


def _predict(probs: list[list[float]], k: int = 2) -> dict[str, np.ndarray]:
    p = np.array(probs, dtype=np.float32)
    ids = np.argsort(-p, axis=1, kind="stable")[:, :k].astype(np.int32)
    return {
        contract.PROBABILITIES_OUTPUT: p,
        contract.TOP_K_SCORES_OUTPUT: np.take_along_axis(p, ids, axis=1),
        contract.TOP_K_CLASS_IDS_OUTPUT: ids,
        contract.TOP_K_LABELS_OUTPUT: LABELS[ids],
    }


def test_identical_answers_agree_on_every_row() -> None:
    ref = _predict([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1]])
    result = compare_outputs(ref, ref, ATOL)
    assert (result.difference, result.max_abs_diff, result.rows, result.rows_agreeing) == (
        None,
        0.0,
        2,
        2,
    )


def test_probability_beyond_atol_is_named_with_index_and_values() -> None:
    ref = _predict([[0.1, 0.6, 0.2, 0.1]])
    served = {k: v.copy() for k, v in ref.items()}
    served[contract.PROBABILITIES_OUTPUT][0, 2] += 3e-4
    result = compare_outputs(ref, served, ATOL)
    assert result.difference is not None
    assert "output 'probabilities'[0, 2]" in result.difference
    assert "> atol 0.0001" in result.difference
    assert abs(result.max_abs_diff - 3e-4) < 1e-6
    assert result.rows_agreeing == 1  # labels still agree


def test_probability_within_atol_passes() -> None:
    ref = _predict([[0.1, 0.6, 0.2, 0.1]])
    served = {k: v.copy() for k, v in ref.items()}
    served[contract.PROBABILITIES_OUTPUT][0, 1] += 5e-5
    assert compare_outputs(ref, served, ATOL).difference is None


def test_swapped_classes_that_tie_within_atol_are_accepted() -> None:
    ref = _predict([[0.1, 0.40001, 0.4, 0.09999]])
    served = _predict([[0.1, 0.4, 0.40001, 0.09999]])  # served order of the tied pair flipped
    result = compare_outputs(ref, served, ATOL)
    assert result.difference is None and result.rows_agreeing == 1


def test_swapped_classes_that_do_not_tie_fail_on_labels() -> None:
    ref = _predict([[0.1, 0.5, 0.3, 0.1]])
    served = {k: v.copy() for k, v in ref.items()}
    served[contract.TOP_K_CLASS_IDS_OUTPUT][0] = [2, 1]
    served[contract.TOP_K_LABELS_OUTPUT][0] = [b"fox", b"dog"]
    result = compare_outputs(ref, served, ATOL)
    assert result.difference == "output 'top_k_labels'[0, 0] observed 'fox' expected 'dog'"
    assert result.rows_agreeing == 0


def test_same_ids_with_other_labels_fail() -> None:
    ref = _predict([[0.1, 0.5, 0.3, 0.1]])
    served = {k: v.copy() for k, v in ref.items()}
    served[contract.TOP_K_LABELS_OUTPUT] = np.array([[b"dog", b"wolf"]], dtype=object)
    result = compare_outputs(ref, served, ATOL)
    assert result.difference == "output 'top_k_labels'[0, 1] observed 'wolf' expected 'fox'"


def test_output_of_another_shape_fails_naming_both_shapes() -> None:
    ref = _predict([[0.1, 0.5, 0.3, 0.1]], k=2)
    served = _predict([[0.1, 0.5, 0.3, 0.1]], k=3)
    result = compare_outputs(ref, served, ATOL)
    assert result.difference == "output 'top_k_labels' shape observed [1, 3] expected [1, 2]"


def test_missing_output_fails_naming_it_and_the_shape_expected() -> None:
    ref = _predict([[0.1, 0.5, 0.3, 0.1]])
    served = dict(ref)
    del served[contract.TOP_K_SCORES_OUTPUT]
    assert compare_outputs(ref, served, ATOL).difference == (
        "output 'top_k_scores' missing (expected shape [1, 2])"
    )


def test_classify_rows_compare_labels_and_scores() -> None:
    ref = {"classes": LABELS[np.newaxis].copy(), "scores": np.array([[0.1, 0.2, 0.3, 0.4]], "f4")}
    served = {"classes": ref["classes"].copy(), "scores": ref["scores"] + np.float32(0.01)}
    assert compare_outputs(ref, served, ATOL).difference == (
        "output 'scores'[0, 0] observed 0.11 expected 0.1 (|dp| 0.01 > atol 0.0001)"
    )
    served = {"classes": LABELS[np.newaxis][:, ::-1].copy(), "scores": ref["scores"]}
    assert (
        compare_outputs(ref, served, ATOL).difference
        == "output 'classes'[0, 0] observed 'owl' expected 'cat'"
    )


def _sig(k: int, dtype: str = "DT_FLOAT") -> Signature:
    return Signature(
        contract.PREDICT_METHOD,
        {"image_bytes": TensorSpec("DT_STRING", (None,))},
        {"top_k_scores": TensorSpec(dtype, (None, k))},
    )


def test_signature_differences_name_shapes_dtypes_and_names() -> None:
    artifact = {"serving_default": _sig(5), "serving_pixels": _sig(5)}
    assert signature_differences({**artifact, "__saved_model_init_op": _sig(1)}, artifact) == []
    served = {"serving_default": _sig(3), "classify": _sig(5)}
    assert signature_differences(served, artifact) == [
        "signature 'serving_pixels' is in the artifact but not served",
        "signature 'classify' is served but not in the artifact",
        "signature 'serving_default' output 'top_k_scores': served DT_FLOAT [-1, 3], "
        "artifact DT_FLOAT [-1, 5]",
    ]
    assert signature_differences(
        {"serving_default": _sig(5, "DT_HALF")}, {"serving_default": _sig(5)}
    ) == [
        "signature 'serving_default' output 'top_k_scores': served DT_HALF [-1, 5], "
        "artifact DT_FLOAT [-1, 5]"
    ]


def _report(problems: tuple[str, ...], failures: list[str | None]) -> VerifyReport:
    records = tuple(
        RecordResult(
            n,
            "serving_default",
            f"record {n} (serving_default, JPEG)",
            1,
            1 if f is None else 0,
            0.0,
            2.0,
            f,
        )
        for n, f in enumerate(failures, 1)
    )
    return VerifyReport("/m/1", 1, "xception", 1, "h:1", ATOL, problems, records)


def test_report_verdict_and_first_failure() -> None:
    good = _report((), [None, None])
    assert good.passed and good.first_failure is None and good.verdict().startswith("PASS")
    bad = _report((), [None, "output 'x' differs", "later"])
    assert not bad.passed
    assert bad.first_failure == "record 2 (serving_default, JPEG): output 'x' differs"
    assert " 1/3 " in bad.table() and bad.table().endswith("FAIL")  # labels agree: 1 of 3
    assert _report(("sig differs",), [None]).first_failure == "signatures differ: sig differs"
    assert bad.to_dict()["signatures"][0]["records"] == 3


def _artifact(version: int | None, answers: list[dict[str, np.ndarray]]) -> Artifact:
    records = tuple(
        Record(n, "serving_default", "predict", b"", answer, 1, ("JPEG",))
        for n, answer in enumerate(answers, 1)
    )
    return Artifact(Path("/m") / str(version), version, {}, records)


DISTINCT = _predict([[0.7, 0.2, 0.05, 0.05]], k=3)
FLAT = _predict([[0.25001, 0.25, 0.24999, 0.25]], k=3)  # random weights: every class ties


def test_a_reference_whose_top_k_scores_tie_within_atol_cannot_tell_classes_apart() -> None:
    assert indistinct_classes(FLAT, ATOL) == 3
    assert indistinct_classes(DISTINCT, ATOL) is None
    assert indistinct_classes(FLAT, atol=1e-6) is None  # apart at a tighter tolerance
    # One image telling its classes apart is enough for the record.
    assert indistinct_classes(_predict([[0.25, 0.25, 0.25, 0.25], [0.9, 0.1, 0, 0]]), ATOL) is None
    # Top 1 alone ranks nothing: no judgement.
    assert (
        indistinct_classes({contract.TOP_K_SCORES_OUTPUT: np.ones((1, 1), np.float32)}, ATOL)
        is None
    )


def test_no_warning_for_the_served_version_and_references_that_rank_classes() -> None:
    assert plan.report_warnings(_artifact(1, [DISTINCT, DISTINCT]), "xception", 1, ATOL) == []


def test_a_served_version_other_than_the_artifacts_is_warned_about() -> None:
    assert plan.report_warnings(_artifact(2, [DISTINCT]), "xception", 1, ATOL) == [
        "the artifact is version 2 but xception answered as version 1: the records were "
        "replayed against another version"
    ]


def test_references_that_cannot_tell_classes_apart_are_warned_about_with_the_first() -> None:
    assert plan.report_warnings(_artifact(1, [DISTINCT, FLAT, FLAT]), "xception", 1, ATOL) == [
        "2 of 3 reference records cannot tell classes apart: the top 3 scores of each image lie "
        "within atol 0.0001 of each other (first: record 2 (serving_default, JPEG)); random "
        "weights? A pass then proves little about the classes"
    ]


def test_warnings_do_not_fail_a_report_and_are_in_its_dict() -> None:
    report = dataclasses.replace(_report((), [None]), warnings=("another version",))
    assert report.passed
    assert report.to_dict()["warnings"] == ("another version",)


def test_a_record_without_a_usable_answer_fails_naming_the_call_error_or_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    predict = Record(1, "serving_default", "predict", b"", DISTINCT, 1, ("JPEG",))
    classify = Record(2, contract.CLASSIFY_SIGNATURE, "classify", b"", {}, 2, ("JPEG", "PNG"))
    artifact = Artifact(Path("/m/1"), 1, {}, (predict, classify))
    monkeypatch.setattr(plan, "load_artifact", lambda _path: artifact)
    job = plan.Verification("/m/1", ModelRef("xception"), "localhost:8500")

    refused = ServerUnavailable("connection refused", code=grpc.StatusCode.UNAVAILABLE)
    failed = job.result(predict, None, refused, 0.25)
    assert failed == RecordResult(
        1,
        "serving_default",
        "record 1 (serving_default, JPEG)",
        1,
        0,
        math.inf,
        250.0,
        "call failed: UNAVAILABLE: connection refused",
    )

    ragged = serving_pb2.ClassificationResponse()
    ragged.result.classifications.add().classes.add(label="cat", score=0.9)
    ragged.result.classifications.add()  # a second row with no classes
    unreadable = job.result(classify, ragged, None, 0.5)
    assert (unreadable.rows, unreadable.rows_agreeing, unreadable.max_abs_diff) == (2, 0, math.inf)
    assert unreadable.latency_ms == 500.0
    assert unreadable.failure == (
        "unreadable answer: classify rows have different numbers of classes"
    )
