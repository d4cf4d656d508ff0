"""Which versions a model aspires to, and the next load or unload: TF Serving's version policies.

- ``aspired_versions`` is the model's ``model_version_policy`` over the versions on disk (latest N,
  all, or specific), as ``ServableStateMonitor``'s source router applies it.
- ``next_transition`` is ``AvailabilityPreservingPolicy`` (core/availability_preserving_policy.cc):
  an un-aspired version is unloaded only when no version is aspired, an aspired one is serving, or
  another un-aspired one is serving; otherwise the highest new aspired version is loaded first. So a
  new version takes traffic before the old one goes, and a version that fails to load never
  displaces the one serving.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from xception_serving.runtime.errors import ServingError

if TYPE_CHECKING:
    from xception_serving.runtime.servable import Servable

log = logging.getLogger("xception_serving")

State = get_model_status_pb2.ModelVersionStatus.State
# tensorflow-serving-api ships no stubs, so this alias is Any to mypy; it names the message.
ModelConfig: TypeAlias = model_server_config_pb2.ModelConfig


@dataclass
class TrackedVersion:
    """One version of a model as the manager tracks it, from first sight on disk to unloaded."""

    version: int
    path: Path
    state: int = State.START
    error: ServingError | None = None
    servable: Servable | None = None
    aspired: bool = True
    # A failed version is not retried while it stays aspired (as TF Serving); once it leaves the
    # aspired set (directory removed) it may be loaded again if it comes back.
    retry_allowed: bool = False


def aspired_versions(config: ModelConfig, available: dict[int, Path]) -> set[int]:
    """The versions `config`'s version policy wants served, of those on disk."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(available)
    if kind == "specific":
        wanted = set(policy.specific.versions)
        for missing in sorted(wanted - set(available)):
            log.warning(
                "Version %d of servable %s, which was requested to be served as a 'specific' "
                "version in the servable's version policy, was not found in the file system",
                missing,
                config.name,
            )
        return wanted & set(available)
    count = max(1, policy.latest.num_versions) if kind == "latest" else 1
    return set(sorted(available, reverse=True)[:count])


def mark_aspired(
    versions: dict[int, TrackedVersion], aspired: set[int], on_disk: dict[int, Path]
) -> None:
    """Record a poll's aspired set: flags flip, and new (or retryable) versions start tracking."""
    for version, tracked in versions.items():
        now_aspired = version in aspired
        if tracked.aspired and not now_aspired and tracked.error is not None:
            tracked.retry_allowed = True
        tracked.aspired = now_aspired
    for version in aspired:
        existing = versions.get(version)
        if existing is None or (
            existing.state == State.END and (existing.error is None or existing.retry_allowed)
        ):
            versions[version] = TrackedVersion(version=version, path=on_disk[version])


def next_transition(
    versions: Sequence[TrackedVersion],
) -> tuple[TrackedVersion | None, TrackedVersion | None]:
    """(version to unload, version to load): at most one is set; (None, None) when settled.

    Versions that are neither aspired nor loaded never start: they move to END here.
    """
    has_aspired = any(v.aspired for v in versions)
    has_aspired_serving = any(v.aspired and v.state == State.AVAILABLE for v in versions)
    unaspired_serving = [v for v in versions if not v.aspired and v.state == State.AVAILABLE]
    for v in versions:
        if not v.aspired and v.state == State.START:
            v.state = State.END
    if unaspired_serving and (not has_aspired or has_aspired_serving or len(unaspired_serving) > 1):
        return min(unaspired_serving, key=lambda v: v.version), None
    new = [v for v in versions if v.aspired and v.state == State.START]
    return None, (max(new, key=lambda v: v.version) if new else None)
