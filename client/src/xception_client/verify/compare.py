"""Comparisons, in numpy only: served signatures against the artifact's, and a served answer
against the reference answer of its record.

Float outputs (probabilities, top-k scores, classify scores) must be within ``atol``. Exact
outputs (class ids, labels, keys, classify classes) must be equal, except in top-k where the
two classes tie within ``atol`` in the reference probabilities: then either order is right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import xception_contract as contract

from ..metadata import Signature, TensorSpec
from .records import Array, Outputs

__all__ = ["Comparison", "compare_outputs", "indistinct_classes", "signature_differences"]

_TOP_K_EXACT = (
    contract.TOP_K_CLASS_IDS_OUTPUT,
    contract.TOP_K_LABELS_OUTPUT,
    contract.TOP_K_KEYS_OUTPUT,
)


@dataclass(frozen=True)
class Comparison:
    """How one served answer compares with its reference."""

    max_abs_diff: float  # over every float output (0.0 if none could be compared)
    rows: int  # images in the record
    rows_agreeing: int  # rows whose exact outputs (labels, ids, keys) all agree
    difference: str | None  # the first difference, one line; None when the answer holds


def compare_outputs(expected: Outputs, observed: Outputs, atol: float) -> Comparison:
    """Compare every output of the reference (extra served outputs are the signature check's)."""
    rows = _rows(expected)
    first: str | None = None
    max_diff = 0.0
    bad_rows = np.zeros(rows, dtype=bool)
    ties = _top_k_ties(expected, observed, atol)
    for alias in sorted(expected, key=_order):
        want = expected[alias]
        if alias not in observed:
            first = first or f"output {alias!r} missing (expected shape {list(want.shape)})"
            bad_rows[:] = True
            continue
        got = observed[alias]
        if got.shape != want.shape:
            first = first or (
                f"output {alias!r} shape observed {list(got.shape)} expected {list(want.shape)}"
            )
            bad_rows[:] = True
            continue
        if want.dtype.kind == "f":
            diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
            diff = np.where(np.isnan(diff), np.inf, diff)
            if diff.size:
                max_diff = max(max_diff, float(diff.max()))
            over = np.argwhere(diff > atol)
            if over.size and first is None:
                at = tuple(int(i) for i in over[0])
                first = (
                    f"output {alias!r}{list(at)} observed {float(got[at]):.6g} expected "
                    f"{float(want[at]):.6g} (|dp| {float(diff[at]):.3g} > atol {atol:g})"
                )
            continue
        mismatch = _not_equal(got, want)
        if alias in _TOP_K_EXACT and ties is not None:
            mismatch = mismatch & ~ties
        if mismatch.any():
            at = tuple(int(i) for i in np.argwhere(mismatch)[0])
            if got.ndim:
                per_row = np.asarray(mismatch.reshape(mismatch.shape[0], -1).any(axis=1))
                bad_rows |= per_row[:rows]
            first = first or (
                f"output {alias!r}{list(at)} observed {_show(got[at])} expected {_show(want[at])}"
            )
    return Comparison(max_diff, rows, int(rows - bad_rows.sum()), first)


def _order(alias: str) -> tuple[int, str]:
    # Report label differences before score differences: "wrong class" says more than "|dp|".
    exact_first = {contract.TOP_K_LABELS_OUTPUT: 0, contract.CLASSIFY_CLASSES_OUTPUT: 0}
    return exact_first.get(alias, 1), alias


def _rows(outputs: Outputs) -> int:
    shapes = [a.shape for a in outputs.values() if a.ndim]
    return int(shapes[0][0]) if shapes else 1


def _not_equal(got: Array, want: Array) -> Array:
    if want.dtype == object or got.dtype == object:
        flat = [a != b for a, b in zip(got.ravel().tolist(), want.ravel().tolist(), strict=True)]
        return np.array(flat, dtype=bool).reshape(want.shape)
    result: Array = np.asarray(got != want).reshape(want.shape)
    return result


def _top_k_ties(expected: Outputs, observed: Outputs, atol: float) -> Array | None:
    """[N, K] mask: where served and reference class ids differ but the two classes' reference
    probabilities are within atol (a tie, so TF's order between them is arbitrary)."""
    ids = contract.TOP_K_CLASS_IDS_OUTPUT
    probs = expected.get(contract.PROBABILITIES_OUTPUT)
    if ids not in expected or ids not in observed or probs is None:
        return None
    want, got = expected[ids], observed[ids]
    if want.shape != got.shape or probs.ndim != 2 or want.ndim != 2:
        return None
    classes = probs.shape[1]
    if got.size and (got.min() < 0 or got.max() >= classes):
        return None
    p_want = np.take_along_axis(probs, want.astype(np.int64), axis=1)
    p_got = np.take_along_axis(probs, got.astype(np.int64), axis=1)
    return np.asarray((want != got) & (np.abs(p_want - p_got) <= atol))


# Where a reference answer's scores are, by preference: top-k scores, classify scores, all
# probabilities.
_SCORE_OUTPUTS = (
    contract.TOP_K_SCORES_OUTPUT,
    contract.CLASSIFY_SCORES_OUTPUT,
    contract.PROBABILITIES_OUTPUT,
)


def indistinct_classes(expected: Outputs, atol: float) -> int | None:
    """K when, in every row of this reference answer, the K best scores all lie within ``atol``
    of each other (K = top-k, at most DEFAULT_TOP_K of all probabilities): the answer cannot
    tell those classes apart, as with random weights, so agreeing with it proves little about
    classes. None when some row tells its best class apart, or there are no scores to judge."""
    for alias in _SCORE_OUTPUTS:
        scores = expected.get(alias)
        if scores is not None and scores.dtype.kind == "f" and scores.ndim == 2:
            break
    else:
        return None
    k = min(scores.shape[1], contract.DEFAULT_TOP_K)
    if k < 2 or scores.shape[0] == 0:
        return None
    best = -np.sort(-scores.astype(np.float64), axis=1)[:, :k]
    spread = best[:, 0] - best[:, -1]
    return k if bool(np.all(spread <= atol)) else None


def _show(value: object) -> str:
    if isinstance(value, bytes):
        return repr(value.decode("utf-8", errors="replace"))
    return repr(value.item() if isinstance(value, np.generic) else value)


def signature_differences(
    served: Mapping[str, Signature], artifact: Mapping[str, Signature]
) -> list[str]:
    """One sentence per difference in names, method names, aliases, dtypes and shapes."""
    served = {k: v for k, v in served.items() if not k.startswith("__")}
    problems: list[str] = []
    for name in sorted(set(artifact) - set(served)):
        problems.append(f"signature {name!r} is in the artifact but not served")
    for name in sorted(set(served) - set(artifact)):
        problems.append(f"signature {name!r} is served but not in the artifact")
    for name in sorted(set(served) & set(artifact)):
        mine, theirs = artifact[name], served[name]
        if mine.method_name != theirs.method_name:
            problems.append(
                f"signature {name!r}: served method {theirs.method_name!r}, artifact "
                f"{mine.method_name!r}"
            )
        for kind, a, s in (
            ("input", mine.inputs, theirs.inputs),
            ("output", mine.outputs, theirs.outputs),
        ):
            problems.extend(_tensor_differences(name, kind, s, a))
    return problems


def _tensor_differences(
    signature: str, kind: str, served: Mapping[str, TensorSpec], artifact: Mapping[str, TensorSpec]
) -> list[str]:
    problems = []
    for alias in sorted(set(artifact) | set(served)):
        mine, theirs = artifact.get(alias), served.get(alias)
        if mine is None or theirs is None:
            side = "artifact" if theirs is None else "server"
            problems.append(f"signature {signature!r}: {kind} {alias!r} only in the {side}")
        elif mine != theirs:
            problems.append(
                f"signature {signature!r} {kind} {alias!r}: served {theirs}, artifact {mine}"
            )
    return problems
