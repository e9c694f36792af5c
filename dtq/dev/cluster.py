"""A local Redis Cluster: masters and replicas as child processes on free
loopback ports, for the tests and `dtq dev --redis-cluster`.

Each node is a `RedisServer` (no persistence, its own folder under `base`)
with cluster mode on; `redis-cli --cluster create` assigns the slots and
pairs each replica with a master. `node_timeout_ms` is how long a master
must be unreachable before its replica takes over: small here (1.5 s), so
failover tests finish quickly.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from dtq.dev.binaries import find_redis_cli
from dtq.dev.child import ServerError
from dtq.dev.servers import RedisServer

URL_SCHEME = "redis+cluster"


class RedisCluster:
    """`masters` masters with `replicas` replicas each, all on 127.0.0.1."""

    def __init__(
        self,
        base: str | Path,
        masters: int = 3,
        replicas: int = 1,
        *,
        node_timeout_ms: int = 1500,
        binary: str | Path | None = None,
    ) -> None:
        self.base = Path(base).absolute()
        self.replicas = replicas
        options = {
            "cluster-enabled": "yes",
            "cluster-node-timeout": str(node_timeout_ms),
            "cluster-config-file": "nodes.conf",
            # A master whose replica was promoted rejoins as a replica (default),
            # and a cluster with a slot uncovered still serves the other slots.
            "cluster-require-full-coverage": "no",
        }
        count = masters * (1 + replicas)
        self.nodes = [
            RedisServer(self.base / f"node{i}", cluster_port(), binary, options=options)
            for i in range(count)
        ]
        for i, node in enumerate(self.nodes):
            node.name = f"redis-node{i}"  # one name each: the dev supervisor restarts by name

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{n.port}" for n in self.nodes]

    @property
    def url(self) -> str:
        """The URL dtq takes (DTQ_REDIS_URL): every node as a seed."""
        return f"{URL_SCHEME}://{','.join(self.addresses)}"

    def start(self, timeout: float = 60.0) -> None:
        """Start the nodes, create the cluster, wait until every node says ok.
        Each start is a new cluster (the ports are new): nothing is kept. A
        node restarted alone (`node.start()`) keeps its nodes.conf and rejoins."""
        for node in self.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)
        try:
            for node in self.nodes:
                node.start()
            for node in self.nodes:
                node.wait_ready(timeout)
            self._create(timeout)
            self.wait_ok(timeout)
        except BaseException:
            self.kill()
            raise

    def _create(self, timeout: float) -> None:
        cli = find_redis_cli(self.nodes[0].binary)
        args = [str(cli), "--cluster", "create", *self.addresses]
        args += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise ServerError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Block until every live node reports cluster_state:ok and they agree
        on the current epoch (a failover has spread)."""
        deadline = time.monotonic() + timeout
        while not self._ok():
            if time.monotonic() > deadline:
                raise ServerError(f"Redis Cluster not ok after {timeout}s")
            time.sleep(0.05)

    def _ok(self) -> bool:
        live = [n for n in self.nodes if n.alive()]
        infos = [_info(n.port) for n in live]
        return (
            all(i.get("cluster_state") == "ok" for i in infos)
            and len({i.get("cluster_current_epoch") for i in infos}) == 1
        )

    def masters(self) -> list[RedisServer]:
        """The live nodes that serve slots now."""
        return [n for n in self.nodes if n.alive() and _role(n.port) == "master"]

    def master_of(self, key: str) -> RedisServer:
        """The node that serves `key`'s slot now."""
        import redis

        seed = self.masters()[0]
        client = redis.RedisCluster(host="127.0.0.1", port=seed.port, socket_timeout=2)
        with contextlib.closing(client):
            port = client.get_node_from_key(key).port  # type: ignore[no-untyped-call]
        return next(n for n in self.nodes if n.port == int(port))

    def wait_moved(self, key: str, old: RedisServer, timeout: float = 30.0) -> None:
        """Block until another node serves `key`'s slot (a replica was promoted)
        and the cluster is ok again."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):  # the topology is in flux
                if self.master_of(key) is not old and self._ok():
                    return
            if time.monotonic() > deadline:
                raise ServerError(f"no node took over the slot of {key} after {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

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


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too: so at most 55535."""
    for _ in range(200):
        port = random.randint(20000, 55535)
        if _free(port) and _free(port + BUS_OFFSET):
            return port
    raise ServerError("no free pair of ports for a Redis Cluster node")


BUS_OFFSET = 10000


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _info(port: int) -> dict[str, str]:
    """CLUSTER INFO of one node ({} when it does not answer)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)
    with contextlib.closing(client):
        try:
            info = client.cluster("INFO")  # parsed by redis-py
        except redis.RedisError:
            return {}
    return {str(k): str(v) for k, v in dict(info).items()}


def _role(port: int) -> str:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)
    with contextlib.closing(client):
        try:
            return str(client.info("replication").get("role", ""))
        except redis.RedisError:
            return ""
