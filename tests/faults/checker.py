"""The one checker of every fault scenario, and the table of what it measured.

The contract (issue 3, "Fault-injection suite"):
- lost = 0: every submitted task exists and is terminal;
- each task ends in the terminal state the scenario expects, and stays there;
- a completed task's result comes from its current lease (fencing): the
  attempt and process named in the result did the side effect;
- double completions = 0: at most one side effect (`effect` row) per task,
  unless the task's lease expired, evidenced by a later attempt (attempts > 1,
  each side effect under a different attempt: one lease never runs twice).
Every verdict goes to RESULTS, printed as a table at the end of the run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from google.protobuf import json_format, struct_pb2

from tests.support.procs import LOGS

TERMINAL = ("completed", "cancelled", "dead_lettered")
Execution = tuple[str, int, int, str, float]  # task id, attempt, worker pid, phase, epoch


class Final(NamedTuple):
    """What PostgreSQL says about a task after the scenario."""

    state: str
    result_attempt: int
    result_pid: int
    attempts: int
    finished_at: float | None


@dataclass
class Fault:
    """When a fault was injected and which tasks were open at that moment."""

    at: float
    open_ids: list[str]


@dataclass
class Verdict:
    scenario: str
    tasks: int
    lost: list[str]
    wrong_state: list[str]
    changed: list[str]
    unfenced: list[str]
    duplicates: list[str]
    unexplained: list[str]
    recovery: float | None
    notes: str = ""

    def problems(self) -> list[str]:
        found = []
        for label, ids in (
            ("lost (missing or not terminal)", self.lost),
            ("not in the expected terminal state", self.wrong_state),
            ("terminal state changed afterwards", self.changed),
            ("completed by a lease that was not current", self.unfenced),
            ("run twice without an expired lease", self.unexplained),
        ):
            if ids:
                found.append(f"{len(ids)} {label}: {ids[:5]}")
        return found


@dataclass
class Row:
    nodeid: str
    verdict: Verdict


RESULTS: list[Row] = []
OUTCOMES: dict[str, str] = {}  # nodeid -> passed/failed, from the conftest hook

FINAL_SQL = (
    "SELECT id::text, state, result, attempts, extract(epoch FROM finished_at)::float8 "
    "FROM tasks WHERE id = ANY(%s::uuid[])"
)


def final_of(rows: Sequence[Sequence[Any]]) -> dict[str, Final]:
    """Rows of FINAL_SQL by task id, with the `fault` handler's result decoded."""
    final = {}
    for task_id, state, result, attempts, finished in rows:
        value: dict[str, Any] = {}
        if result is not None:
            message = struct_pb2.Value()
            message.ParseFromString(bytes(result))
            decoded = json_format.MessageToDict(message)
            value = decoded if isinstance(decoded, dict) else {}
        attempt, pid = int(value.get("attempt", 0)), int(value.get("pid", 0))
        final[task_id] = Final(state, attempt, pid, attempts, finished)
    return final


def judge(
    scenario: str,
    ids: Sequence[str],
    first: dict[str, Final],
    again: dict[str, Final],
    executions: Sequence[Execution],
    expect: dict[str, str] | None = None,
    fault: Fault | None = None,
) -> Verdict:
    """The verdict on tasks `ids`, read twice (`first`, then `again` a moment later)."""
    expected = expect or {}
    effects: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for task_id, attempt, pid, phase, _ in executions:
        if phase == "effect":
            effects[task_id].append((attempt, pid))

    def unfenced(i: str) -> bool:
        f = first[i]
        return f.state == "completed" and (f.result_attempt, f.result_pid) not in effects[i]

    def unexplained(i: str) -> bool:
        distinct = len({attempt for attempt, _ in effects[i]})
        return i not in first or first[i].attempts <= 1 or distinct < len(effects[i])

    duplicates = [i for i in ids if len(effects[i]) > 1]
    recovery = None
    if fault is not None:
        ends = [f.finished_at for i in fault.open_ids if (f := first.get(i)) and f.finished_at]
        recovery = max(ends, default=fault.at) - fault.at
    return Verdict(
        scenario=scenario,
        tasks=len(ids),
        # With its state, to tell "never stored" from "stuck": id=STATE.
        lost=[
            f"{i}={first[i].state if i in first else 'MISSING'}"
            for i in ids
            if i not in first or first[i].state not in TERMINAL
        ],
        wrong_state=[
            i for i in ids if i in first and first[i].state != expected.get(i, "completed")
        ],
        changed=[i for i in ids if first.get(i) != again.get(i)],
        unfenced=[i for i in ids if i in first and unfenced(i)],
        duplicates=duplicates,
        unexplained=[i for i in duplicates if unexplained(i)],
        recovery=recovery,
    )


def assert_contract(verdict: Verdict) -> None:
    problems = verdict.problems()
    assert not problems, f"{verdict.scenario}: " + "; ".join(problems)


def summary_lines() -> list[str]:
    """The fault table: one line per scenario run."""
    header = (
        f"{'scenario':<34} {'tasks':>6} {'lost':>5} {'dupl.':>6} {'recovery s':>11}  "
        f"{'result':<7} notes"
    )
    lines = [header, "-" * len(header)]
    for row in RESULTS:
        v = row.verdict
        recovery = f"{v.recovery:.2f}" if v.recovery is not None else "-"
        outcome = OUTCOMES.get(row.nodeid, "?")
        lines.append(
            f"{v.scenario:<34} {v.tasks:>6} {len(v.lost):>5} {len(v.duplicates):>6} "
            f"{recovery:>11}  {outcome:<7} {v.notes}"
        )
    return lines


def write_table() -> None:
    """Keep the table next to the process logs too (for CI artefacts)."""
    LOGS.mkdir(parents=True, exist_ok=True)
    (LOGS / "faults-table.txt").write_text("\n".join(summary_lines()) + "\n")
