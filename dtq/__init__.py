"""dtq: a distributed task queue.

Task handlers are registered on an `App`:

    from dtq import App

    app = App()

    @app.task("email_sending")
    def send(payload: dict) -> dict: ...

and submitted through a `Client` (or `AsyncClient`, for asyncio code):

    from dtq import Client

    with Client("127.0.0.1:50051") as client:
        print(client.submit("email_sending", {"to": "a@example.com"}).result(timeout=30))

The clients load gRPC on first use, so that `import dtq` stays cheap.
"""

from typing import TYPE_CHECKING, Any

from dtq.version import __version__
from dtq.worker.app import App, PermanentError, TaskContext, TaskInterrupted

if TYPE_CHECKING:
    from dtq.client import AsyncClient, Client
    from dtq.transactional import enqueue_in

__all__ = [
    "App",
    "AsyncClient",
    "Client",
    "PermanentError",
    "TaskContext",
    "TaskInterrupted",
    "__version__",
    "enqueue_in",
]


def __getattr__(name: str) -> Any:
    if name in ("Client", "AsyncClient"):
        import dtq.client

        return getattr(dtq.client, name)
    if name == "enqueue_in":
        from dtq.transactional import enqueue_in

        return enqueue_in
    raise AttributeError(f"module 'dtq' has no attribute {name!r}")
