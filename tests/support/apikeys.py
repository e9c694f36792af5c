"""API keys made the way an operator makes them: `dtq apikey create`."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests.support.procs import dtq_args


def apikey(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`dtq apikey ARGS` with `env` (DTQ_DATABASE_URL...)."""
    return subprocess.run(
        [*dtq_args("apikey"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def new_key(env: dict[str, str], role: str, *args: str) -> dict[str, Any]:
    """A new key of `role`: its `id` and the `key` itself (printed once)."""
    done = apikey(env, "create", "--role", role, "--name", f"test {role}", "--json", *args)
    assert done.returncode == 0, done.stderr
    created: dict[str, Any] = json.loads(done.stdout)
    return created
