"""The benchmark's results as a table of figures (the JSON holds everything)."""

from __future__ import annotations

from typing import Any


def _ms(s: dict[str, Any] | None) -> str:
    if not s:
        return "-"
    return f"{s['p50']:.1f} / {s['p95']:.1f} / {s['p99']:.1f}"


def rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) pairs for every workload that ran."""
    out: list[tuple[str, str]] = []
    failed = {k: results[k] for k in results.get("errors", [])}
    results = {k: v for k, v in results.items() if k not in failed}
    out += [(f"{name}: FAILED", detail["error"]) for name, detail in failed.items()]
    if burst := results.get("burst"):
        out += _burst_rows(burst, "burst")
    if lat := results.get("latency"):
        out += _latency_rows(lat, "latency")
    if fan := results.get("fan-in"):
        for label, load in (("before", fan["server_before"]), ("idle", fan["server_idle"])):
            value = f"{load['rss_mb']} MB / {load['cpu_percent']} %" if load else "n/a"
            out.append((f"fan-in: server RSS / CPU, {label} ({fan['workers']} streams)", value))
        out.append(
            ("fan-in: submit->start p50/p95/p99 ms", _ms(fan["latency"]["submit_to_start_ms"]))
        )
    if back := results.get("backlog"):
        out += _backlog_rows(back)
    out += _client_rows(results)
    return out


def _client_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for name in ("client", "client-latency"):
        if not (c := results.get(name)):
            continue
        how = f"coalesce {'on' if c['coalesce'] else 'off'}, {c['connections']} conn."
        if name == "client":
            label = f"client: {c['threads']} threads ({how})"
            done = f"{c['completed']:,}/{c['accepted']:,}"
            out.append((f"{label}, e2e tasks/s", f"{c['e2e_tasks_per_s']:,.0f} ({done} done)"))
        else:
            label = f"client-latency: one thread at {c['rate']:g}/s ({how})"
        out.append((f"{label}, submit p50/p95/p99 ms", _ms(c["submit_ms"])))
        out.append((f"{label}, submit->start p50/p95/p99 ms", _ms(c["submit_to_start_ms"])))
    return out


def _burst_rows(burst: dict[str, Any], label: str) -> list[tuple[str, str]]:
    out = []
    for kind, name in (("single", "SubmitTask x callers"), ("batch", "BatchSubmitTasks")):
        b = burst[kind]
        done = f"{b['completed']:,}/{b['accepted']:,}"
        out.append((f"{label}: {name}, accepted/s", f"{b['accepted_per_s']:,.0f}"))
        out.append((f"{label}: {name}, e2e tasks/s", f"{b['e2e_tasks_per_s']:,.0f} ({done} done)"))
        out.append((f"{label}: {name}, RPC p50/p95/p99 ms", _ms(b["rpc_ms"])))
    return out


def _latency_rows(lat: dict[str, Any], label: str) -> list[tuple[str, str]]:
    rate = f"{lat['rate']:g}/s"
    out = [
        (f"{label}: submit->start p50/p95/p99 ms at {rate}", _ms(lat["submit_to_start_ms"])),
        (f"{label}: submit->completed p50/p95/p99 ms", _ms(lat["submit_to_completed_ms"])),
        (f"{label}: SubmitTask gRPC p50/p95/p99 ms", _ms(lat["rpc_ms"])),
    ]
    if rest := lat.get("rest"):
        out.append(
            (
                f"{label}: REST POST /api/v1/tasks p50/p95/p99 ms at {rest['rate']:g}/s",
                _ms(rest["rpc_ms"]),
            )
        )
    return out


def table(results: dict[str, Any]) -> str:
    pairs = rows(results)
    width = max((len(k) for k, _ in pairs), default=10)
    lines = [f"dtq bench: server {results['server']}, queue {results['queue']}"]
    lines += [f"{k.ljust(width)}  {v}" for k, v in pairs]
    return "\n".join(lines)


def _backlog_rows(back: dict[str, Any]) -> list[tuple[str, str]]:
    out = [
        (
            f"backlog: fill {back['backlog_tasks']:,} tasks, accepted/s",
            f"{back['fill_accepted_per_s']:,.0f}",
        ),
        ("backlog: Redis bytes/queued task (keys)", f"{back['redis_bytes_per_task']}"),
        ("backlog: Redis bytes/task (used_memory)", f"{back['redis_used_memory_bytes_per_task']}"),
        ("backlog: PostgreSQL bytes/task", f"{back['pg_bytes_per_task']}"),
    ]
    out += _burst_rows(back["burst_with_backlog"], "backlog burst")
    for key, value in back["slowdown"].items():
        out.append((f"backlog: slowdown {key}", f"{value * 100:.1f} %"))
    return out
