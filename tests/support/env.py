"""Where the tests find PostgreSQL and Redis, and a private database per run.

`DTQ_TEST_DATABASE_URL` names a PostgreSQL server and database to connect to as
an administrator (default: postgresql://postgres@127.0.0.1:5432/postgres);
every test session creates its own database there and drops it at the end.
`DTQ_TEST_REDIS_URL` names a Redis server (default redis://127.0.0.1:6379);
each session claims a free logical database (1-15) for itself.

Each service is chosen on its own, once per session:
- the variable names a URL: that server, which must answer (a configured
  server that is down fails the run at once: it is a mistake to report, not
  to paper over);
- the variable is `embedded`, or unset and nothing answers at the default:
  dtq's embedded server (dtq.dev.backends, as `dtq dev` runs it, without
  fsync) in a temporary folder, started once for the session.
So a machine with Python only runs the suite, and CI uses its services.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis
from sqlalchemy import create_engine, text

DEFAULT_DB_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
EMBEDDED = "embedded"
LOCK_KEY = "dtq-test:claimed"


class Unreachable(RuntimeError):
    """A server named by a DTQ_TEST_* variable does not answer."""


def choose(variable: str, default: str, reachable: Callable[[str], bool]) -> str | None:
    """The URL to test against, or None for an embedded server (see above)."""
    value = os.environ.get(variable, "").strip()
    if value == EMBEDDED:
        return None
    if value:
        if not reachable(value):
            raise Unreachable(
                f"{variable}={value} does not answer: start that server, unset {variable} "
                f"(a server at {default}, else an embedded one), or set it to '{EMBEDDED}'"
            )
        return value
    return default if reachable(default) else None


def postgres_answers(url: str) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url, connect_timeout=2).close()
    except psycopg2.Error:
        return False
    return True


def redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@dataclass(frozen=True)
class Services:
    """The servers of this test session: an admin PostgreSQL URL and a Redis server URL."""

    admin_db_url: str
    redis_url: str


@contextlib.contextmanager
def services() -> Iterator[Services]:
    """Configured or default servers, else embedded ones for the session."""
    from dtq.dev.backends import Backends

    db = choose("DTQ_TEST_DATABASE_URL", DEFAULT_DB_URL, postgres_answers)
    rd = choose("DTQ_TEST_REDIS_URL", DEFAULT_REDIS_URL, redis_answers)
    if db is not None and rd is not None:
        yield Services(db, rd)
        return
    base = Path(tempfile.mkdtemp(prefix="dtq-test-backends-"))
    base.chmod(0o755)  # PostgreSQL runs as nobody when we are root
    backends = Backends(base, durable=False, postgres=db is None, redis=rd is None)
    try:
        backends.start()
        pg, server = backends.pg, backends.redis
        admin_url = pg.admin_url if pg is not None else db
        redis_url = f"redis://127.0.0.1:{server.port}" if server is not None else rd
        assert admin_url is not None and redis_url is not None
        yield Services(admin_url, redis_url)
    finally:
        backends.kill()  # throwaway data: no need for a clean shutdown
        shutil.rmtree(base, ignore_errors=True)


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


@contextlib.contextmanager
def private_database(admin_url: str) -> Iterator[str]:
    """A fresh, migrated database for this session; dropped afterwards."""
    from dtq.adapters import pg_migrate

    name = f"dtq_test_{secrets.token_hex(4)}"
    admin = create_engine(sqlalchemy_url(admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = with_database(admin_url, name)
    try:
        pg_migrate.upgrade(sqlalchemy_url(url))
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def private_redis(server_url: str) -> Iterator[str]:
    """A Redis logical database (1-15) no other test session uses right now.

    Claims are keys in database 0, outside the databases the tests flush."""
    base = server_url.rstrip("/")
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
        conn.execute(
            text(
                "TRUNCATE tasks, queues, audit_events, tenant_limits, dispatch_rates, schedules,"
                " task_groups"
            )
        )
    engine.dispose()
    client = sync_redis(redis_url)
    client.flushdb()  # in a cluster: on every master
    client.close()


def sync_redis(url: str) -> redis.Redis | redis.RedisCluster:
    """A blocking client of a redis:// or redis+cluster:// URL (the seeds)."""
    if not url.startswith(CLUSTER_PREFIX):
        return redis.Redis.from_url(url)
    host, _, port = url[len(CLUSTER_PREFIX) :].split(",", maxsplit=1)[0].partition(":")
    return redis.RedisCluster(host=host, port=int(port))


CLUSTER_PREFIX = "redis+cluster://"
