"""The web side of the signup example: a FastAPI app that submits tasks.

    pip install 'dtq[examples]'
    DTQ_SERVER_ADDRESS=127.0.0.1:50051 uvicorn examples.signup.api:api

    curl -d '{"email": "ada@example.com"}' -H 'content-type: application/json' :8000/signups
    curl ':8000/signups/<task id>?wait=10'

One `AsyncClient` for the app's life (opened in the lifespan, shared by every
request), the task submitted through the handler's reference, and the answer
read back with `result()`, which waits on the server's WatchTask stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from dtq import AsyncClient
from dtq.client import InvalidArgument, NotFound, TaskCancelled, TaskFailed
from examples.signup.tasks import app as tasks
from examples.signup.tasks import welcome_email


class Signup(BaseModel):
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", max_length=254)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    async with AsyncClient.from_settings() as client:
        tasks.client = client
        yield
        tasks.client = None


api = FastAPI(title="signup example", lifespan=lifespan)


@api.post("/signups", status_code=202)
async def sign_up(signup: Signup) -> dict[str, str]:
    # The idempotency key makes a retried POST (the user pressed twice, a
    # proxy replayed it) give back the first task instead of a second mail.
    handle = await welcome_email.asubmit(
        {"email": signup.email}, idempotency_key=f"welcome:{signup.email}", max_retries=5
    )
    return {"task_id": handle.id, "state": handle.state.value}


@api.get("/signups/{task_id}")
async def signup_status(task_id: str, wait: float = Query(0, ge=0, le=30)) -> dict[str, Any]:
    client = tasks.client
    assert isinstance(client, AsyncClient)
    try:
        handle = await client.handle(task_id)
        if wait:
            try:
                return {"state": "completed", "result": await handle.result(timeout=wait)}
            except TimeoutError:
                await handle.refresh()
        return {"state": handle.state.value}
    except (NotFound, InvalidArgument):  # no such task, or not a task id at all
        raise HTTPException(404, f"no signup task {task_id}") from None
    except TaskFailed as failure:
        return {"state": "dead_lettered", "error": failure.message}
    except TaskCancelled:
        return {"state": "cancelled"}
