"""The rules `dtq dev` and the test suite follow before starting anything: which
port, which server, where PostgreSQL's data may live when we are root."""

from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

import pytest

from dtq.dev.backends import postgres_home
from dtq.dev.binaries import blocked_folder
from dtq.dev.ports import DevError, State, choose_port, exclusive, port_free, remembered_port
from tests.support import env


def test_an_explicit_port_in_use_stops_with_the_option_to_change(taken: int) -> None:
    with pytest.raises(DevError, match="--port"):
        choose_port("gRPC API", "--port", taken, 50051)


def test_a_default_port_in_use_is_replaced_by_a_free_one(taken: int) -> None:
    chosen = choose_port("gRPC API", "--port", None, taken)
    assert chosen != taken and port_free(chosen)
    assert choose_port("gRPC API", "--port", 0, 50051) > 0


def test_backend_ports_are_remembered_while_free(tmp_path: Path, taken: int) -> None:
    state = State(tmp_path / "dev.json")
    first = remembered_port(state, "redis_port", "Redis", "--redis-port", None)
    state.save(redis_port=first)
    assert remembered_port(State(tmp_path / "dev.json"), "redis_port", "Redis", "-", None) == first
    state.save(redis_port=taken)
    assert remembered_port(State(tmp_path / "dev.json"), "redis_port", "Redis", "-", None) != taken


def test_one_supervisor_per_data_folder(tmp_path: Path) -> None:
    with exclusive(tmp_path), pytest.raises(DevError), exclusive(tmp_path):
        pass
    with exclusive(tmp_path):  # released with its holder
        pass


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as nobody only when we are root")
def test_postgres_data_moves_out_of_folders_nobody_can_enter() -> None:
    nobody = pwd.getpwnam("nobody")
    private = Path(tempfile.mkdtemp(prefix="dtq-private-"))  # 0700, like /root
    try:
        home = postgres_home(private / ".dtq" / "postgres")
        assert home.name == "postgres" and blocked_folder(home.parent, nobody) is None
        assert home == postgres_home(private / ".dtq" / "postgres")  # same place every time
        open_dir = Path(tempfile.mkdtemp(prefix="dtq-open-"))
        open_dir.chmod(0o755)
        assert postgres_home(open_dir / "postgres") == open_dir / "postgres"
        open_dir.rmdir()
        home.parent.rmdir()
    finally:
        private.rmdir()


def test_configured_servers_must_answer_else_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    def up(url: str) -> bool:
        return url.endswith(":5432/postgres")

    default = "postgresql://postgres@127.0.0.1:5432/postgres"
    monkeypatch.delenv("DTQ_TEST_DATABASE_URL", raising=False)
    assert env.choose("DTQ_TEST_DATABASE_URL", default, up) == default
    assert env.choose("DTQ_TEST_DATABASE_URL", default, lambda url: False) is None
    monkeypatch.setenv("DTQ_TEST_DATABASE_URL", "embedded")
    assert env.choose("DTQ_TEST_DATABASE_URL", default, up) is None
    monkeypatch.setenv("DTQ_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/postgres")
    with pytest.raises(env.Unreachable, match="DTQ_TEST_DATABASE_URL"):
        env.choose("DTQ_TEST_DATABASE_URL", default, up)
