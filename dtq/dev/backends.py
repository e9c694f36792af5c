"""PostgreSQL and Redis side by side in one folder: what `dtq dev` and the test
suite (when no servers are configured) start before anything else.

Both are `dtq.dev.servers` children, so they die with the thread that started
them. When we are root, PostgreSQL runs as `nobody`, who must be able to reach
its data folder: a folder under a home such as /root (0700) is out of reach,
so PostgreSQL's data then goes to a folder of ours under /var/tmp named after
the wanted one (the same folder on every start: data is kept). We never
loosen the permissions of the user's folders, as the wheels' helpers do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
from pathlib import Path
from types import TracebackType
from typing import Self

from dtq.dev.binaries import SHARED_ROOT, blocked_folder
from dtq.dev.child import ServerError
from dtq.dev.cluster import RedisCluster
from dtq.dev.servers import PostgresServer, RedisServer

log = logging.getLogger(__name__)

# Throwaway data (tests): no fsync, no crash safety, faster by far on a slow disk.
THROWAWAY = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def postgres_home(wanted: Path, user: str = "nobody") -> Path:
    """Where PostgreSQL's data goes: `wanted`, unless we are root and `user`
    cannot reach it; then a root-owned folder under /var/tmp named after it."""
    wanted = wanted.absolute()
    if os.geteuid() != 0:
        return wanted
    blocked = blocked_folder(wanted.parent, pwd.getpwnam(user))
    if blocked is None:
        return wanted
    digest = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    home = Path(SHARED_ROOT) / f"dtq-pgdata-{digest}"
    home.mkdir(mode=0o755, exist_ok=True)
    st = home.lstat()
    if st.st_uid != 0 or st.st_mode & 0o022 or home.is_symlink():
        raise ServerError(f"{home} is not a folder owned by root and writable only by root")
    log.warning(
        "postgres_data_moved",
        extra={"wanted": str(wanted), "blocked": str(blocked), "data": str(home / wanted.name)},
    )
    return home / wanted.name


class Backends:
    """PostgreSQL (database `dtq`) and Redis, started together, in `base`.

    `durable=False` is for tests: no fsync, no Redis persistence."""

    def __init__(
        self,
        base: Path,
        pg_port: int = 0,
        redis_port: int = 0,
        *,
        durable: bool = True,
        postgres: bool = True,
        redis: bool = True,
        redis_cluster: bool = False,
    ) -> None:
        """`redis_cluster`: a local Redis Cluster (3 masters, 3 replicas, no
        persistence) instead of one Redis."""
        self.base = base.absolute()
        self.base.mkdir(parents=True, exist_ok=True)
        settings = {} if durable else THROWAWAY
        self.pg = (
            PostgresServer(postgres_home(self.base / "postgres"), pg_port, settings=settings)
            if postgres
            else None
        )
        self.redis = (
            RedisServer(self.base / "redis", redis_port, appendonly=durable)
            if redis and not redis_cluster
            else None
        )
        self.cluster = RedisCluster(self.base / "redis-cluster") if redis_cluster else None
        if self.pg is not None:  # its log beside Redis's, even when its data moved
            self.pg.log_path = self.base / "postgres.log"

    @property
    def servers(self) -> list[PostgresServer | RedisServer]:
        return [s for s in (self.pg, self.redis) if s is not None]

    def start(self, timeout: float = 60.0) -> None:
        """Start both, then wait for both (they boot in parallel)."""
        try:
            for server in self.servers:
                server.start()
            if self.cluster is not None:
                self.cluster.start(timeout)  # while PostgreSQL boots
            for server in self.servers:
                server.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        log.info("backends_started", extra={"urls": self.urls})

    @property
    def children(self) -> list[PostgresServer | RedisServer]:
        """Every server process, the cluster's nodes too (the supervisor watches them)."""
        return self.servers + (self.cluster.nodes if self.cluster is not None else [])

    @property
    def urls(self) -> list[str]:
        cluster = [self.cluster.url] if self.cluster is not None else []
        return [s.url for s in self.servers] + cluster

    @property
    def redis_url(self) -> str:
        """The URL of the Redis (or Redis Cluster) that was asked for."""
        if self.cluster is not None:
            return self.cluster.url
        assert self.redis is not None
        return self.redis.url

    def stop(self) -> None:
        """Graceful: Redis writes its append-only file, PostgreSQL checkpoints."""
        for server in reversed(self.servers):
            server.stop()
        if self.cluster is not None:
            self.cluster.stop()

    def kill(self) -> None:
        for server in reversed(self.servers):
            server.kill()
        if self.cluster is not None:
            self.cluster.kill()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
