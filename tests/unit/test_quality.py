"""Static gates, run with the tests so that one command checks everything:
generated code is fresh, protos lint, code is formatted, linted and typed."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.support.procs import ROOT


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_generated_code_is_fresh() -> None:
    done = run(sys.executable, "scripts/gen_protos.py", "--check")
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(
    shutil.which("buf") is None, reason="buf is installed by pip install -e '.[dev]'"
)
def test_protos_pass_buf_lint_and_format() -> None:
    lint = run("buf", "lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run("buf", "format", "-d", "--exit-code", "protos")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_ruff_lint_and_format() -> None:
    lint = run(sys.executable, "-m", "ruff", "check", "dtq", "tests", "scripts", "migrations")
    assert lint.returncode == 0, lint.stdout
    fmt = run(sys.executable, "-m", "ruff", "format", "--check", "dtq", "tests", "scripts")
    assert fmt.returncode == 0, fmt.stdout


def test_mypy_strict() -> None:
    done = run(sys.executable, "-m", "mypy")
    assert done.returncode == 0, done.stdout
