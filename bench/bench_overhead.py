"""Client overhead with thousands of tasks in flight: wanr2v against the vendor's SDK.

Quotas off (``Quotas.off()``: no rates, no running limit), generation time uniform
2–6 s at real time, every task fired at once and waited for. Each client runs alone
in its own subprocess (``bench/_common.py``), one after another, against a fresh
emulator served by this process on 127.0.0.1; the figures are the client process's
own: CPU seconds (user + system, from firing to the end, imports excluded) per task
and per HTTP request (the requests the emulator answered for that client), and peak
RSS (``VmHWM``, imports included). CPU seconds, not wall time, are the measure: the
machine may be shared, and a loaded machine stretches wall time, not CPU. The RSS
includes what ``import httpx`` brings: where click, rich and pygments are installed
(``wanr2v[cli]`` and the test environment), httpx imports its own command line
(``httpx._main``) and them, about 5.5 MB that a client without them does not carry.

Clients:

- ``wanr2v``: ``Limits.unlimited(max_connections=4)`` (no rates; HTTP requests in
  flight capped at 4, the pool's size: on loopback 4 connections carry all the
  emulator can serve, and httpcore's pool pays per connection on every request),
  told that the service runs every task at once (``running_slots`` = the batch size,
  as quotas are off), and a ``PollPolicy`` fitted to the workload's time scale:
  prior 2–6 s, trusted as is (``prior_slack=1``), polls 0.25–5 s apart. Default
  transport (httpx on httpcore).
  The calls are fanned out as the vendor's are (one asyncio task per call,
  ``asyncio.wait`` over them), so the harness costs the same on every side;
  ``--fanout taskgroup`` uses an anyio task group instead (anyio 4.16 adds a task
  handle with its own event per task: about 1.5 KB and a little CPU per task, the
  harness's not the client's).
- ``wanr2v + AioHttpClient``: the same on ``wanr2v.AioHttpClient()`` (httpx's API
  on aiohttp's connection pool, ``pip install 'wanr2v[aiohttp]'``).
- ``AioVideoSynthesis (gather)``: the vendor's legacy asyncio client (aiohttp, one
  shared session), ``AioVideoSynthesis.call`` per task (create, then its own wait:
  polls 1, 2, 3… s apart), all gathered at once — the strongest peer at this scale.
- ``dashscope.AsyncClient (gather)``: ``create`` then ``wait`` with its defaults
  (httpx; polls 1, 2, 4, 8, 8… s apart; pool of 100 connections), ``asyncio.wait``
  over them all. It collapses at this scale (httpcore's pool with thousands of
  waiters: ``shared/field-notes.md``), so it gets a shorter cap above 2,000 tasks.

A client still busy at its cap is stopped; its figures are then lower bounds
("did not finish in X s", CPU marked ≥).

After the measured runs, one more run of wanr2v (default transport, the smallest
size) goes under cProfile, and its top entries by cumulative and by own time are
printed below the tables: where the next change should look (``--no-profile-run``
skips it). ``--profile`` instead runs every wanr2v client under cProfile (the
profiler inflates their CPU figures, so do not read those as measurements).

Usage::

    python bench/bench_overhead.py [--sizes 2000 10000] [--cap 120] [--vendor-cap-large 60]
        [--only wanr2v --only wanr2v-aiohttp --only legacy-aio --only asyncclient]
        [--profile | --no-profile-run] [--profile-top 15] [--fanout tasks|taskgroup]
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
MAX_CONNECTIONS = 4

CLIENTS: list[tuple[str, str]] = [
    ("wanr2v", "wanr2v"),
    ("wanr2v + AioHttpClient", "wanr2v-aiohttp"),
    ("AioVideoSynthesis (gather)", "legacy-aio"),
    ("dashscope.AsyncClient (gather)", "asyncclient"),
]
VENDOR = ("legacy-aio", "asyncclient")


def _run(
    key: str,
    n: int,
    cap: float,
    seed: int,
    *,
    profile: bool = False,
    top: int = 15,
    fanout: str = "tasks",
) -> dict[str, Any]:
    config = EmulatorConfig(
        time_scale=1.0, seed=seed, generation_time=GENERATION, quotas=Quotas.off()
    )
    kind = "wanr2v" if key.startswith("wanr2v") else key
    spec: dict[str, Any] = {"client": kind, "n": n, "pace": None, "cap": cap}
    if kind == "wanr2v":
        spec |= {
            "limits": "unlimited",
            "max_connections": MAX_CONNECTIONS,
            "running_slots": n,
            "poll": POLL,
            "transport": "aiohttp" if key == "wanr2v-aiohttp" else "default",
            "profile": profile,
            "profile_top": top,
            "fanout": fanout,
        }
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
        "cap": cap,
    }


def _environments() -> str:
    """Which interpreter ran wanr2v's clients, and what ``import wanr2v`` loads there."""
    import subprocess

    from _common import child_python

    python = child_python({"client": "wanr2v"})
    probe = (
        "import importlib.util, sys, wanr2v; "
        "print(sorted(m for m in ('rich', 'click') if m in sys.modules)); "
        "print(importlib.util.find_spec('sniffio') is not None)"
    )
    answer = subprocess.run([python, "-c", probe], capture_output=True, text=True).stdout
    loaded, sniffio = [*answer.splitlines(), "?", "?"][:2]
    where = "this interpreter" if python == sys.executable else python
    return (
        f"wanr2v's clients ran under {where}; with them `import wanr2v` loaded {loaded} "
        "of rich/click (httpx imports its own command line, ~5.5 MB, where rich is "
        "installed: the vendor's SDK requires rich), and sniffio was "
        f"{'installed' if sniffio == 'True' else 'NOT installed'} (httpcore imports it "
        "on every request: without it each failed import scans sys.path). The vendor's "
        f"clients ran under {sys.executable}."
    )


