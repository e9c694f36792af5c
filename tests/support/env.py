"""Where the tests find PostgreSQL and Redis, and a private database per run.

`DTQ_TEST_DATABASE_URL` names a PostgreSQL server and database to connect to as
an administrator (default: postgresql://postgres@127.0.0.1:5432/postgres);
every test session creates its own database there and drops it at the end.
`DTQ_TEST_REDIS_URL` names a Redis server (default redis://127.0.0.1:6379);
each session claims a free logical database (1-15) for itself.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import redis
from sqlalchemy import create_engine, text

ADMIN_DB_URL = os.environ.get(
    "DTQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("DTQ_TEST_REDIS_URL", "redis://127.0.0.1:6379")
LOCK_KEY = "dtq-test:claimed"


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


@contextlib.contextmanager
def private_database() -> Iterator[str]:
    """A fresh, migrated database for this session; dropped afterwards."""
    from dtq.adapters import pg_migrate

    name = f"dtq_test_{secrets.token_hex(4)}"
    admin = create_engine(sqlalchemy_url(ADMIN_DB_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = with_database(ADMIN_DB_URL, name)
    try:
        pg_migrate.upgrade(sqlalchemy_url(url))
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A Redis logical database (1-15) no other test session uses right now.

    Claims are keys in database 0, outside the databases the tests flush."""
    base = REDIS_URL.rstrip("/")
    registry = redis.Redis.from_url(f"{base}/0")
    try:
        for db in range(1, 16):
            if registry.set(f"{LOCK_KEY}:{db}", str(os.getpid()), nx=True, ex=3600):
                client = redis.Redis.from_url(f"{base}/{db}")
                client.flushdb()
                try:
                    yield f"{base}/{db}"
                finally:
                    client.flushdb()
                    client.close()
                    registry.delete(f"{LOCK_KEY}:{db}")
                return
        raise RuntimeError("no free Redis database (1-15) for this test session")
    finally:
        registry.close()


def reset(db_url: str, redis_url: str) -> None:
    """Empty the tables and the Redis database, between tests."""
    engine = create_engine(sqlalchemy_url(db_url))
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE tasks, queues"))
    engine.dispose()
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
