"""TaskService: validate and convert, call one use case, convert back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from dtq import tracing
from dtq.api import convert, convert_flows
from dtq.api.errors import streaming, unary
from dtq.app.tasks import Tasks
from dtq.v1 import task_service_pb2 as pb
from dtq.v1 import task_service_pb2_grpc

Ctx = grpc.aio.ServicerContext[Any, Any]


def _submitted(s: Any) -> pb.SubmitTaskResponse:
    return pb.SubmitTaskResponse(task=convert.task(s.task), deduplicated=s.deduplicated)


class TaskServicer(task_service_pb2_grpc.TaskServiceServicer):
    def __init__(self, tasks: Tasks) -> None:
        self.tasks = tasks

    @unary
    async def SubmitTask(
        self, request: pb.SubmitTaskRequest, context: Ctx
    ) -> pb.SubmitTaskResponse:
        (submitted,) = await self.tasks.submit([convert.submit_spec(request, tracing.carrier())])
        return _submitted(submitted)

    @unary
    async def BatchSubmitTasks(
        self, request: pb.BatchSubmitTasksRequest, context: Ctx
    ) -> pb.BatchSubmitTasksResponse:
        trace_context = tracing.carrier()
        specs = [convert.submit_spec(r, trace_context) for r in request.requests]
        submitted = await self.tasks.submit(specs, batch=True)
        return pb.BatchSubmitTasksResponse(results=[_submitted(s) for s in submitted])

    @unary
    async def SubmitGroup(
        self, request: pb.SubmitGroupRequest, context: Ctx
    ) -> pb.SubmitGroupResponse:
        trace_context = tracing.carrier()
        specs = [convert.submit_spec(r, trace_context) for r in request.tasks]
        callback = convert.submit_spec(request.callback, trace_context)
        tasks, waiting = await self.tasks.submit_group(specs, callback)
        return pb.SubmitGroupResponse(
            group_id=str(waiting.callback_of),
            tasks=[convert.task(t, full=False) for t in tasks],
            callback=convert.task(waiting, full=False),
        )

    @unary
    async def GetTask(self, request: pb.GetTaskRequest, context: Ctx) -> pb.GetTaskResponse:
        full = convert.full_view(request.view, default=True)
        if not full:
            task = await self.tasks.get(convert.task_id(request.id), full)
            return pb.GetTaskResponse(task=convert.task(task, full))
        task, family = await self.tasks.get_with_family(convert.task_id(request.id))
        msg = convert.task(task)
        convert_flows.family(msg, family)
        return pb.GetTaskResponse(task=msg)

    @unary
    async def ListTasks(self, request: pb.ListTasksRequest, context: Ctx) -> pb.ListTasksResponse:
        full = convert.full_view(request.view, default=False)
        page = await self.tasks.list(
            convert.task_filter(request), request.page_size, request.page_token, full
        )
        return pb.ListTasksResponse(
            tasks=[convert.task(t, full) for t in page.items], next_page_token=page.next_token
        )

    @unary
    async def CancelTask(
        self, request: pb.CancelTaskRequest, context: Ctx
    ) -> pb.CancelTaskResponse:
        task = await self.tasks.cancel(convert.task_id(request.id))
        return pb.CancelTaskResponse(task=convert.task(task))

    @unary
    async def RetryTask(self, request: pb.RetryTaskRequest, context: Ctx) -> pb.RetryTaskResponse:
        task = await self.tasks.retry(convert.task_id(request.id))
        return pb.RetryTaskResponse(task=convert.task(task))

    @streaming
    async def WatchTask(
        self, request: pb.WatchTaskRequest, context: Ctx
    ) -> AsyncIterator[pb.WatchTaskResponse]:
        async for task in self.tasks.watch(convert.task_id(request.id)):
            yield pb.WatchTaskResponse(task=convert.task(task))
