"""Client overhead with thousands of tasks in flight: wanr2v against dashscope.AsyncClient.

Quotas off (``Quotas.off()``: no rates, no running limit), generation time uniform
2–6 s at real time, every task fired at once and waited for. Each client runs alone
in its own subprocess (``bench/_common.py``), one after another, against a fresh
emulator served by this process on 127.0.0.1; the figures are the client process's
own: CPU seconds (user + system, from firing to the end, imports excluded) per task,
and peak RSS (``VmHWM``, imports included).

- wanr2v: ``Limits.unlimited(max_connections=4)`` (no rates; HTTP requests in flight
  capped at 4, the pool's size: on loopback 4 connections carry all the emulator can
  serve, and httpcore's pool pays per connection on every request), told that the
  service runs every task at once (``running_slots`` = the batch size, as quotas are
  off), and a ``PollPolicy`` fitted to the workload's time scale: prior 2–6 s, trusted
  as is (``prior_slack=1``), polls 0.25–5 s apart.
- ``dashscope.AsyncClient().videos.jobs``: ``create`` then ``wait`` with its defaults
  (polls 1, 2, 4, 8, 8… s apart; pool of 100 connections), one coroutine per task,
  ``asyncio.wait`` over them all.

A client still busy at its cap is stopped; its figures are then lower bounds
("did not finish in X s", CPU marked ≥).

Usage::

    python bench/bench_overhead.py [--sizes 2000 10000] [--cap 120] [--vendor-cap-large 60]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt, markdown_table, percentile, run_child

from wanr2v.testing import EmulatorConfig, Quotas, serve

GENERATION = (2.0, 6.0)
POLL = {"min_interval": 0.25, "max_interval": 5.0, "prior": list(GENERATION), "prior_slack": 1.0}


def _run(kind: str, n: int, cap: float, seed: int) -> dict[str, Any]:
    config = EmulatorConfig(
        time_scale=1.0, seed=seed, generation_time=GENERATION, quotas=Quotas.off()
    )
    spec: dict[str, Any] = {"client": kind, "n": n, "pace": None, "cap": cap}
    if kind == "wanr2v":
        spec |= {"limits": "unlimited", "max_connections": 4, "running_slots": n, "poll": POLL}
    with serve(config) as emu:
        spec["base_url"] = emu.base_url
        report = run_child(spec)
        stats = emu.stats()
        records = emu.task_records()
    lags = [
        r.first_final_query - r.end_time
        for r in records
        if r.first_final_query is not None and r.end_time is not None
    ]
    return {
        "report": report,
        "created": stats.tasks_created,
        "queries": stats.count("query"),
        "requests": stats.total_requests,
        "lag_p95": percentile(lags, 95),
        "finished": report["unfinished"] == 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cap", type=float, default=120.0, help="seconds a client may take")
    parser.add_argument(
        "--vendor-cap-large",
        type=float,
        default=60.0,
        help="seconds dashscope.AsyncClient may take above 2,000 tasks",
    )
    parser.add_argument("--only", action="append", default=[], help="wanr2v or asyncclient")
    args = parser.parse_args(argv)

    rows = []
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for n in args.sizes:
        for name, kind in (("wanr2v", "wanr2v"), ("dashscope.AsyncClient", "asyncclient")):
            if args.only and kind not in args.only:
                continue
            cap = args.cap if kind == "wanr2v" or n <= 2000 else args.vendor_cap_large
            f = _run(kind, n, cap, args.seed)
            results[(kind, n)] = f
            rep = f["report"]
            done = rep["ok"] + rep["failed"]
            lower = "" if f["finished"] else "≥ "
            rows.append(
                [
                    name,
                    f"{n:,}",
                    f"{rep['ok']:,}" + ("" if f["finished"] else f" (did not finish in {cap:g} s)"),
                    str(rep["failed"]),
                    f"{f['created']:,}",
                    fmt(rep["last_done"] - rep["t_fire"] if rep.get("last_done") else None),
                    f"{lower}{rep['cpu_work']:.1f}",
                    f"{lower}{1000 * rep['cpu_work'] / max(done, 1):.2f}"
                    if f["finished"]
                    else f"≥ {1000 * rep['cpu_work'] / n:.2f}",
                    fmt(rep["peak_rss_mb"], 1),
                    fmt(f["queries"] / max(f["created"], 1), 2),
                    fmt(f["lag_p95"], 2),
                ]
            )
            print(f"... {name} at {n:,}: done", file=sys.stderr, flush=True)

    headers = [
        "client",
        "tasks in flight",
        "succeeded",
        "failed",
        "created on the server",
        "wall s",
        "CPU s",
        "CPU ms / task",
        "peak RSS MB",
        "queries / task",
        "lag p95 s",
    ]
    print(
        f"\n### Overhead: tasks fired at once, quotas off, generation {GENERATION[0]:g}–"
        f"{GENERATION[1]:g} s\n"
    )
    print(markdown_table(headers, rows))
    _targets(results)
    return 0


def _targets(results: dict[tuple[str, int], dict[str, Any]]) -> None:
    checks = []
    w2, v2 = results.get(("wanr2v", 2000)), results.get(("asyncclient", 2000))
    if w2 is not None:
        if v2 is not None:
            wc, vc = w2["report"]["cpu_work"], v2["report"]["cpu_work"]
            note = "" if v2["finished"] else " (vendor capped: a lower bound)"
            checks.append(
                (
                    "2,000: CPU ≤ ⅓ of the best vendor client",
                    w2["finished"] and wc <= vc / 3,
                    f"{wc:.1f} s vs {vc:.1f} s{note}",
                )
            )
        rss = w2["report"]["peak_rss_mb"]
        checks.append(("2,000: peak RSS ≤ 60 MB", rss <= 60, f"{rss:.1f} MB"))
    w10 = results.get(("wanr2v", 10000))
    if w10 is not None:
        rss = w10["report"]["peak_rss_mb"]
        checks.append(
            (
                "10,000: within 200 MB RSS",
                w10["finished"] and rss <= 200,
                f"{rss:.1f} MB, {w10['report']['ok']:,} succeeded",
            )
        )
    if checks:
        print("\nTargets (wanr2v):\n")
        print(
            markdown_table(
                ["target", "met", "measured"],
                [[t, "yes" if ok else "**no**", m] for t, ok, m in checks],
            )
        )


if __name__ == "__main__":
    sys.exit(main())
