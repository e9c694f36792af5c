"""`@app.periodic`: schedules declared in code, on handlers."""

from __future__ import annotations

import pytest

from dtq import App
from dtq.worker.app import Periodic


def test_on_a_handler_and_on_a_plain_function() -> None:
    app = App()

    @app.periodic("*/5 * * * *", tz="Europe/Paris", payload={"full": False})
    @app.task("report")
    def report(payload: dict[str, object]) -> None:
        return None

    @app.periodic(every=30, name="sweep", queue="maintenance", overlap="allow")
    def cleanup(payload: dict[str, object]) -> None:
        return None

    assert set(app.handlers) == {"report", "cleanup"}  # the plain one is registered too
    assert app.periodics["report"] == Periodic(
        "report", "report", "*/5 * * * *", 0.0, "Europe/Paris", {"full": False}
    )
    assert app.periodics["sweep"].task_type == "cleanup"
    assert app.periodics["sweep"].queue == "maintenance"
    assert report.name == "report" and cleanup.name == "cleanup"


def test_cron_or_every_and_one_name_each() -> None:
    app = App()
    with pytest.raises(ValueError, match="not both"):
        app.periodic("* * * * *", every=5)
    with pytest.raises(ValueError, match="not both"):
        app.periodic()

    @app.periodic(every=5, name="x")
    def one(payload: dict[str, object]) -> None:
        return None

    with pytest.raises(ValueError, match="declared twice"):

        @app.periodic(every=5, name="x")
        def two(payload: dict[str, object]) -> None:
            return None


def test_merge_keeps_the_declarations() -> None:
    a, b = App(), App()

    @a.periodic(every=5)
    def ping(payload: dict[str, object]) -> None:
        return None

    merged = App()
    merged.merge(a)
    merged.merge(b)
    assert set(merged.periodics) == {"ping"}
    with pytest.raises(ValueError, match="already has a handler"):
        merged.merge(a)
