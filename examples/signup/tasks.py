"""The worker side of the signup example: the handlers a worker runs.

    dtq worker -m examples.signup.tasks      # from the repository's root

The same module is imported by the web app (`api.py`): the handlers double as
references that submit tasks of their type, so the task type is written once.
"""

from __future__ import annotations

import logging
from typing import Any

from dtq import App, PermanentError, TaskContext

app = App("signup")
log = logging.getLogger(__name__)


@app.task("welcome_email")
def welcome_email(payload: dict[str, Any], ctx: TaskContext) -> dict[str, Any]:
    """Send the welcome mail (here: pretend to), and say what was sent."""
    address = str(payload["email"])
    if address.endswith("@invalid.example"):
        raise PermanentError(f"no mailbox at {address}")  # dead-lettered at once, no retries
    log.info("welcome_sent", extra={"to": address, "task_id": ctx.task_id})
    return {"sent_to": address, "template": "welcome", "attempt": ctx.attempt}
