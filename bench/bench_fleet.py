"""A fleet on one account: 8 worker processes × 25 tasks, with and without ``storage_uri``.

The workload of issue 13: eight worker processes of one account (one API key), each
running a batch of 25 tasks (``run_many``, everything fired at once), against the
emulator with the vendor's quotas (5 creates/s, 5 tasks running, 20 queries/s, PENDING
queueing past 5), time-scaled so the whole benchmark takes a few minutes. A real
``redis-server`` runs on 127.0.0.1 for the shared runs.

Scenarios (each on a fresh emulator with the same seed):

1. **no storage_uri**: every process has its own governor (today's behaviour);
2. **storage_uri=redis://…**: rates, task slots and 429 back-off shared through Redis,
   each worker journaling into a ``RedisJournal``;
3. **kill -9**: as 2, and worker 0 is killed with ``SIGKILL`` once 10 of its tasks are
   created; the benchmark measures how long its task-slot leases stay in Redis, then a
   new process ``resume``-s worker 0's journal to the end.

Columns:

- succeeded / failed: batch items (all 200; for the kill scenario worker 0's items
  are counted from the resume);
- 429s: answers 429 the emulator gave (all processes);
- dup creates: the emulator's count of creates repeating an earlier create's body;
- makespan: from the common start to the last item's end (emulator seconds: real
  seconds × time scale), and its ratio to the **quota bound**: the earliest possible
  end of the emulator's own schedule — the drawn generation times in creation order,
  creates at 5/s from t=0, 5 slots, FIFO, plus the dispatch delay.

Usage::

    python bench/bench_fleet.py [--workers 8] [--tasks 25] [--scale 10] [--seed 1]
        [--generation 10 20] [--only none,redis,kill]

Needs ``redis-server`` on the PATH (Debian: ``apt-get install redis-server``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fifo_bound, fmt, markdown_table

KEY = "sk-wanr2v-fleet-bench"
MODEL = "wan2.6-r2v-flash"
REFS = ["https://cdn.example.com/role1.mp4", "https://cdn.example.com/dog.png"]


# --- the worker (a child process) ------------------------------------------------------


async def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    from wanr2v import AsyncWanClient, Limits, PollPolicy, VideoRequest
    from wanr2v.journal import RedisJournal

    scale = spec["scale"]
    uri = spec.get("redis")
    requests = {
        f"w{spec['worker']}-{i}": VideoRequest(
            model=MODEL,
            prompt=f"character1 walks her dog character2, worker {spec['worker']} take {i}",
            reference_urls=REFS,
            duration=5,
        )
        for i in range(spec["tasks"])
    }
    async with AsyncWanClient(
        api_key=KEY,
        base_url=spec["base_url"],
        limits=Limits().scaled(scale),
        poll_policy=PollPolicy().scaled(scale),
        storage_uri=uri,
        reconcile_grace=2.0 / scale,
    ) as client:
        journal = RedisJournal(uri, name=f"bench-w{spec['worker']}") if uri else None
        delay = spec["start_at"] - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        print(json.dumps({"pid": os.getpid(), "started": True}), flush=True)
        if spec.get("resume"):
            assert journal is not None
            items = await client.resume(journal)
        else:
            items = await client.run_many(requests, journal=journal)
        end = time.monotonic()
        if journal is not None:
            await journal.aclose()
        stats = client.statistics()
    errors: dict[str, int] = {}
    for it in items:
        if not it.ok:
            name = type(it.error).__name__ if it.error else "not SUCCEEDED"
            errors[name] = errors.get(name, 0) + 1
    return {
        "worker": spec["worker"],
        "ok": sum(it.ok for it in items),
        "failed": sum(not it.ok for it in items),
        "errors": errors,
        "end": end,
        "rate_limited": stats.rate_limited,
        "created": stats.created,
    }


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    report = asyncio.run(_worker(spec))
    print(json.dumps(report), flush=True)
    return 0


# --- the harness -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """A throw-away redis-server on a free loopback port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            sys.exit("bench_fleet: redis-server is not installed (apt-get install redis-server)")
        self.dir = tempfile.TemporaryDirectory(prefix="wanr2v-fleet-")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir.name, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("bench_fleet: redis-server did not start")
            time.sleep(0.02)
        self.uri = f"redis://127.0.0.1:{self.port}/0"

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.dir.cleanup()