def _row(name: str, n: int, f: dict[str, Any]) -> list[str]:
    rep = f["report"]
    done = rep["ok"] + rep["failed"]
    lower = "" if f["finished"] else "≥ "
    cpu = rep["cpu_work"]
    per_task = cpu / max(done, 1) if f["finished"] else cpu / n
    return [
        name,
        f"{n:,}",
        f"{rep['ok']:,}" + ("" if f["finished"] else f" (did not finish in {f['cap']:g} s)"),
        str(rep["failed"]),
        f"{f['created']:,}",
        fmt(rep["last_done"] - rep["t_fire"] if rep.get("last_done") else None),
        f"{lower}{cpu:.2f}",
        f"{lower}{1000 * per_task:.2f}",
        f"{f['requests']:,}",
        f"{lower}{1000 * cpu / max(f['requests'], 1):.3f}",
        fmt(rep["peak_rss_mb"], 1),
        fmt(f["queries"] / max(f["created"], 1), 2),
        fmt(f["lag_p95"], 2),
    ]


HEADERS = [
    "client",
    "tasks in flight",
    "succeeded",
    "failed",
    "created on the server",
    "wall s",
    "CPU s",
    "CPU ms / task",
    "HTTP requests",
    "CPU ms / request",
    "peak RSS MB",
    "queries / task",
    "lag p95 s",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cap", type=float, default=120.0, help="seconds a client may take")
    parser.add_argument(
        "--vendor-cap-large",
        type=float,
        default=60.0,
        help="seconds a vendor client may take above 2,000 tasks",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="wanr2v, wanr2v-aiohttp, legacy-aio or asyncclient (repeatable)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run wanr2v under cProfile and print its top entries (inflates its CPU)",
    )
    parser.add_argument(
        "--no-profile-run",
        dest="profile_run",
        action="store_false",
        help="skip the extra profiled run of wanr2v after the measured ones",
    )
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument(
        "--fanout",
        choices=["tasks", "taskgroup"],
        default="tasks",
        help="how wanr2v's calls are fanned out (tasks: as the vendor's; taskgroup: anyio)",
    )
    args = parser.parse_args(argv)

    rows = []
    results: dict[tuple[str, int], dict[str, Any]] = {}
    profiles: list[tuple[str, str]] = []
    for n in args.sizes:
        for name, key in CLIENTS:
            if args.only and key not in args.only:
                continue
            if key == "wanr2v-aiohttp" and not _have_aiohttp():
                print("... skipping AioHttpClient: pip install 'wanr2v[aiohttp]'", file=sys.stderr)
                continue
            cap = args.cap if key not in VENDOR or n <= 2000 else args.vendor_cap_large
            f = _run(
                key,
                n,
                cap,
                args.seed,
                profile=args.profile,
                top=args.profile_top,
                fanout=args.fanout,
            )
            results[(key, n)] = f
            rows.append(_row(name, n, f))
            if f["report"].get("profile"):
                profiles.append((f"{name} at {n:,}", f["report"]["profile"]))
            print(f"... {name} at {n:,}: done", file=sys.stderr, flush=True)

    if args.profile_run and not args.profile and (not args.only or "wanr2v" in args.only):
        n = min(args.sizes)
        f = _run("wanr2v", n, args.cap, args.seed, profile=True, top=args.profile_top)
        if f["report"].get("profile"):
            profiles.append((f"wanr2v at {n:,}, an extra run", f["report"]["profile"]))
        print(f"... wanr2v at {n:,} under cProfile: done", file=sys.stderr, flush=True)

    print(
        f"\n### Overhead: tasks fired at once, quotas off, generation {GENERATION[0]:g}–"
        f"{GENERATION[1]:g} s\n"
    )
    print(markdown_table(HEADERS, rows))
    print(f"\n{_environments()}")
    for title, text in profiles:
        note = (
            "the CPU figures above are inflated by it"
            if args.profile
            else "not one of the measured runs above"
        )
        print(f"\n#### Profile: {title} (cProfile; {note})\n")
        print("```\n" + text + "\n```")
    _targets(results, profiled=args.profile)
    return 0


def _have_aiohttp() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("aiohttp", "httpx_aiohttp"))


