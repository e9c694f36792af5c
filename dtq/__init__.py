"""dtq: a distributed task queue.

Task handlers are registered on an `App`:

    from dtq import App

    app = App()

    @app.task("email_sending")
    def send(payload: dict) -> dict: ...
"""

from dtq.worker.app import App, PermanentError, TaskContext, TaskInterrupted

__version__ = "0.1.0"
__all__ = ["App", "PermanentError", "TaskContext", "TaskInterrupted", "__version__"]
