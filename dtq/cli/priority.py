"""The `--priority` choices of the CLI and the enum values they stand for."""

from __future__ import annotations

import enum

from dtq.v1 import task_pb2


class PriorityChoice(enum.StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


PRIORITY = {
    PriorityChoice.low: task_pb2.PRIORITY_LOW,
    PriorityChoice.medium: task_pb2.PRIORITY_MEDIUM,
    PriorityChoice.high: task_pb2.PRIORITY_HIGH,
}