def _targets(results: dict[tuple[str, int], dict[str, Any]], *, profiled: bool) -> None:
    checks: list[tuple[str, bool, str]] = []
    peer = results.get(("legacy-aio", 2000))
    for key, label, share in (
        ("wanr2v", "default transport", 1.0),
        ("wanr2v-aiohttp", "AioHttpClient", 0.5),
    ):
        w = results.get((key, 2000))
        if w is None:
            continue
        rep = w["report"]
        if peer is not None and not profiled:
            wc, pc = rep["cpu_work"], peer["report"]["cpu_work"]
            note = "" if peer["finished"] else " (peer capped: a lower bound)"
            bound = "≤ AioVideoSynthesis" if share == 1.0 else "≤ ½ AioVideoSynthesis"
            checks.append(
                (
                    f"2,000, {label}: CPU {bound}",
                    w["finished"] and wc <= pc * share,
                    f"{wc:.2f} s vs {pc:.2f} s{note} ({wc / pc:.2f} ×)",
                )
            )
        rss = rep["peak_rss_mb"]
        checks.append((f"2,000, {label}: peak RSS ≤ 60 MB", rss <= 60, f"{rss:.1f} MB"))
        checks.append(
            (
                f"2,000, {label}: all succeed",
                w["finished"] and rep["ok"] == 2000,
                f"{rep['ok']:,} succeeded, {rep['failed']} failed",
            )
        )
    for key, label in (("wanr2v", "default transport"), ("wanr2v-aiohttp", "AioHttpClient")):
        w = results.get((key, 10000))
        if w is None:
            continue
        rss = w["report"]["peak_rss_mb"]
        checks.append(
            (
                f"10,000, {label}: detection lag p95 ≤ 3 s",
                w["finished"] and w["lag_p95"] <= 3.0,
                f"{w['lag_p95']:.2f} s",
            )
        )
        checks.append(
            (
                f"10,000, {label}: peak RSS ≤ 150 MB, all succeed",
                w["finished"] and rss <= 150 and w["report"]["ok"] == 10000,
                f"{rss:.1f} MB, {w['report']['ok']:,} succeeded",
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
