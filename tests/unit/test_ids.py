"""Task ids (UUIDv7) and lease references (dtq/domain/ids.py)."""

from __future__ import annotations

import itertools
import threading
import time
import uuid

import pytest

from dtq.domain import ids
from dtq.domain.errors import Code, DtqError
from dtq.domain.ids import lease_ref, parse_task_id, uuid7
from tests.support.ids import time_of

TOKEN = "0123456789abcdef0123456789abcdef"


def test_version_and_variant_bits() -> None:
    for task_id in (uuid7() for _ in range(100)):
        assert task_id.version == 7
        assert task_id.variant == uuid.RFC_4122


def test_strictly_increasing_within_one_millisecond() -> None:
    now = time.time()
    made = [uuid7(now) for _ in range(5000)]
    assert all(a < b for a, b in itertools.pairwise(made))


def test_strictly_increasing_at_full_speed() -> None:
    # Tens of ids per millisecond: the random part must order like the counter.
    made = [uuid7() for _ in range(50_000)]
    assert all(a < b for a, b in itertools.pairwise(made))
    assert all(a.bytes < b.bytes for a, b in itertools.pairwise(made))


def test_increasing_across_threads() -> None:
    made: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def make(out: list[uuid.UUID]) -> None:
        out.extend(uuid7() for _ in range(5000))

    threads = [threading.Thread(target=make, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    every = [i for out in made for i in out]
    assert len(set(every)) == len(every)
    for out in made:
        assert out == sorted(out)


def test_a_clock_going_back_keeps_the_order() -> None:
    first = uuid7()
    assert uuid7(time.time() - 3600) > first


def test_time_of_roundtrips_the_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    # Reset the process counter so an old `now` is encoded as is (restored after).
    monkeypatch.setattr(ids, "_last", 0)
    assert time_of(uuid7(1_700_000_000.1239)) == pytest.approx(1_700_000_000.123, abs=1e-9)


def test_time_of_a_new_id_is_now() -> None:
    before = time.time()
    task_id = uuid7()
    assert before - 0.002 <= time_of(task_id) <= time.time()


def test_parse_task_id_accepts_a_uuid_with_spaces() -> None:
    task_id = uuid7()
    assert parse_task_id(f" {task_id} ") == task_id


# Fixed values, not fresh uuid7()s: test ids must be the same in every
# collecting process (pytest-xdist compares them).
A_UUID7 = "01932b4e-7c1a-7d3e-8f00-1234567890ab"


@pytest.mark.parametrize("text", ["", "nope", "1234", A_UUID7[:-1], A_UUID7 + "0"])
def test_parse_task_id_rejects_what_is_not_a_uuid(text: str) -> None:
    with pytest.raises(DtqError) as caught:
        parse_task_id(text, "requests[3].id")
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert caught.value.reason == "INVALID_FIELD"
    assert [v.field for v in caught.value.violations] == ["requests[3].id"]


def test_lease_ref_of_a_valid_pair() -> None:
    task_id = uuid7()
    ref = lease_ref(str(task_id), TOKEN)
    assert (ref.task_id, ref.token) == (task_id, TOKEN)


@pytest.mark.parametrize("token", ["", TOKEN[:-1], TOKEN + "0", TOKEN.upper(), "g" * 32])
def test_lease_ref_rejects_a_bad_token(token: str) -> None:
    with pytest.raises(DtqError) as caught:
        lease_ref(str(uuid7()), token, "outcomes")
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["outcomes.lease_token"]


def test_lease_ref_rejects_a_bad_task_id() -> None:
    with pytest.raises(DtqError) as caught:
        lease_ref("not-a-uuid", TOKEN, "held")
    assert caught.value.code == Code.INVALID_ARGUMENT
    assert [v.field for v in caught.value.violations] == ["held.task_id"]


def test_lease_ref_without_a_path_names_bare_fields() -> None:
    with pytest.raises(DtqError) as caught:
        lease_ref(str(uuid7()), "x")
    assert [v.field for v in caught.value.violations] == ["lease_token"]
