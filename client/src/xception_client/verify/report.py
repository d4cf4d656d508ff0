"""The typed result of verify: per record, per signature, and the verdict; rendered as a table or
as a JSON-ready dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RecordResult", "SignatureResult", "VerifyReport"]


@dataclass(frozen=True)
class RecordResult:
    """One replayed warmup record."""

    number: int  # position in the warmup file, from 1
    signature: str
    description: str  # e.g. "record 5 (serving_default, JPEG, PNG, GIF, BMP)"
    rows: int  # images (or examples) in the request
    rows_agreeing: int  # rows whose labels, class ids and keys agree
    max_abs_diff: float  # max |served - reference| over probabilities and scores
    latency_ms: float  # the replayed call, end to end
    failure: str | None  # the first difference or the call's error; None when it holds

    @property
    def passed(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class SignatureResult:
    """All records of one signature."""

    signature: str
    records: int
    rows: int
    rows_agreeing: int
    max_abs_diff: float
    latency_ms_mean: float
    latency_ms_max: float
    passed: bool


@dataclass(frozen=True)
class VerifyReport:
    """What verify found: signatures checked against the artifact, then every record replayed."""

    artifact: str  # the version directory whose warmup records were replayed
    artifact_version: int | None  # its directory name, when numeric
    model: str
    served_version: int | None  # the version GetModelMetadata answered for
    target: str
    atol: float
    signature_problems: tuple[str, ...]
    records: tuple[RecordResult, ...]
    # What a verdict does not say: another version served, reference answers that cannot tell
    # classes apart. They do not fail the run.
    warnings: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.signature_problems and all(r.passed for r in self.records)

    @property
    def max_abs_diff(self) -> float:
        return max((r.max_abs_diff for r in self.records), default=0.0)

    @property
    def signatures(self) -> tuple[SignatureResult, ...]:
        names = sorted({r.signature for r in self.records})
        out = []
        for name in names:
            mine = [r for r in self.records if r.signature == name]
            latencies = [r.latency_ms for r in mine]
            out.append(
                SignatureResult(
                    signature=name,
                    records=len(mine),
                    rows=sum(r.rows for r in mine),
                    rows_agreeing=sum(r.rows_agreeing for r in mine),
                    max_abs_diff=max(r.max_abs_diff for r in mine),
                    latency_ms_mean=sum(latencies) / len(latencies),
                    latency_ms_max=max(latencies),
                    passed=all(r.passed for r in mine),
                )
            )
        return tuple(out)

    @property
    def first_failure(self) -> str | None:
        """One line naming the first problem: a signature difference, else the first bad record."""
        if self.signature_problems:
            return f"signatures differ: {self.signature_problems[0]}"
        for record in self.records:
            if record.failure is not None:
                return f"{record.description}: {record.failure}"
        return None

    def verdict(self) -> str:
        served = f"{self.model} version {self.served_version} at {self.target}"
        if self.passed:
            return (
                f"PASS: {served} reproduces {len(self.records)} reference records of "
                f"{self.artifact} (max |dp| {self.max_abs_diff:.3g} <= atol {self.atol:g})"
            )
        failed = sum(not r.passed for r in self.records)
        problems = len(self.signature_problems)
        return (
            f"FAIL: {served} does not reproduce {self.artifact}: {problems} signature "
            f"difference(s), {failed} of {len(self.records)} records differ; first: "
            f"{self.first_failure}"
        )

    def table(self) -> str:
        header = (
            f"{'signature':<22} {'records':>7} {'images':>6} {'max |dp|':>9} "
            f"{'labels agree':>12} {'mean ms':>8} {'max ms':>8}  result"
        )
        lines = [header]
        for s in self.signatures:
            lines.append(
                f"{s.signature:<22} {s.records:>7} {s.rows:>6} {s.max_abs_diff:>9.2e} "
                f"{f'{s.rows_agreeing}/{s.rows}':>12} {s.latency_ms_mean:>8.1f} "
                f"{s.latency_ms_max:>8.1f}  {'ok' if s.passed else 'FAIL'}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        data["max_abs_diff"] = self.max_abs_diff
        data["first_failure"] = self.first_failure
        data["signatures"] = [asdict(s) for s in self.signatures]
        return data
