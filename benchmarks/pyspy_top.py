#!/usr/bin/env python
"""Summarise a py-spy profile in raw (collapsed stacks) format: the functions
with the most samples, by own time (the frame on top of the stack) and by
inclusive time (anywhere in the stack).

    py-spy record --pid PID --format raw --duration 60 -o server.pyspy.txt
    python benchmarks/pyspy_top.py server.pyspy.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    """`func (path/to/file.py:12)` -> `func (to/file.py)`: a function, not a line."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    parts = m["file"].split("/")
    return f"{m['func']} ({'/'.join(parts[-2:])})"


def summarise(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";") if f]
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    return total, own, inclusive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument(
        "--match", default="", help="inclusive table: only functions matching this regex"
    )
    args = parser.parse_args()
    total, own, inclusive = summarise(args.profile)
    print(f"{args.profile}: {total} samples")
    wanted = re.compile(args.match)
    inclusive = Counter({f: n for f, n in inclusive.items() if wanted.search(f)})
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"\n| {title} % | function |\n|---:|---|")
        for func, n in counter.most_common(args.top):
            print(f"| {100 * n / max(total, 1):.1f} | {func} |")


if __name__ == "__main__":
    main()
