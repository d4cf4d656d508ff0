"""Version policy and AvailabilityPreservingPolicy as pure decisions (no file system, no TensorFlow
Session): which versions a model aspires to, and which single load or unload comes next."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from xception_serving.runtime.errors import ServingError
from xception_serving.runtime.version_policy import (
    ModelConfig,
    State,
    TrackedVersion,
    aspired_versions,
    mark_aspired,
    next_transition,
)

ON_DISK = {n: Path(f"/models/m/{n}") for n in (1, 2, 3, 5)}


def _config(policy: str) -> ModelConfig:
    return text_format.Parse(f'name: "m" base_path: "/models/m" {policy}', ModelConfig())


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("", {5}),
        ("model_version_policy { latest { num_versions: 2 } }", {3, 5}),
        ("model_version_policy { all {} }", {1, 2, 3, 5}),
        ("model_version_policy { specific { versions: 2 versions: 4 } }", {2}),
    ],
)
def test_the_version_policy_picks_the_aspired_versions_among_those_on_disk(
    policy: str, expected: set[int]
) -> None:
    assert aspired_versions(_config(policy), ON_DISK) == expected


def _tracked(version: int, state: int, aspired: bool = True) -> TrackedVersion:
    return TrackedVersion(
        version=version, path=ON_DISK.get(version, Path("/x")), state=state, aspired=aspired
    )


def test_a_new_version_loads_before_the_old_one_unloads() -> None:
    old, new = _tracked(1, State.AVAILABLE, aspired=False), _tracked(2, State.START)
    assert next_transition([old, new]) == (None, new)


def test_the_old_version_unloads_once_the_new_one_serves() -> None:
    old, new = _tracked(1, State.AVAILABLE, aspired=False), _tracked(2, State.AVAILABLE)
    assert next_transition([old, new]) == (old, None)


def test_a_version_that_failed_to_load_never_displaces_the_one_serving() -> None:
    old = _tracked(1, State.AVAILABLE, aspired=False)
    failed = _tracked(2, State.END)
    failed.error = ServingError(grpc.StatusCode.UNKNOWN, "load failed")
    assert next_transition([old, failed]) == (None, None)


def test_with_nothing_aspired_the_lowest_serving_version_unloads_first() -> None:
    one, two = _tracked(1, State.AVAILABLE, False), _tracked(2, State.AVAILABLE, False)
    assert next_transition([two, one]) == (one, None)


def test_of_several_new_versions_the_highest_loads_first_and_unaspired_ones_never_start() -> None:
    low, high, dropped = (
        _tracked(2, State.START),
        _tracked(3, State.START),
        _tracked(4, State.START, False),
    )
    assert next_transition([low, high, dropped]) == (None, high)
    assert dropped.state == State.END


def test_a_failed_version_is_retried_only_after_it_left_the_aspired_set() -> None:
    versions = {2: _tracked(2, State.END)}
    versions[2].error = ServingError(grpc.StatusCode.UNKNOWN, "load failed")
    mark_aspired(versions, {2}, ON_DISK)
    assert versions[2].error is not None  # still aspired: not tracked anew
    mark_aspired(versions, set(), ON_DISK)
    assert versions[2].retry_allowed and not versions[2].aspired
    mark_aspired(versions, {2}, ON_DISK)
    assert versions[2].state == State.START and versions[2].error is None
