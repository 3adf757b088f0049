"""Fan-out at the service's limits: 40 tasks, wanr2v side by side with the vendor's SDK.

The workload of issue 4: 40 reference-to-video tasks, generation time uniform 4–12 s,
on the emulator with the real quotas at real time (5 creates/s, 5 tasks running,
20 queries/s, PENDING queueing past 5). Every client gets a fresh emulator with the
same seed, so the i-th task it creates draws the same generation time. Each client runs
in its own subprocess (``bench/_common.py``) so its CPU and peak RSS are its own; the
emulators are served by this process on 127.0.0.1. By default all clients run at once
(about two minutes in all); ``--serial`` runs them one after another.

Clients: wanr2v (40 ``client.call`` in a task group, default ``Limits`` and
``PollPolicy``, no pacing by the caller); the vendor's legacy ``VideoSynthesis.call``
in 40 threads, ``AioVideoSynthesis.call`` with ``asyncio.gather``-style fan-out, and
``dashscope.AsyncClient().videos.jobs`` create + wait — each fired at once, and paced
by its caller at 4 creates/s.

Columns:

- makespan: from firing to the last call's return (client side), and its ratio to
  the bound: the earliest possible end of the emulator's own schedule — the drawn
  generation times in creation order, creates at 5/s from t=0, 5 slots, FIFO, plus
  the emulator's dispatch delay;
- 429s: answers 429 the emulator gave this client (each client has its own emulator);
- failed / lost: calls that did not return a SUCCEEDED result;
- dup: the emulator's count of creates repeating an earlier create's body;
- queries / task: task queries the emulator answered, per task created;
- lag p50 / p95: task end on the server -> first query that saw it final
  (the emulator records both), over the tasks some query saw final;
- CPU: the client process's user + system seconds from firing to the end
  (interpreter start and imports excluded); peak RSS: its ``VmHWM``.

Usage::

    python bench/bench_fanout.py [--serial] [--n 40] [--seed 1] [--cap 240]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    fifo_bound,
    fmt,
    markdown_table,
    percentile,
    run_child,
    run_children,
)

from wanr2v.testing import Emulator, EmulatorConfig, serve

PACE = 4.0
CLIENTS: list[tuple[str, str, float | None]] = [
    ("wanr2v", "wanr2v", None),
    ("VideoSynthesis (threads)", "legacy-threads", None),
    ("VideoSynthesis (threads)", "legacy-threads", PACE),
    ("AioVideoSynthesis (gather)", "legacy-aio", None),
    ("AioVideoSynthesis (gather)", "legacy-aio", PACE),
    ("dashscope.AsyncClient (gather)", "asyncclient", None),
    ("dashscope.AsyncClient (gather)", "asyncclient", PACE),
]


def _figures(emu: Emulator, report: dict[str, Any], n: int) -> dict[str, Any]:
    stats = emu.stats()
    records = emu.task_records()
    lags = [
        r.first_final_query - r.end_time
        for r in records
        if r.first_final_query is not None and r.end_time is not None
    ]
    created = stats.tasks_created
    all_ok = report["ok"] == n
    makespan = (report["last_done"] - report["t_fire"]) if report.get("last_done") else None
    return {
        "report": report,
        "generation_times": [r.generation_time for r in records],
        "created": created,
        "throttled": stats.throttled,
        "duplicates": stats.duplicate_creates,
        "queries": stats.count("query"),
        "q_per_task": stats.count("query") / created if created else None,
        "lag_p50": percentile(lags, 50),
        "lag_p95": percentile(lags, 95),
        "lags_seen": len(lags),
        "makespan": makespan,
        "all_ok": all_ok,
        "final_by_status": dict(stats.tasks_by_status),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="tasks per client (default 40)")
    parser.add_argument("--seed", type=int, default=1, help="emulator seed (default 1)")
    parser.add_argument("--cap", type=float, default=240.0, help="seconds a client may take")
    parser.add_argument("--serial", action="store_true", help="run the clients one at a time")
    parser.add_argument(
        "--only", action="append", default=[], help="run only clients whose kind matches"
    )
    args = parser.parse_args(argv)
    clients = [c for c in CLIENTS if not args.only or any(o in c[1] for o in args.only)]

    config = EmulatorConfig(time_scale=1.0, seed=args.seed, generation_time=(4.0, 12.0))
    with contextlib.ExitStack() as stack:
        emus = [stack.enter_context(serve(config)) for _ in clients]
        specs = [
            {"client": kind, "base_url": emu.base_url, "n": args.n, "pace": pace, "cap": args.cap}
            for (_, kind, pace), emu in zip(clients, emus, strict=True)
        ]
        reports = [run_child(spec) for spec in specs] if args.serial else run_children(specs)
        figures = [_figures(emu, rep, args.n) for emu, rep in zip(emus, reports, strict=True)]
        dispatch = config.dispatch_delay

    # The bound of the whole workload, from a run whose emulator made all n tasks;
    # every run draws the same generation times in creation order (checked).
    full = [f["generation_times"] for f in figures if len(f["generation_times"]) == args.n]
    if not full:
        print("no client created all tasks: no bound", file=sys.stderr)
        return 1
    gens = full[0]
    for f in figures:
        g = f["generation_times"]
        if g != gens[: len(g)]:
            print("warning: a run drew different generation times", file=sys.stderr)
    bound = fifo_bound(gens, creates_per_s=5, slots=5, dispatch_delay=dispatch)

    rows = []
    for (name, _kind, pace), f in zip(clients, figures, strict=True):
        rep = f["report"]
        lost = args.n - rep["ok"]
        ms = f["makespan"]
        rows.append(
            [
                name,
                f"paced {pace:g}/s" if pace else "all at once",
                f"{rep['ok']}/{args.n}",
                str(lost),
                fmt(ms) + ("" if f["all_ok"] else " (incomplete)"),
                fmt(ms / bound, 3) if ms and f["all_ok"] else "–",
                str(f["throttled"]),
                str(f["duplicates"]),
                fmt(f["q_per_task"], 2),
                fmt(f["lag_p50"], 2),
                fmt(f["lag_p95"], 2),
                fmt(rep["cpu_work"], 2),
                fmt(rep["peak_rss_mb"], 1),
            ]
        )
    headers = [
        "client",
        "mode",
        "succeeded",
        "failed / lost",
        "makespan s",
        "× bound",
        "429s",
        "dup creates",
        "queries / task",
        "lag p50 s",
        "lag p95 s",
        "CPU s",
        "peak RSS MB",
    ]
    print(
        f"\n### Fan-out: {args.n} tasks, generation 4–12 s, real quotas, seed {args.seed}"
        f" ({'serial' if args.serial else 'clients side by side'})\n"
    )
    print(f"Server-side bound (FIFO, 5 slots, 5 creates/s): **{bound:.2f} s**\n")
    print(markdown_table(headers, rows))
    print()
    for (name, _kind, pace), f in zip(clients, figures, strict=True):
        errs = f["report"]["errors"]
        if errs or f["report"]["unfinished"]:
            mode = f"paced {pace:g}/s" if pace else "all at once"
            print(
                f"- {name}, {mode}: errors {errs}, unfinished {f['report']['unfinished']}, "
                f"tasks on the server {f['final_by_status']}"
            )

    _targets(clients, figures, bound, args.n)
    return 0


def _targets(
    clients: list[tuple[str, str, float | None]],
    figures: list[dict[str, Any]],
    bound: float,
    n: int,
) -> None:
    by = {(kind, pace): f for (_, kind, pace), f in zip(clients, figures, strict=True)}
    w = by.get(("wanr2v", None))
    ref = by.get(("asyncclient", PACE))
    if w is None:
        return
    checks: list[tuple[str, bool, str]] = []
    checks.append((f"all {n} fired at once succeed", w["all_ok"], f"{w['report']['ok']}/{n}"))
    if w["makespan"] is not None:
        ratio = w["makespan"] / bound
        checks.append(
            (
                "makespan ≤ 1.03 × bound",
                w["all_ok"] and ratio <= 1.03,
                f"{ratio:.3f} × {bound:.2f} s",
            )
        )
    checks.append(("at most 2 429s", w["throttled"] <= 2, f"{w['throttled']}"))
    if ref is not None:
        checks.append(
            (
                "lag p95 ≤ ½ × AsyncClient paced",
                w["lag_p95"] <= 0.5 * ref["lag_p95"],
                f"{w['lag_p95']:.2f} s vs {ref['lag_p95']:.2f} s",
            )
        )
        checks.append(
            (
                "queries / task ≤ AsyncClient paced",
                w["q_per_task"] <= ref["q_per_task"],
                f"{w['q_per_task']:.2f} vs {ref['q_per_task']:.2f}",
            )
        )
    print("\nTargets (wanr2v):\n")
    print(
        markdown_table(
            ["target", "met", "measured"],
            [[t, "yes" if ok else "**no**", m] for t, ok, m in checks],
        )
    )


if __name__ == "__main__":
    sys.exit(main())
