"""The task state machine table (dtq/domain/states.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtq.domain import states
from dtq.domain.errors import Code, DtqError
from dtq.domain.model import TaskState
from dtq.domain.states import OPERATOR_EVENTS, TERMINAL, TRANSITIONS, Event

S = TaskState
INITIAL = (S.PENDING, S.SCHEDULED, S.WAITING)  # what a submission creates (WAITING: a flow)
ALL_PAIRS = list(itertools.product(TaskState, Event))


def _apply_or_stay(state: TaskState, event: Event) -> TaskState:
    """The state after `event`, or `state` itself when the table refuses it."""
    try:
        return states.apply(state, event)
    except DtqError:
        return state


@given(
    start=st.sampled_from(INITIAL),
    events=st.lists(st.sampled_from(list(Event)), max_size=60),
)
def test_random_event_sequences_never_resurrect_a_terminal_state(
    start: TaskState, events: list[Event]
) -> None:
    state = start
    for event in events:
        after = _apply_or_stay(state, event)
        assert isinstance(after, TaskState)
        if state in TERMINAL and after != state:
            # The only way out of a terminal state is an operator re-queueing a dead letter.
            assert (state, event) == (S.DEAD_LETTERED, Event.RETRY)
        state = after


@given(events=st.lists(st.sampled_from(sorted(set(Event) - OPERATOR_EVENTS)), max_size=60))
def test_without_operators_a_terminal_state_is_final(events: list[Event]) -> None:
    state, reached = S.PENDING, None
    for event in events:
        state = _apply_or_stay(state, event)
        if reached is None and state in TERMINAL:
            reached = state
        if reached is not None:
            assert state == reached


@pytest.mark.parametrize(("state", "event"), ALL_PAIRS)
def test_apply_follows_the_table(state: TaskState, event: Event) -> None:
    allowed, to = TRANSITIONS[event]
    if state in allowed:
        assert states.apply(state, event) == to
        return
    with pytest.raises(DtqError) as caught:
        states.apply(state, event)
    assert caught.value.code == Code.FAILED_PRECONDITION
    assert caught.value.reason == "INVALID_TRANSITION"


def test_every_event_is_in_the_table_with_known_states() -> None:
    assert set(TRANSITIONS) == set(Event)
    for event in Event:
        assert states.sources(event)
        assert states.sources(event) <= set(TaskState)
        assert states.target(event) in TaskState
        assert states.target(event) not in states.sources(event)


def test_only_operator_events_leave_a_terminal_state() -> None:
    leaving = {(s, e) for e in Event for s in states.sources(e) if s in TERMINAL}
    assert leaving == {(S.DEAD_LETTERED, Event.RETRY)}
    assert set(Event) >= OPERATOR_EVENTS


def test_terminal_states_are_completed_cancelled_dead_lettered() -> None:
    assert {S.COMPLETED, S.CANCELLED, S.DEAD_LETTERED} == TERMINAL


def test_every_state_is_reachable_from_a_submission() -> None:
    seen, frontier = set(INITIAL), list(INITIAL)
    while frontier:
        state = frontier.pop()
        for event in Event:
            after = _apply_or_stay(state, event)
            if after not in seen:
                seen.add(after)
                frontier.append(after)
    assert seen == set(TaskState)


@pytest.mark.parametrize("state", sorted(set(TaskState) - TERMINAL))
def test_every_live_state_can_still_end(state: TaskState) -> None:
    assert any(state in states.sources(e) for e in Event if states.target(e) in TERMINAL)


def test_running_task_outcomes() -> None:
    assert states.apply(S.RUNNING, Event.COMPLETE) == S.COMPLETED
    assert states.apply(S.RUNNING, Event.FAIL) == S.FAILED
    assert states.apply(S.RUNNING, Event.DEAD_LETTER) == S.DEAD_LETTERED
    assert states.apply(S.RUNNING, Event.EXPIRE) == S.PENDING
    assert states.apply(S.FAILED, Event.PROMOTE) == S.PENDING
