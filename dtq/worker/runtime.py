"""The worker's connection to the API: one long-lived LeaseTasks stream.

- Leases are pushed by the server; the worker never polls.
- Outcomes are kept until the server acknowledges them, and sent again after a
  reconnect, so a broken stream loses no result. Leases of running tasks and of
  unacknowledged outcomes are listed in heartbeats (and in `open.held` after a
  reconnect), so they stay valid while the worker is alive.
- Heartbeats run on the main event loop, apart from the handlers.
- On SIGTERM: capacity 0 (no new leases; one the server sent before it read
  that is handed back unstarted), running tasks get the grace period;
  the ones still running then are interrupted and their leases handed back
  (`releases`: PENDING again at once, the attempt not counted), outcomes are
  flushed, then the worker exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
from dataclasses import dataclass, field
from typing import Any

import grpc

from dtq import metrics
from dtq.client import bearer, channels
from dtq.ops_http import HealthBoard
from dtq.v1 import task_pb2, worker_service_pb2_grpc
from dtq.v1 import worker_service_pb2 as pb
from dtq.version import __version__
from dtq.worker import decoding
from dtq.worker.children import Children
from dtq.worker.execution import Execution, Executor

log = logging.getLogger(__name__)
FLUSH_SECONDS = 5.0  # after the grace period, to deliver the last outcomes
OUTCOME_LINGER = 0.002  # seconds an outcome waits for others to share its message
RESEND_SECONDS = 1.0  # an outcome the server could not record is sent again after this
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION.value[0]
# Registration answers that no retry can change.
REFUSED = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
)
CHANNEL_OPTIONS = channels.OPTIONS  # reconnect within 2 s of a server's return, keepalives

LEASE_TASKS = "/dtq.v1.WorkerService/LeaseTasks"
Call = grpc.aio.StreamStreamCall[pb.LeaseTasksRequest, decoding.Received]
LeaseTasks = grpc.aio.StreamStreamMultiCallable[pb.LeaseTasksRequest, decoding.Received]


def _now() -> float:
    return asyncio.get_running_loop().time()


def channel_target(address: str) -> tuple[str, list[tuple[str, object]]]:
    """`a:1,b:2` spreads streams over several servers (round robin)."""
    if "," in address:
        return f"ipv4:{address}", [("grpc.lb_policy_name", "round_robin")]
    return address, []


def _channel(
    target: str, credentials: grpc.ChannelCredentials | None, **kwargs: Any
) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(target, **kwargs)
    return grpc.aio.secure_channel(target, credentials, **kwargs)


@dataclass
class WorkerConfig:
    server_address: str
    queues: list[str]
    concurrency: int
    worker_id: str = ""
    # Leases held beyond `concurrency`, waiting for a free slot: the next task
    # is already here when one ends (short tasks), at the price of holding
    # tasks another worker might have started sooner (long tasks: keep 0).
    prefetch: int = 0
    shutdown_grace: float = 30.0
    labels: dict[str, str] = field(default_factory=dict)
    metrics_address: str = ""  # host:port of this process's /metrics, told at registration
    api_key: str | None = field(default=None, repr=False)  # sent on every call
    credentials: grpc.ChannelCredentials | None = None  # TLS; None: plaintext


class Worker:
    """Registers, holds the lease stream, runs handlers, reports outcomes."""

    def __init__(self, config: WorkerConfig, executor: Executor, board: HealthBoard) -> None:
        self.config = config
        self.executor = executor
        self.board = board
        self.worker_id = config.worker_id
        self.heartbeat_interval = 10.0
        self.running: dict[str, Execution] = {}
        self.unacked: dict[str, pb.TaskOutcome] = {}
        self._outbox: asyncio.Queue[pb.LeaseTasksRequest | None] = asyncio.Queue()
        self._deadline = float("inf")
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()  # no handler running
        self._idle.set()
        self._flushed = asyncio.Event()  # every outcome acknowledged
        self._flushed.set()
        self._connected = False
        self._slots = asyncio.Semaphore(config.concurrency)

    @property
    def task_types(self) -> list[str]:
        return sorted(self.executor.app.handlers)

    def stop(self) -> None:
        if not self._stopping.is_set():
            loop = asyncio.get_running_loop()
            self._deadline = loop.time() + self.config.shutdown_grace + FLUSH_SECONDS
            self._stopping.set()

    def _finished(self) -> bool:
        return not self.running and not self.unacked

    def _past_deadline(self) -> bool:
        return asyncio.get_running_loop().time() > self._deadline

    async def run(self) -> int:
        metrics.worker_slots.set(self.config.concurrency)
        try:
            await self.executor.pool.started()  # no lease before a slot can run it
        except Exception as error:
            raise SystemExit(f"the handler processes did not start: {error}") from None
        target, options = channel_target(self.config.server_address)
        async with _channel(
            target,
            self.config.credentials,
            options=CHANNEL_OPTIONS + options,
            interceptors=bearer.async_interceptors(self.config.api_key),
        ) as channel:
            stub = worker_service_pb2_grpc.WorkerServiceStub(channel)
            self.executor.children = Children(stub)  # ctx.submit, on this channel
            if not await self._register(stub):
                return 0
            # The stub's own deserializer would turn a message that does not
            # decode into None, losing every lease in it (and then the worker).
            lease_tasks: LeaseTasks = channel.stream_stream(
                LEASE_TASKS,
                request_serializer=pb.LeaseTasksRequest.SerializeToString,
                response_deserializer=decoding.decode,
            )
            backoff = 0.1
            while True:
                try:
                    await self._session(lease_tasks)
                    backoff = 0.1
                except grpc.aio.AioRpcError as error:
                    log.warning(
                        "stream_broken",
                        extra={"code": error.code().name, "retry_in": round(backoff, 2)},
                    )
                self._set_connected(False)
                if self._stopping.is_set() and (self._finished() or self._past_deadline()):
                    break
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)
        log.info(
            "worker_stopped", extra={"worker_id": self.worker_id, "unfinished": len(self.running)}
        )
        return 0

    # -- registration ------------------------------------------------------------

    async def _register(self, stub: worker_service_pb2_grpc.WorkerServiceAsyncStub) -> bool:
        request = pb.RegisterWorkerRequest(
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.config.queues,
            task_types=self.task_types,
            concurrency=self.config.concurrency,
            version=__version__,
            labels=self.config.labels,
            metrics_address=self.config.metrics_address,
        )
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                reply = await stub.RegisterWorker(request, timeout=10)
            except grpc.aio.AioRpcError as error:
                if error.code() in REFUSED:
                    raise SystemExit(f"registration refused: {error.details()}") from None
                log.warning(
                    "register_failed", extra={"code": error.code().name, "retry_in": backoff}
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self.worker_id = reply.worker_id
            interval = reply.heartbeat_interval
            self.heartbeat_interval = (interval.seconds + interval.nanos / 1e9) or 10.0
            log.info(
                "worker_registered",
                extra={
                    "worker_id": self.worker_id,
                    "types": self.task_types,
                    "metrics": self.config.metrics_address,
                },
            )
            return True
        return False

    # -- one stream ---------------------------------------------------------------

    async def _session(self, lease_tasks: LeaseTasks) -> None:
        call = lease_tasks()
        held = self._held()
        capacity = 0 if self._stopping.is_set() else self.config.concurrency + self.config.prefetch
        opening = pb.StreamOpen(
            worker_id=self.worker_id,
            queues=self.config.queues,
            task_types=self.task_types,
            capacity=max(capacity, 1),
            held=held,
        )
        first = pb.LeaseTasksRequest(open=opening, outcomes=list(self.unacked.values()))
        if capacity == 0:
            first.capacity = 0
        await call.write(first)
        self._set_connected(True)
        tasks = [
            asyncio.create_task(self._write(call)),
            asyncio.create_task(self._heartbeats()),
            asyncio.create_task(self._watch_stop()),
        ]
        try:
            async for response in call:
                if self._handle(response):
                    break
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            call.cancel()

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        metrics.worker_connected.set(int(connected))
        self.board.set("server", connected, self.config.server_address)
        if connected:
            log.info(
                "worker_connected",
                extra={"worker_id": self.worker_id, "server": self.config.server_address},
            )

    async def _write(self, call: Call) -> None:
        while True:
            message = await self._outbox.get()
            if message is None:
                await call.done_writing()  # the server then ends the stream
                return
            if message.outcomes and self.running:
                # Other tasks may end within a moment: one message (one
                # commit, one ack) for all of them instead of one each.
                await asyncio.sleep(OUTCOME_LINGER)
            while not self._outbox.empty():  # fold waiting messages into one
                nxt = self._outbox.get_nowait()
                if nxt is None:
                    self._outbox.put_nowait(None)
                    break
                message.MergeFrom(nxt)
            await call.write(message)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            # Holding nothing, an empty message: the server still hears from us.
            self._outbox.put_nowait(pb.LeaseTasksRequest(heartbeats=self._held()))

    def _held(self) -> list[pb.LeaseRef]:
        """The leases of running tasks and of outcomes not yet acknowledged."""
        refs = [e.ref() for e in self.running.values()]
        refs += [
            pb.LeaseRef(task_id=o.task_id, lease_token=o.lease_token) for o in self.unacked.values()
        ]
        return refs

    async def _watch_stop(self) -> None:
        await self._stopping.wait()
        self._outbox.put_nowait(pb.LeaseTasksRequest(capacity=0))
        log.info(
            "worker_draining",
            extra={"running": len(self.running), "grace": self.config.shutdown_grace},
        )
        self._hand_back(waiting_only=True)  # prefetched, never started: back at once
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), self._deadline - FLUSH_SECONDS - _now())
        self._hand_back()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._flushed.wait(), max(0.0, self._deadline - _now()))
        # Name what we still hold before closing our side: the server takes
        # back at once every lease not named (ones still on their way to us).
        self._outbox.put_nowait(pb.LeaseTasksRequest(heartbeats=self._held(), goodbye=True))
        self._outbox.put_nowait(None)

    def _hand_back(self, waiting_only: bool = False) -> None:
        """Grace is over: interrupt what still runs and give its leases back
        (`waiting_only`: just the prefetched leases no slot has taken yet)."""
        refs = []
        for execution in list(self.running.values()):
            if waiting_only and execution.started:
                continue
            log.warning("task_released", extra={"task_id": execution.task_id})
            self._abandon(execution)
            self.running.pop(execution.task_id, None)
            refs.append(execution.ref())
        if refs:
            self._outbox.put_nowait(pb.LeaseTasksRequest(releases=refs))
        self._update_idle()

    def _resend(self, task_id: str) -> None:
        outcome = self.unacked.get(task_id)
        if outcome is not None and self._connected:  # else the next stream's open carries it
            self._outbox.put_nowait(pb.LeaseTasksRequest(outcomes=[outcome]))

    # -- messages from the server ----------------------------------------------

    def _handle(self, received: decoding.Received) -> bool:
        """Act on one server message; True when the stream should be left."""
        response = received.response
        for lease in response.leases:
            self._start(lease)
        for bad in received.undecodable:
            self._undecodable(bad)
        for ack in response.acks:
            outcome = self.unacked.pop(ack.task_id, None)
            if ack.status.code and ack.status.code != FAILED_PRECONDITION and outcome is not None:
                # Not recorded (PostgreSQL unreachable...): send it again soon,
                # on this stream or the next. Heartbeats keep its lease alive.
                self.unacked[ack.task_id] = outcome
                asyncio.get_running_loop().call_later(RESEND_SECONDS, self._resend, ack.task_id)
                log.warning(
                    "outcome_not_recorded", extra={"task_id": ack.task_id, "code": ack.status.code}
                )
            elif ack.status.code == FAILED_PRECONDITION:
                log.warning("outcome_refused", extra={"task_id": ack.task_id})
        for revocation in response.revocations:
            self._revoke(revocation.task_id, revocation.reason)
        self._update_idle()
        if response.draining:
            log.info("server_draining", extra={"worker_id": self.worker_id})
            return True
        return False

    def _undecodable(self, bad: decoding.Undecodable) -> None:
        """A lease this worker cannot read: fail its task (permanently: no
        worker could read it) rather than let it expire and come back."""
        log.error("lease_undecodable", extra={"task_id": bad.task_id, "reason": bad.reason})
        if not bad.task_id:
            return  # nothing to name: the lease expires
        error = task_pb2.TaskError(
            message=f"the worker could not decode the lease: {bad.reason}",
            type="UndecodableLease",
            permanent=True,
        )
        outcome = pb.TaskOutcome(task_id=bad.task_id, lease_token=bad.lease_token, error=error)
        self.unacked[bad.task_id] = outcome
        self._outbox.put_nowait(pb.LeaseTasksRequest(outcomes=[outcome]))

    def _start(self, lease: pb.Lease) -> None:
        if self._stopping.is_set():
            # Sent before the server read our capacity 0: give it back at
            # once rather than start it while shutting down.
            log.info("lease_handed_back", extra={"task_id": lease.task.id})
            ref = pb.LeaseRef(task_id=lease.task.id, lease_token=lease.lease_token)
            self._outbox.put_nowait(pb.LeaseTasksRequest(releases=[ref]))
            return
        execution = self.executor.start(lease)
        self.running[execution.task_id] = execution
        execution.future = asyncio.ensure_future(self._execute(execution))

    async def _execute(self, execution: Execution) -> None:
        try:
            async with self._slots:  # a prefetched lease waits here, its timeout not started
                execution.started = True
                outcome = await self.executor.run(execution)
        except asyncio.CancelledError:
            outcome = None
        self.running.pop(execution.task_id, None)
        if outcome is not None and not execution.abandoned:
            self.unacked[execution.task_id] = outcome
            self._outbox.put_nowait(pb.LeaseTasksRequest(outcomes=[outcome]))
        self._update_idle()

    def _revoke(self, task_id: str, reason: pb.Revocation.Reason.ValueType) -> None:
        execution = self.running.get(task_id)
        self.unacked.pop(task_id, None)
        if execution is None:
            return
        self._abandon(execution)
        log.info(
            "lease_revoked", extra={"task_id": task_id, "reason": pb.Revocation.Reason.Name(reason)}
        )

    @staticmethod
    def _abandon(execution: Execution) -> None:
        """Stop a handler whose outcome nobody wants any more."""
        execution.abandoned = True
        execution.context.cancelled.set()
        if execution.future:
            execution.future.cancel()  # interrupts the handler (thread) or kills it (process)

    def _update_idle(self) -> None:
        metrics.worker_leases.set(len(self.running))
        for event, busy in ((self._idle, self.running), (self._flushed, self.unacked)):
            if busy:
                event.clear()
            else:
                event.set()
