"""Session runs that cannot hold their caller, or a batch thread, past the run's deadline.

TensorFlow ends a Session::Run at its `timeout_in_ms` by cancelling the step, but DirectSession
then waits for every kernel already running to return. A kernel that never polls cancellation (one
long image decode, a blocking read) keeps the Session::Run call, and the thread that made it,
until the kernel is done: measured here, a run with a 0.5 s timeout whose kernel blocked did not
return until the kernel did. So a run with a deadline is made on a thread of its own, and its
caller waits until the deadline (plus a short grace in which TensorFlow's own DEADLINE_EXCEEDED,
"Timed out waiting for notification", still wins). Past that the caller gets DEADLINE_EXCEEDED
and goes; the run is left to finish on its thread ("overdue"), holding its version loaded.

An overdue run still holds at least one thread of TensorFlow's inter-op pool, which every Session
of the process shares (`inter_op_parallelism_threads`; 0: one per CPU). When runs stuck well past
their deadline (STUCK_AFTER_S) could hold all of them, a new run would only queue inside
TensorFlow until its own deadline, so it is refused at once with UNAVAILABLE instead, until one of
them ends. Measured: with both inter-op threads of a 2-CPU process held by blocked kernels, a
third Session::Run with a 1 s timeout had not returned either.

A run without a deadline is made on the caller's thread: its caller asked to wait.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import grpc
import numpy as np

from xception_serving.runtime.errors import ServingError

log = logging.getLogger("xception_serving")

Outputs = dict[str, np.ndarray]
# After the deadline, how long the caller still waits for TensorFlow to end the run itself (it
# cancels a cancellable step within milliseconds) so that TensorFlow's own error is the one sent.
GRACE_S = 0.25
DEADLINE_EXCEEDED = "Deadline Exceeded"  # gRPC's wording, as for a deadline missed in a queue
# An overdue run counts against the inter-op threads only once it is this far past its deadline:
# a run that is merely slow ends within one kernel of its cancellation (a whole Xception run takes
# 0.1-0.5 s on CPU here), so only a kernel that ignores cancellation lasts this long.
STUCK_AFTER_S = 2.0


class _Servable(Protocol):
    name: str
    version: int

    def acquire(self) -> None: ...

    def release(self) -> None: ...

    def run(
        self, key: str, inputs: Mapping[str, np.ndarray], deadline: float | None = None
    ) -> Outputs: ...


def default_inter_op_threads() -> int:
    """TensorFlow's inter-op pool size for `inter_op_parallelism_threads: 0` (MaxParallelism:
    the CPUs this process may run on)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def inter_op_busy_message(stuck: int, threads: int, stuck_after_s: float = STUCK_AFTER_S) -> str:
    return (
        f"{stuck} Session runs more than {stuck_after_s:g} s past their deadline are still "
        f"executing and may hold all {threads} of TensorFlow's inter-op threads; try again later"
    )


@dataclass(eq=False)
class _Call:
    deadline: float
    outputs: Outputs | None = None
    error: BaseException | None = None
    finished: bool = False
    overdue: bool = False


class SessionRuns:
    """Makes Session runs with a deadline on their own threads and counts the overdue ones."""

    def __init__(self, inter_op_threads: int = 0, stuck_after_s: float = STUCK_AFTER_S) -> None:
        self.inter_op_threads = inter_op_threads or default_inter_op_threads()
        self.stuck_after_s = stuck_after_s
        self._lock = threading.Lock()
        self._overdue: set[_Call] = set()
        self._running = 0

    @property
    def running(self) -> int:
        """Runs with a deadline on their own threads now, overdue ones included."""
        with self._lock:
            return self._running

    @property
    def overdue(self) -> int:
        """Runs whose caller has gone with DEADLINE_EXCEEDED and that TensorFlow has not ended."""
        with self._lock:
            return len(self._overdue)

    def run(
        self,
        servable: _Servable,
        key: str,
        inputs: Mapping[str, np.ndarray],
        deadline: float | None,
    ) -> Outputs:
        if deadline is None:
            return servable.run(key, inputs, None)
        with self._lock:
            now = time.monotonic()
            stuck = sum(now - c.deadline > self.stuck_after_s for c in self._overdue)
            if stuck >= self.inter_op_threads:
                raise ServingError(
                    grpc.StatusCode.UNAVAILABLE,
                    inter_op_busy_message(stuck, self.inter_op_threads, self.stuck_after_s),
                )
            self._running += 1
        call = _Call(deadline)
        done = threading.Event()
        started = time.monotonic()
        servable.acquire()  # an overdue run keeps its version (and Session) from unloading

        def body() -> None:
            try:
                call.outputs = servable.run(key, inputs, deadline)
            except BaseException as err:  # handed to the caller's thread
                call.error = err
            finally:
                self._finished(call, servable, key, started)
                done.set()
                servable.release()

        thread = threading.Thread(target=body, name=f"session-run-{servable.name}", daemon=True)
        thread.start()
        if not done.wait(max(0.0, deadline - time.monotonic()) + GRACE_S):
            with self._lock:
                if not call.finished:
                    call.overdue = True
                    self._overdue.add(call)
            if call.overdue:
                log.warning(
                    "Session run of %s version %d signature %s is past its deadline and still "
                    "executing (a kernel that does not stop when cancelled); its caller got "
                    "DEADLINE_EXCEEDED",
                    servable.name,
                    servable.version,
                    key,
                )
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, DEADLINE_EXCEEDED)
            done.wait()  # finished just now: its answer is being handed over
        if call.error is not None:
            raise call.error
        assert call.outputs is not None
        return call.outputs

    def _finished(self, call: _Call, servable: _Servable, key: str, started: float) -> None:
        with self._lock:
            call.finished = True
            self._running -= 1
            self._overdue.discard(call)
        if call.overdue:
            log.warning(
                "Overdue Session run of %s version %d signature %s ended after %.1f s",
                servable.name,
                servable.version,
                key,
                time.monotonic() - started,
            )