def _start(spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASHSCOPE_", "WANR2V_"))}
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(proc: subprocess.Popen[str], cap: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=cap)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    if "ok" not in report:
        if proc.returncode == -signal.SIGKILL:
            return {"killed": True}
        raise RuntimeError(f"worker failed (rc={proc.returncode}):\n{err[-3000:]}")
    return report


def _leases_of(r: Any, pid: int) -> int:
    seconds, micros = r.time()
    now = seconds * 1_000_000 + micros
    n = 0
    for key in r.scan_iter("wanr2v:*:slots"):
        # A lease counts until its expiry (Redis time): past it, any taker drops it.
        live = r.zrange(key, now, "+inf", byscore=True)
        n += sum(1 for m in live if f":{pid}:" in m)
    return n


def run_scenario(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    from wanr2v.testing import EmulatorConfig, serve

    config = EmulatorConfig(
        time_scale=args.scale, seed=args.seed, generation_time=tuple(args.generation)
    )
    redis = Redis() if kind in ("redis", "kill") else None
    extra: dict[str, Any] = {}
    try:
        with serve(config) as emu:
            start_at = time.monotonic() + 3.0 + 0.3 * args.workers
            specs = [
                {
                    "worker": w,
                    "tasks": args.tasks,
                    "scale": args.scale,
                    "base_url": emu.base_url,
                    "redis": redis.uri if redis else None,
                    "start_at": start_at,
                }
                for w in range(args.workers)
            ]
            procs = [_start(s) for s in specs]
            if kind == "kill":
                # The harness shares this process with the emulator: it watches Redis
                # over one connection, a few times a second, to disturb it little.
                import redis as redis_py

                assert redis is not None
                r = redis_py.Redis.from_url(redis.uri, decode_responses=True)
                victim = procs[0]
                while int(r.hlen("wanr2v:journal:bench-w0:tasks")) < 10:
                    if victim.poll() is not None:
                        raise RuntimeError("worker 0 ended before it could be killed")
                    time.sleep(0.1)
                held = _leases_of(r, victim.pid)
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed_at = time.monotonic()
                while _leases_of(r, victim.pid):
                    time.sleep(0.1)
                r.close()
                extra["leases_held"] = held
                extra["slots_back_s"] = time.monotonic() - killed_at
                resume = _start({**specs[0], "resume": True, "start_at": 0})
            reports = [_finish(p, args.cap) for p in procs]
            if kind == "kill":
                rep = _finish(resume, args.cap)
                extra["resume"] = rep
                reports[0] = rep
            stats = emu.stats()
            records = emu.task_records()
            dispatch = config.dispatch_delay
    finally:
        if redis is not None:
            redis.close()
    records.sort(key=lambda r: r.submit_time)
    gens = [r.generation_time for r in records]
    bound = fifo_bound(gens, creates_per_s=5, slots=5, dispatch_delay=dispatch)
    ends = [r["end"] for r in reports if "end" in r]
    return {
        "kind": kind,
        "ok": sum(r.get("ok", 0) for r in reports),
        "failed": sum(r.get("failed", 0) for r in reports),
        "errors": [r.get("errors") for r in reports if r.get("errors")],
        "throttled": stats.throttled,
        "throttled_by": {ep: codes[429] for ep, codes in stats.requests.items() if codes.get(429)},
        "created": stats.tasks_created,
        "duplicates": stats.duplicate_creates,
        "makespan": (max(ends) - start_at) * args.scale if ends else None,
        "bound": bound,
        **extra,
    }


NAMES = {
    "none": "no storage_uri (a governor per process)",
    "redis": "storage_uri=redis://… (shared)",
    "kill": "shared, worker 0 killed -9, resumed",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=25, help="tasks per worker")
    parser.add_argument("--scale", type=float, default=10.0, help="emulator time scale")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--generation", type=float, nargs=2, default=(10.0, 20.0), metavar=("LOW", "HIGH"),
        help="generation time bounds, emulator seconds (default 10 20)",
    )  # fmt: skip
    parser.add_argument("--cap", type=float, default=600.0, help="seconds a worker may take")
    parser.add_argument("--only", default="none,redis,kill")
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)

    results = [run_scenario(args, kind) for kind in args.only.split(",")]
    total = args.workers * args.tasks
    rows = []
    for r in results:
        ratio = r["makespan"] / r["bound"] if r["makespan"] and r["bound"] else None
        rows.append(
            [
                NAMES[r["kind"]],
                f"{r['ok']}/{total}",
                str(r["failed"]),
                str(r["throttled"]),
                str(r["duplicates"]),
                fmt(r["makespan"], 0),
                fmt(r["bound"], 0),
                fmt(ratio, 3),
                fmt(r.get("slots_back_s"), 1),
            ]
        )
    print(
        f"\n### Fleet: {args.workers} processes × {args.tasks} tasks, one account, vendor "
        f"quotas, time scale {args.scale:g}, generation {args.generation[0]:g}–"
        f"{args.generation[1]:g} s, seed {args.seed}\n"
    )
    print(
        markdown_table(
            [
                "scenario",
                "succeeded",
                "failed",
                "429s",
                "dup creates",
                "makespan (emu s)",
                "quota bound (emu s)",
                "× bound",
                "slots back after kill (s)",
            ],
            rows,
        )
    )
    print()
    for r in results:
        if r["errors"]:
            print(f"- {NAMES[r['kind']]}: errors {r['errors']}")
        if r["throttled_by"]:
            print(f"- {NAMES[r['kind']]}: 429s by endpoint {r['throttled_by']}")
        if "resume" in r:
            res = r["resume"]
            print(
                f"- kill: worker 0 held {r['leases_held']} slot lease(s) when killed; they "
                f"were back in {r['slots_back_s']:.1f} s; its resume finished "
                f"{res['ok']}/{args.tasks} items ({res['created']} new creates)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
