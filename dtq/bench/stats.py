"""Percentiles and process probes (CPU, RSS) for the benchmark."""

from __future__ import annotations

import contextlib
import math
import os
import re
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from dtq.process_tree import descendants


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear between the closest ranks; nan if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of `values` (rounded to 0.01), and how many there were."""
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "p99": round(percentile(values, 99), 2),
        "max": round(max(values), 2) if values else math.nan,
    }


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds used so far and resident memory of a process."""

    cpu_seconds: float
    rss_bytes: int


class ProcessProbe:
    """Reads a process's CPU and RSS: from /proc when its pid is known,
    else from the process_* metrics of its Prometheus endpoint."""

    def __init__(self, pid: int | None, metrics_url: str | None) -> None:
        self.pid = pid
        self.metrics_url = metrics_url

    def sample(self) -> ProcSample | None:
        try:
            if self.pid:
                return _from_proc(self.pid)
            if self.metrics_url:
                return _from_metrics(self.metrics_url)
        except (OSError, ValueError):
            return None
        return None

    @property
    def source(self) -> str:
        if self.pid:
            return f"/proc/{self.pid}"
        return self.metrics_url or "none"


def _from_proc(pid: int) -> ProcSample:
    """The process and the processes it started (`dtq server --processes N`)."""
    cpu, rss = 0.0, 0
    for one in [pid, *descendants(pid)]:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            sample = _one_proc(one)
            cpu, rss = cpu + sample.cpu_seconds, rss + sample.rss_bytes
    return ProcSample(cpu, rss)


def _one_proc(pid: int) -> ProcSample:
    with open(f"/proc/{pid}/stat") as f:
        # Fields after the command name (which may hold spaces): utime is the 14th field.
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return ProcSample(cpu, rss_kb * 1024)


_METRIC = re.compile(r"^(process_cpu_seconds_total|process_resident_memory_bytes) (\S+)$", re.M)


def _from_metrics(url: str) -> ProcSample:
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    found = {name: float(value) for name, value in _METRIC.findall(text)}
    if len(found) < 2:
        raise ValueError(f"no process_* metrics at {url}")
    return ProcSample(
        found["process_cpu_seconds_total"], int(found["process_resident_memory_bytes"])
    )
