"""CPU seconds used by every process on the machine, grouped by program, between two
snapshots of /proc: who spent the two cores during a benchmark run."""

from __future__ import annotations

import os
import resource
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _name(pid: str, names: dict[int, str]) -> str:
    if int(pid) in names:
        return names[int(pid)]
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in cmd if w] or ["?"]
    base = os.path.basename(words[0])
    for program in ("postgres", "redis-server"):
        if program in base:
            return program
    if base.startswith("python") and len(words) > 1:
        return "python " + " ".join(os.path.basename(w) for w in words[1:4])
    return base


def snapshot(names: dict[int, str]) -> dict[tuple[str, str], float]:
    """(pid, program) -> CPU seconds (user + system) so far."""
    out: dict[tuple[str, str], float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[(entry.name, _name(entry.name, names))] = (int(fields[11]) + int(fields[12])) / TICK
    out[("self", "children")] = _children()
    return out


def _children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def spent(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, float]:
    """Program -> CPU seconds between the snapshots, largest first; "children" is what
    this process's own finished children used (the `dtq bench` client)."""
    total: dict[str, float] = defaultdict(float)
    total["children"] = _children() - before.get(("self", "children"), 0.0)
    for key, seconds in after.items():
        if key[0] == "self":
            continue
        total[key[1]] += seconds - before.get(key, 0.0)
    return dict(sorted(((k, round(v, 2)) for k, v in total.items() if v >= 0.05),
                       key=lambda kv: -kv[1]))  # fmt: skip
