"""What the fuzz suite tried and saw, for the table at the end of the run."""

from __future__ import annotations

from collections import Counter, defaultdict

TRIED: Counter[str] = Counter()
CODES: defaultdict[str, Counter[str]] = defaultdict(Counter)
FINDINGS: list[str] = []  # a crash, or tasks lost, in words
LOST: list[int] = []


def seen(rpc: str, code: str) -> None:
    TRIED[rpc] += 1
    CODES[rpc][code] += 1


def lines() -> list[str]:
    width = max((len(rpc) for rpc in TRIED), default=10)
    out = [f"{'request':<{width}}  tried  codes seen"]
    for rpc in sorted(TRIED):
        codes = ", ".join(f"{code} {n}" for code, n in CODES[rpc].most_common())
        out.append(f"{rpc:<{width}}  {TRIED[rpc]:>5}  {codes}")
    out.append(f"{'total':<{width}}  {sum(TRIED.values()):>5}")
    out.append(f"crashes or restarts: {len(FINDINGS)}" + "".join(f"\n  {f}" for f in FINDINGS))
    out.append(f"tasks lost: {sum(LOST) if LOST else 'not measured'}")
    return out
