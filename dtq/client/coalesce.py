"""Concurrent submits coalesced into `BatchSubmitTasks` calls.

Many application threads each calling `client.submit()` one task at a time
would pay one gRPC call (and one server round) per task. The client queues
them instead, and each caller still gets its own handle or its own error:

- With nothing in flight a submission is sent at once: a lone caller waits for
  no one (no linger timer at all).
- While `in_flight` calls are out, submissions queue up; each call that ends
  sends the next batch of what has queued meanwhile (at most `max_batch` tasks
  and `max_bytes`). Batches grow with the load by themselves: the linger is the
  time the calls in flight take.
- Two submissions with the same (queue, idempotency key) never share a batch,
  so each gets the server's answer to its own request.
- A batch is atomic on the server: an invalid request fails it, naming
  `requests[i]`. That caller gets the error it would have got alone, and the
  others are sent again. A failure that names no request sends each alone.
- A failed call that may be retried (UNAVAILABLE, DEADLINE_EXCEEDED,
  RESOURCE_EXHAUSTED with RetryInfo) is retried whole by the client's retry
  policy with the same requests, hence the same idempotency keys: a reply lost
  after the commit gives back the tasks, never duplicates.

A batch of one goes out as a plain `SubmitTask`. `CoalescingSubmitter` serves
threads; `dtq.client.coalesce_aio.AsyncCoalescingSubmitter` serves asyncio.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import grpc

from dtq.client.errors import DtqClientError, FieldViolation
from dtq.v1 import task_service_pb2 as pb

SendBatch = Callable[[pb.BatchSubmitTasksRequest], pb.BatchSubmitTasksResponse]
SendOne = Callable[[pb.SubmitTaskRequest], pb.SubmitTaskResponse]
Call = pb.BatchSubmitTasksRequest | pb.SubmitTaskRequest
Answer = pb.BatchSubmitTasksResponse | pb.SubmitTaskResponse | DtqClientError
ITEM = re.compile(r"^requests\[(\d+)\]\.?")
# Failures of the call itself, not of a request in it: every caller gets them.
SHARED = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.CANCELLED,
    }
)


def _wrong_reply() -> DtqClientError:
    return DtqClientError(grpc.StatusCode.INTERNAL, "the server's reply does not match the call")


def copied(error: DtqClientError) -> DtqClientError:
    """A copy for each caller: one exception raised in many threads would
    share (and overwrite) its traceback."""
    return type(error)(error.code, error.message, error.reason, error.violations, error.retry_after)


@dataclass(frozen=True)
class Coalescing:
    """How much is coalesced: calls in flight at once, tasks and bytes per call."""

    in_flight: int = 4
    max_batch: int = 128
    max_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.in_flight < 1 or self.max_batch < 1 or self.max_bytes < 1:
            raise ValueError("coalescing limits must be at least 1")


@dataclass(eq=False)
class Pending:
    """One submission waiting for its answer."""

    request: pb.SubmitTaskRequest
    size: int = 0
    key: tuple[str, str] | None = None
    reply: pb.SubmitTaskResponse | None = None
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.size = self.request.ByteSize()
        if self.request.idempotency_key:
            self.key = (self.request.queue, self.request.idempotency_key)

    @property
    def settled(self) -> bool:
        return self.reply is not None or self.error is not None

    def outcome(self) -> pb.SubmitTaskResponse:
        if self.error is not None:
            raise self.error
        assert self.reply is not None, "outcome() before the submission was settled"
        return self.reply


@dataclass
class Batches:
    """Queued submissions and the calls in flight; the caller serialises access."""

    limits: Coalescing = field(default_factory=Coalescing)
    queue: deque[Pending] = field(default_factory=deque)
    flying: int = 0
    calls: int = 0  # batches taken so far (a figure for benchmarks)
    taken: int = 0  # submissions in them

    def take(self) -> list[Pending] | None:
        """The next batch to send (counted in flight), or None: nothing queued,
        or as many calls in flight as allowed."""
        if self.flying >= self.limits.in_flight or not self.queue:
            return None
        batch: list[Pending] = []
        skipped: list[Pending] = []
        keys: set[tuple[str, str]] = set()
        size = 0
        while self.queue and len(batch) < self.limits.max_batch:
            p = self.queue.popleft()
            if p.key in keys or (batch and size + p.size > self.limits.max_bytes):
                skipped.append(p)
                continue
            batch.append(p)
            size += p.size
            if p.key is not None:
                keys.add(p.key)
        self.queue.extendleft(reversed(skipped))
        self.flying += 1
        self.calls += 1
        self.taken += len(batch)
        return batch

    def done(self) -> None:
        """A call taken with `take` ended."""
        self.flying -= 1


def item_error(error: DtqClientError, index: int) -> DtqClientError:
    """The error naming `requests[index]`, as that request alone would have got it."""
    prefix = f"requests[{index}]"
    violations = tuple(
        FieldViolation(ITEM.sub("", v.field), v.description)
        for v in error.violations
        if v.field.startswith(prefix)
    )
    message = ITEM.sub("", error.message) if error.message.startswith(prefix) else error.message
    return type(error)(error.code, message, error.reason, violations, error.retry_after)


def settle_failure(batch: list[Pending], error: DtqClientError) -> tuple[list[Pending], bool]:
    """Give the callers of a failed batch their errors. Returns the submissions
    to send again, and whether to send them one by one (the failure named no
    request, so which one was at fault is unknown)."""
    named = {int(m[1]) for v in error.violations if (m := ITEM.match(v.field))}
    named &= set(range(len(batch)))
    if named:
        for i in named:
            batch[i].error = item_error(error, i)
        return [p for i, p in enumerate(batch) if i not in named], False
    if error.code in SHARED or len(batch) == 1:
        for p in batch:
            p.error = copied(error)
        return [], False
    return batch, True


def deliveries(batch: list[Pending]) -> Generator[Call, Answer, None]:
    """The calls that settle `batch`: yields each request to send and is sent
    back its reply, or the error it failed with (the same for threads and asyncio)."""
    while len(batch) > 1:
        answer = yield pb.BatchSubmitTasksRequest(requests=[p.request for p in batch])
        if isinstance(answer, pb.BatchSubmitTasksResponse) and len(answer.results) == len(batch):
            for p, result in zip(batch, answer.results, strict=True):
                p.reply = result
            return
        if not isinstance(answer, DtqClientError):
            answer = _wrong_reply()
        batch, alone = settle_failure(batch, answer)
        if alone:
            break
    for p in batch:
        answer = yield p.request
        if isinstance(answer, pb.SubmitTaskResponse):
            p.reply = answer
        else:
            p.error = answer if isinstance(answer, DtqClientError) else _wrong_reply()


def settle_rest(batch: list[Pending], error: BaseException) -> None:
    """A failure nothing above handled (a bug, an interrupt): no caller may
    wait for ever, each unsettled one gets the error."""
    if not isinstance(error, Exception):
        error = DtqClientError(grpc.StatusCode.CANCELLED, f"submitting was interrupted: {error!r}")
    for p in batch:
        if not p.settled:
            p.error = error


@dataclass(eq=False)
class _Waiting(Pending):
    ready: threading.Event = field(default_factory=threading.Event)
    # Set (before `ready`) when this caller's thread is to send the next batch.
    batch: list[Pending] | None = None


class CoalescingSubmitter:
    """Coalesces `submit` calls from many threads (see the module's docstring).

    No thread of its own: a batch is sent by the thread of one of its callers,
    which, when its call ends, hands the next batch to the thread of that
    batch's first caller. `send_batch` and `send_one` carry the retries.
    """

    def __init__(self, send_batch: SendBatch, send_one: SendOne, limits: Coalescing | None = None):
        self._send_batch = send_batch
        self._send_one = send_one
        self._batches = Batches(limits or Coalescing())
        self._lock = threading.Lock()

    @property
    def queued(self) -> int:
        """Submissions waiting for a call (not yet sent)."""
        return len(self._batches.queue)

    @property
    def batches(self) -> Batches:
        """The queue and its counts (calls, submissions taken)."""
        return self._batches

    def submit(self, request: pb.SubmitTaskRequest) -> pb.SubmitTaskResponse:
        """Submit one request; returns its own reply or raises its own error."""
        item = _Waiting(request)
        with self._lock:
            self._batches.queue.append(item)
            batch = self._batches.take()
        if batch is None:
            item.ready.wait()
            batch = item.batch
        if batch is not None:
            self._run(batch)
        return item.outcome()

    def _run(self, batch: list[Pending]) -> None:
        try:
            self._deliver(batch)
        except BaseException as error:
            settle_rest(batch, error)
            if not isinstance(error, Exception):
                raise
        finally:
            for p in batch:
                assert isinstance(p, _Waiting)
                p.ready.set()
            with self._lock:
                self._batches.done()
                after = self._batches.take()
            if after is not None:
                head = after[0]
                assert isinstance(head, _Waiting)
                head.batch = after
                head.ready.set()

    def _deliver(self, batch: list[Pending]) -> None:
        steps = deliveries(batch)
        call = next(steps)
        while True:
            answer: Answer
            try:
                if isinstance(call, pb.BatchSubmitTasksRequest):
                    answer = self._send_batch(call)
                else:
                    answer = self._send_one(call)
            except DtqClientError as error:
                answer = error
            try:
                call = steps.send(answer)
            except StopIteration:
                return
