"""@app.task returns a TaskRef: still the function, and a way to submit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dtq import App, Client
from dtq.worker.refs import TaskRef

app = App("refs")


@app.task("send_email")
def send_email(payload: dict[str, Any]) -> str:
    """Sends one email."""
    return f"sent to {payload['to']}"


def test_a_reference_calls_the_function_and_keeps_its_name() -> None:
    assert isinstance(send_email, TaskRef)
    assert send_email({"to": "a"}) == "sent to a"
    assert (send_email.name, send_email.__doc__) == ("send_email", "Sends one email.")
    assert app.handlers["send_email"].fn({"to": "b"}) == "sent to b"


def test_submitting_needs_a_client_of_the_right_kind() -> None:
    with pytest.raises(TypeError, match="needs a Client"):
        send_email.delay(to="a")
    with pytest.raises(TypeError, match="needs an AsyncClient"):
        asyncio.run(send_email.adelay(to="a"))


def test_the_payload_is_checked_before_anything_is_sent() -> None:
    with Client("127.0.0.1:9") as client:  # nothing listens there
        with pytest.raises(TypeError):
            send_email.submit({"to": object()}, client=client)
        other = App("other", client=client)
        ref = other.task("x")(lambda payload: None)
        with pytest.raises(ValueError):
            ref.delay(n=float("nan"))
        with pytest.raises(TypeError, match="needs an AsyncClient"):
            asyncio.run(ref.asubmit({}))


def test_import_dtq_does_not_load_grpc() -> None:
    import subprocess
    import sys

    code = (
        "import sys, dtq; assert 'grpc' not in sys.modules; "
        "dtq.Client; assert 'grpc' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
