"""Schedules end to end: the CLI and REST through Envoy against a real server
and two queue managers; fires on time within a second, one task per fire time;
`dtq schedule sync` of `@app.periodic` declarations."""

from __future__ import annotations

import itertools
import json
import subprocess
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.conftest import Server
from tests.e2e.test_rest import Rest, assert_error
from tests.support.envoy import Envoy, running_envoy
from tests.support.procs import Proc, dtq_args, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean")]
ON_TIME = 1.0  # seconds: a task's commit after its fire time, at most


@pytest.fixture(scope="module")
def managers(server: Server, manager: Proc) -> Iterator[list[Proc]]:
    """Two managers at once, each free to fire any schedule."""
    other = Proc("manager", dtq_args("manager", "--metrics-port", "0"), server.env)
    wait_until(lambda: "manager_started" in other.output() or not other.alive(), 30, "manager")
    yield [manager, other]
    other.stop()


@pytest.fixture(scope="module")
def envoy(server: Server) -> Iterator[Envoy]:
    with running_envoy(server.address) as found:
        yield found


def dtq(server: Server, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        dtq_args(*args),
        env={**server.env, "DTQ_SERVER_ADDRESS": server.address, **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def dtq_json(server: Server, *args: str) -> Any:
    done = dtq(server, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fired(pg_url: str, name: str) -> list[tuple[float, float]]:
    """(fire time, commit time) of the tasks of schedule `name`'s fire times."""
    with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT idempotency_key, extract(epoch FROM created_at)::float8 FROM tasks"
            " WHERE idempotency_key LIKE %s ORDER BY idempotency_key",
            (f"schedule:{name}:2%",),
        )
        rows = cur.fetchall()
    conn.close()
    prefix = len(f"schedule:{name}:")
    return [(datetime.fromisoformat(key[prefix:]).timestamp(), at) for key, at in rows]


def assert_on_time_once_each(times: list[tuple[float, float]], period: float) -> None:
    fire_times = [f for f, _ in times]
    assert len(set(fire_times)) == len(fire_times)
    gaps = {round(b - a, 3) for a, b in itertools.pairwise(fire_times)}
    assert gaps <= {period}, f"a fire time was missed: {gaps}"
    for fire, created in times:
        assert 0 <= created - fire < ON_TIME, f"{created - fire:.3f}s after its fire time"


def test_cli_every_second_fires_on_time_once_per_fire_time(
    server: Server, managers: list[Proc], pg_url: str
) -> None:
    made = dtq_json(
        server, "schedule", "create", "tick", "report", '{"n": 1}', "--every", "1s",
        "--queue", "sched", "--overlap", "allow", "--max-retries", "0",
    )  # fmt: skip
    assert made["name"] == "tick" and made["interval"] == "1s"
    assert made["overlap_policy"] == "OVERLAP_POLICY_ALLOW"
    wait_until(lambda: len(fired(pg_url, "tick")) >= 4, 15, "four fires")
    listed = dtq(server, "schedule", "list")
    assert listed.returncode == 0 and "tick" in listed.stdout and "pending" in listed.stdout
    got = dtq_json(server, "schedule", "get", "tick")
    assert got["last_task_state"] == "STATE_PENDING" and got["next_fire_time"]
    assert dtq(server, "schedule", "pause", "tick").returncode == 0
    time.sleep(0.3)  # a fire in flight when the pause committed
    count = len(fired(pg_url, "tick"))
    time.sleep(2.2)
    assert len(fired(pg_url, "tick")) == count, "a paused schedule fired"
    assert_on_time_once_each(fired(pg_url, "tick"), 1.0)
    triggered = dtq(server, "schedule", "trigger", "tick")
    assert triggered.returncode == 0 and len(triggered.stdout.strip()) == 36
    assert dtq_json(server, "schedule", "get", "tick")["last_task_id"] == triggered.stdout.strip()
    resumed = dtq_json(server, "schedule", "resume", "tick")
    assert resumed["paused"] is False and resumed["next_fire_time"]
    assert dtq(server, "schedule", "delete", "tick").returncode == 0
    gone = dtq(server, "schedule", "get", "tick")
    assert gone.returncode == 1 and "NOT_FOUND SCHEDULE_NOT_FOUND" in gone.stderr


def test_cli_refuses_bad_input_in_one_line(server: Server) -> None:
    both = dtq(server, "schedule", "create", "x", "t", "--every", "1s", "--cron", "* * * * *")
    assert both.returncode == 2 and "--cron or --every" in both.stderr
    bad = dtq(server, "schedule", "create", "x", "t", "--cron", "* * *", "--tz", "Europe/Paris")
    assert bad.returncode == 1
    assert bad.stderr.startswith("error: INVALID_ARGUMENT INVALID_FIELD: schedule.cron")
    zone = dtq(server, "schedule", "create", "x", "t", "--cron", "* * * * *", "--tz", "Nowhere")
    assert "schedule.time_zone" in zone.stderr


def test_rest_six_field_cron_and_every_route(
    server: Server, managers: list[Proc], envoy: Envoy, pg_url: str
) -> None:
    rest = Rest(envoy.port)
    body = {
        "name": "sec",
        "cron": "* * * * * *",
        "time_zone": "Europe/Paris",
        "task": {"type": "report", "queue": "rest", "payload": {"a": 1}},
        "overlap_policy": "OVERLAP_POLICY_ALLOW",
    }
    created = rest.call("POST", "/api/v1/schedules", body)
    assert created.status == 200, created.body
    assert created.json()["schedule"]["next_fire_time"]
    assert_error(rest.call("POST", "/api/v1/schedules", body), 409, 6, "SCHEDULE_EXISTS")
    wait_until(lambda: len(fired(pg_url, "sec")) >= 3, 15, "three fires")
    assert_on_time_once_each(fired(pg_url, "sec"), 1.0)
    one = rest.call("GET", "/api/v1/schedules/sec").json()["schedule"]
    assert one["last_task_state"] == "STATE_PENDING" and one["task"]["payload"] == {"a": 1}
    assert [s["name"] for s in rest.call("GET", "/api/v1/schedules").json()["schedules"]] == ["sec"]
    patched = rest.call(
        "PATCH", "/api/v1/schedules/sec?update_mask=cron", {"cron": "0 9 * * 1"}
    ).json()["schedule"]
    assert patched["cron"] == "0 9 * * 1" and patched["task"]["queue"] == "rest"
    paused = rest.post("/api/v1/schedules/sec:pause").json()["schedule"]
    assert paused["paused"] is True and "next_fire_time" not in paused
    assert rest.post("/api/v1/schedules/sec:resume").json()["schedule"]["paused"] is False
    triggered = rest.post("/api/v1/schedules/sec:trigger").json()
    assert triggered["task"]["queue"] == "rest"
    assert rest.call("DELETE", "/api/v1/schedules/sec").status == 200
    assert_error(rest.call("GET", "/api/v1/schedules/sec"), 404, 5, "SCHEDULE_NOT_FOUND")


def test_rest_validation_names_the_fields(server: Server, envoy: Envoy) -> None:
    rest = Rest(envoy.port)
    task = {"type": "report"}
    cases = [
        ({"name": "a", "cron": "nope", "task": task}, ("schedule.cron",)),
        ({"name": "a", "cron": "* * * * *", "time_zone": "X/Y", "task": task},
         ("schedule.time_zone",)),
        ({"name": "a", "interval": "0.2s", "task": task}, ("schedule.interval",)),
        ({"name": "bad name", "interval": "1s", "task": task}, ("schedule.name",)),
        ({"name": "a", "interval": "1s"}, ("schedule.task",)),
        ({"name": "a", "interval": "1s", "task": {"type": "report", "queue": "a b"}},
         ("schedule.task.queue",)),
        ({"name": "a", "interval": "1s", "catch_up_limit": 5000, "task": task},
         ("schedule.catch_up_limit",)),
    ]  # fmt: skip
    for body, fields in cases:
        reply = rest.call("POST", "/api/v1/schedules", body)
        assert_error(reply, 400, 3, "INVALID_FIELD", fields)
    unknown = rest.call("POST", "/api/v1/schedules", {"name": "a", "interval": "1s", "cronn": ""})
    assert unknown.status == 400 and b"cronn" in unknown.body
    patch = rest.call("PATCH", "/api/v1/schedules/a", {"task": {"type": "x", "queeu": "q"}})
    assert patch.status == 400 and b"queeu" in patch.body


PERIODIC = """
from dtq import App

app = App()


@app.periodic("*/5 * * * *", tz="Europe/Paris", name="five", payload={{"x": 1}})
@app.task("report")
def report(payload):
    return None


@app.periodic(every={every}, queue="sync")
def cleanup(payload):
    return None
"""


def test_sync_creates_updates_and_deletes_only_code_declared_ones(
    server: Server, tmp_path: Path
) -> None:
    module = tmp_path / "periodic_tasks.py"
    env = {"PYTHONPATH": f"{tmp_path}:{server.env.get('PYTHONPATH', '')}"}
    hand = dtq(server, "schedule", "create", "by-hand", "report", "--every", "1h")
    assert hand.returncode == 0, hand.stderr

    def sync() -> dict[str, list[str]]:
        done = dtq(server, "schedule", "sync", "-m", "periodic_tasks", "--json", **env)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    module.write_text(textwrap.dedent(PERIODIC.format(every=60)))
    assert sync() == {"created": ["five", "cleanup"], "updated": [], "deleted": []}
    assert sync() == {"created": [], "updated": [], "deleted": []}  # nothing changed
    module.write_text(textwrap.dedent(PERIODIC.format(every=120)))
    assert sync() == {"created": [], "updated": ["cleanup"], "deleted": []}
    module.write_text(textwrap.dedent(PERIODIC.format(every=120)).split("@app.periodic(every")[0])
    assert sync() == {"created": [], "updated": [], "deleted": ["cleanup"]}
    names = {s["name"]: s for s in dtq_json(server, "schedule", "list")["schedules"]}
    assert set(names) == {"by-hand", "five"}
    assert names["five"]["declared_in_code"] and not names["by-hand"]["declared_in_code"]
    assert names["five"]["time_zone"] == "Europe/Paris"
