"""The settings object and its DTQ_ environment variables (dtq/settings.py)."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from dtq.settings import Settings


@pytest.fixture(autouse=True)
def no_dtq_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment without DTQ_ variables."""
    for name in list(os.environ):
        if name.startswith("DTQ_"):
            monkeypatch.delenv(name)


def env(monkeypatch: pytest.MonkeyPatch, **values: str) -> Settings:
    for name, value in values.items():
        monkeypatch.setenv(f"DTQ_{name.upper()}", value)
    return Settings()


def test_defaults() -> None:
    s = Settings()
    assert s.database_dsn == "postgresql+psycopg2://dtq_user:dtq_password@localhost:5432/dtq"
    assert s.redis_dsn == "redis://localhost:6379/0"
    assert s.worker_queues == ["default"]
    assert (s.worker_max_retries, s.worker_retry_backoff_base) == (3, 2.0)
    assert s.lease_duration == 30.0
    assert s.heartbeat_interval == 10.0


def test_database_from_the_seed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(
        monkeypatch,
        database_host="db.internal",
        database_port="6543",
        database_name="tasks",
        database_user="app",
        database_password="s3cret",
    )
    assert s.database_dsn == "postgresql+psycopg2://app:s3cret@db.internal:6543/tasks"


def test_database_credentials_are_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, database_user="a@b", database_password="p:w/d%")
    assert s.database_dsn.startswith("postgresql+psycopg2://a%40b:p%3Aw%2Fd%25@localhost")


def test_database_without_password(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, database_user="app", database_password="")
    assert s.database_dsn == "postgresql+psycopg2://app@localhost:5432/dtq"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_database_url_forms(monkeypatch: pytest.MonkeyPatch, scheme: str) -> None:
    s = env(monkeypatch, database_url=f"{scheme}://u:p@h:1/d?sslmode=disable")
    assert s.database_dsn == "postgresql+psycopg2://u:p@h:1/d?sslmode=disable"


def test_database_url_wins_over_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, database_url="postgresql+psycopg2://u@h/d", database_host="ignored")
    assert s.database_dsn == "postgresql+psycopg2://u@h/d"


def test_redis_from_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, redis_host="cache", redis_port="6380", redis_password="p@ss")
    assert s.redis_dsn == "redis://:p%40ss@cache:6380/0"


def test_redis_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(monkeypatch, redis_url="redis://other:1/3", redis_host="ignored")
    assert s.redis_dsn == "redis://other:1/3"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("emails", ["emails"]), ("a,b", ["a", "b"]), (" a , b ,, c ", ["a", "b", "c"])],
)
def test_worker_queues_comma_list(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    assert env(monkeypatch, worker_queues=value).worker_queues == expected


def test_seed_worker_names(monkeypatch: pytest.MonkeyPatch) -> None:
    s = env(
        monkeypatch,
        worker_concurrency="16",
        worker_max_retries="5",
        worker_retry_backoff_base="3",
        worker_max_retry_backoff="60",
        worker_poll_interval="0.5",
    )
    assert (s.worker_concurrency, s.worker_max_retries) == (16, 5)
    assert (s.worker_retry_backoff_base, s.worker_max_retry_backoff) == (3.0, 60.0)
    assert s.worker_poll_interval == 0.5


def test_worker_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().worker_pool == "thread"
    assert env(monkeypatch, worker_pool="process").worker_pool == "process"


def test_metrics_port_defaults_per_process() -> None:
    s = Settings()
    assert [s.metrics_port_for(p) for p in ("server", "worker", "manager")] == [9090, 9091, 9092]


@pytest.mark.parametrize("port", ["0", "9999"])
def test_metrics_port_setting_wins(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    s = env(monkeypatch, metrics_port=port)
    assert {s.metrics_port_for(p) for p in ("server", "worker", "manager")} == {int(port)}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("worker_concurrency", "0"),
        ("worker_max_retries", "101"),
        ("lease_duration", "0.5"),
        ("database_port", "not-a-number"),
        ("log_format", "xml"),
        ("worker_pool", "fork"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    with pytest.raises(ValidationError):
        env(monkeypatch, **{name: value})


def test_built_directly_and_frozen() -> None:
    s = Settings(lease_duration=6.0, worker_queues=["x"])
    assert (s.heartbeat_interval, s.worker_queues) == (2.0, ["x"])
    with pytest.raises(ValidationError):
        s.lease_duration = 7.0  # type: ignore[misc]


def test_rate_limit_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert (s.rate_limit_failure, s.limits_refresh, s.queued_count_refresh) == ("open", 2.0, 1.0)
    assert s.metrics_max_tenants == 100
    closed = env(monkeypatch, rate_limit_failure="closed", limits_refresh="0.5")
    assert (closed.rate_limit_failure, closed.limits_refresh) == ("closed", 0.5)
    with pytest.raises(ValidationError):
        env(monkeypatch, rate_limit_failure="maybe")


def test_redis_cluster_from_a_url_or_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = "redis+cluster://a:7000,b:7001"
    assert env(monkeypatch, redis_url=seeds).redis_dsn == seeds
    flagged = env(monkeypatch, redis_url="redis://a:7000/0", redis_cluster="true")
    assert flagged.redis_dsn == "redis+cluster://a:7000"  # a cluster has no db number
    monkeypatch.delenv("DTQ_REDIS_URL")
    parts = env(monkeypatch, redis_host="c", redis_port="7002", redis_cluster="1")
    assert parts.redis_dsn == "redis+cluster://c:7002"
