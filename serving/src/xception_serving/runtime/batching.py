"""Dynamic batching as TF Serving's `--enable_batching` (BatchingSession + SharedBatchScheduler).

Requests to the same version, signature and input keys join one queue. A queue's oldest batch is
processed when it is full, or when `batch_timeout_micros` has passed since it opened and a batch
thread is free (with timeout 0 that is "as soon as a thread is free", so requests merge while all
`num_batch_threads` are busy). Inputs are concatenated along dimension 0, padded to the next
`allowed_batch_sizes` entry, run once, and the outputs are split back per caller.

Isolation: if a merged run fails (one caller sent a bad image, or shapes do not concatenate), each
member is re-run alone, so only the bad request gets an error. TF Serving itself would fail every
member of the batch; this server isolates the bad one on purpose, and a caller's successful
answer is the same either way.

Deadlines, as batching_session.cc's ProcessBatch: a merged run serves several callers, so it gets
the latest of their deadlines (none if any caller has none), not each caller's own; a caller whose
deadline passes stops waiting with DEADLINE_EXCEEDED while the batch goes on for the others, and a
batch whose callers have all given up is not run. A run that times out fails every member: its
deadline was the last of theirs, so none is re-run alone. A run TensorFlow cannot stop at that
deadline (a kernel that ignores cancellation) gives its batch thread back at the deadline anyway
(`session_runs.py`), so the batches queued behind it run; TF Serving's batch thread would stay in
Session::Run until the kernel returned, and its queued callers with it.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import numpy as np

from xception_serving.observability.metrics import Metrics
from xception_serving.runtime.errors import ServingError, from_exception

if TYPE_CHECKING:  # keep this module importable without TensorFlow
    from xception_serving.config.files import BatchingParameters
    from xception_serving.runtime.servable import Servable

Outputs = dict[str, np.ndarray]
# (servable, signature, inputs, deadline) -> outputs: one Session run, ended by TensorFlow at the
# deadline (time.monotonic(); None: no deadline).
RunFn = Callable[["Servable", str, Mapping[str, np.ndarray], "float | None"], Outputs]

THREAD_POOL_NAME = "model_server_batch_threads"


@dataclass(frozen=True)
class BatchingOptions:
    max_batch_size: int = 1000
    batch_timeout_s: float = 0.0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    allowed_batch_sizes: tuple[int, ...] = ()

    @classmethod
    def from_proto(cls, params: BatchingParameters) -> BatchingOptions:
        def value(name: str, default: int) -> int:
            return int(getattr(params, name).value) if params.HasField(name) else default

        return cls(
            max_batch_size=value("max_batch_size", 1000),
            batch_timeout_s=value("batch_timeout_micros", 0) / 1e6,
            max_enqueued_batches=value("max_enqueued_batches", 10),
            num_batch_threads=value("num_batch_threads", os.cpu_count() or 1),
            allowed_batch_sizes=tuple(int(s) for s in params.allowed_batch_sizes),
        )


@dataclass(eq=False)
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    enqueued: float
    deadline: float | None  # the caller's, time.monotonic()
    done: threading.Event = field(default_factory=threading.Event)
    outputs: Outputs | None = None
    error: ServingError | None = None
    cancelled: bool = False


@dataclass(eq=False)
class _Batch:
    opened: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    closed: bool = False


@dataclass(eq=False)
class _Queue:
    servable: Servable
    signature: str
    batches: deque[_Batch] = field(default_factory=deque)


def _latest(tasks: list[_Task]) -> float | None:
    """The deadline of a run serving `tasks`: the latest of theirs, None if any has none."""
    deadlines = [task.deadline for task in tasks]
    return None if None in deadlines else max(d for d in deadlines if d is not None)


class BatchScheduler:
    """Shared batch scheduler: one pool of batch threads over per-signature queues."""

    def __init__(self, options: BatchingOptions, metrics: Metrics, run: RunFn) -> None:
        self.options = options
        self._metrics = metrics
        self._run = run
        self._cond = threading.Condition()
        self._queues: dict[tuple[int, str, tuple[str, ...]], _Queue] = {}
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch-{i}", daemon=True)
            for i in range(max(1, options.num_batch_threads))
        ]
        for thread in self._threads:
            thread.start()

    # -- callers ---------------------------------------------------------------------------------
    def run(
        self,
        servable: Servable,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        *,
        deadline: float | None = None,
    ) -> Outputs:
        if not inputs:
            return self._run_counted(servable, signature, inputs, deadline)
        sizes = set()
        for array in inputs.values():
            if array.ndim == 0:
                raise ServingError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "Batching Run() input tensors must have at least one dimension",
                )
            sizes.add(array.shape[0])
        if len(sizes) != 1:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "Batching Run() input tensors must have equal 0th-dimension size",
            )
        size = sizes.pop()
        limit = self.options.max_batch_size
        if size > limit:
            raise ServingError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Task size {size} is larger than maximum input batch size {limit}",
            )
        task = _Task(inputs=inputs, size=size, enqueued=time.monotonic(), deadline=deadline)
        self._enqueue(servable, signature, task)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not task.done.wait(timeout):
            task.cancelled = True
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def _enqueue(self, servable: Servable, signature: str, task: _Task) -> None:
        key = (id(servable), signature, tuple(sorted(task.inputs)))
        with self._cond:
            if self._stopping:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "Server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(servable=servable, signature=signature)
            batch = queue.batches[-1] if queue.batches else None
            if (
                batch is None
                or batch.closed
                or batch.size + task.size > self.options.max_batch_size
            ):
                if batch is not None:
                    batch.closed = True
                if len(queue.batches) >= self.options.max_enqueued_batches:
                    raise ServingError(
                        grpc.StatusCode.UNAVAILABLE,
                        "The batch scheduling queue to which this task was submitted is full",
                    )
                batch = _Batch(opened=task.enqueued)
                queue.batches.append(batch)
            batch.tasks.append(task)
            batch.size += task.size
            if batch.size >= self.options.max_batch_size:
                batch.closed = True
            self._cond.notify()

    # -- batch threads ---------------------------------------------------------------------------
    def _next_batch(self) -> tuple[_Queue, _Batch] | None:
        """The ready batch that opened first, or None after stop. Call with the lock held."""
        timeout_s = self.options.batch_timeout_s
        while True:
            now = time.monotonic()
            best: tuple[_Queue, _Batch] | None = None
            next_due: float | None = None
            for queue in self._queues.values():
                if not queue.batches:
                    continue
                batch = queue.batches[0]
                due = batch.opened + timeout_s
                if batch.closed or due <= now or self._stopping:
                    if best is None or batch.opened < best[1].opened:
                        best = (queue, batch)
                elif next_due is None or due < next_due:
                    next_due = due
            if best is not None:
                queue, batch = best
                queue.batches.popleft()
                batch.closed = True
                if not queue.batches:
                    for key, value in list(self._queues.items()):
                        if value is queue:
                            del self._queues[key]
                return best
            if self._stopping:
                return None
            self._cond.wait(None if next_due is None else max(0.0, next_due - now))

    def _worker(self) -> None:
        while True:
            with self._cond:
                picked = self._next_batch()
            if picked is None:
                return
            queue, batch = picked
            self._process(queue, batch)

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        now = time.monotonic()
        tasks = [t for t in batch.tasks if not t.cancelled]
        for task in tasks:
            self._metrics.queuing_latency.observe((now - task.enqueued) * 1e6, THREAD_POOL_NAME)
        if not tasks:
            return
        try:
            self._run_merged(queue, tasks)
        except Exception as err:
            error = from_exception(err)
            # Past the deadline, or no inter-op thread left (session_runs.py): alone, each member
            # would fail the same way.
            if len(tasks) == 1 or error.code in (
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.UNAVAILABLE,
            ):
                for task in tasks:
                    task.error = error
            else:
                # One member's bad input must not fail the others: re-run each alone.
                for task in tasks:
                    try:
                        self._run_merged(queue, [task])
                    except Exception as single_err:
                        task.error = from_exception(single_err)
        finally:
            for task in tasks:
                task.done.set()

    def _padded_size(self, size: int) -> int:
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= size:
                return allowed
        return size

    def _run_merged(self, queue: _Queue, tasks: list[_Task]) -> None:
        total = sum(t.size for t in tasks)
        padded = self._padded_size(total)
        aliases = list(tasks[0].inputs)
        merged: dict[str, np.ndarray] = {}
        for alias in aliases:
            parts = [t.inputs[alias] for t in tasks]
            if padded > total:
                filler = np.repeat(parts[0][:1], padded - total, axis=0)
                parts.append(filler)
            merged[alias] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        name = queue.servable.name
        self._metrics.input_batch_size.observe(total, name, queue.signature)
        self._metrics.processed_batch_size.observe(padded, name, queue.signature)
        outputs = self._run_counted(queue.servable, queue.signature, merged, _latest(tasks))
        for alias, array in outputs.items():
            if array.ndim == 0:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"Batched output tensor has 0 dimensions (output {alias})",
                )
            if array.shape[0] != padded:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                    "dimension sizes of the input tensors",
                )
        offset = 0
        for task in tasks:
            end = offset + task.size
            task.outputs = {alias: array[offset:end] for alias, array in outputs.items()}
            offset = end

    def _run_counted(
        self,
        servable: Servable,
        signature: str,
        inputs: Mapping[str, np.ndarray],
        deadline: float | None,
    ) -> Outputs:
        self._metrics.wrapped_run_count.inc()
        return self._run(servable, signature, inputs, deadline)

    # -- lifecycle -------------------------------------------------------------------------------
    def stop(self, timeout: float = 30.0) -> None:
        """Finish every queued batch, then stop the batch threads."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
