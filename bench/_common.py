"""Shared helpers of the benchmarks: one client per subprocess, figures from the emulator.

Each client runs in its own ``sys.executable`` subprocess (this file, run as a
script), so the CPU seconds and the peak RSS it reports are the client's alone: the
emulator that answers it is served by the parent on 127.0.0.1. The child imports only
what its client needs (wanr2v, or the vendor's ``dashscope``), never the emulator.

- CPU: ``resource.getrusage(RUSAGE_SELF)`` user + system, all threads, measured from
  just before the first request to the end of the workload (interpreter start and
  imports excluded); the total since the process started is reported too.
- Peak RSS: ``VmHWM`` from ``/proc/self/status`` (the high-water mark of this
  process's own address space; ``ru_maxrss`` would carry the parent's over a
  vfork+exec), falling back to ``ru_maxrss`` elsewhere.
- Time: ``time.monotonic()``, which is system-wide, so the parent can set a child's
  timestamps against the emulator's ``first_final_query_monotonic``.

Everything is bounded: a child gives up after ``cap`` seconds and reports what it has;
the parent kills a child that overstays its cap by a margin.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import subprocess

KEY = "sk-wanr2v-bench"
_REPORT_LOCK = threading.Lock()
MODEL = "wan2.6-r2v"
REFERENCES = ["https://cdn.example.com/role1.mp4", "https://cdn.example.com/dog.png"]
SIZE = "1280*720"
DURATION = 5


def prompt(i: int) -> str:
    """A distinct prompt per task, so the emulator counts only true duplicates."""
    return f"character1 walks her dog character2 along the beach, take {i}"


# --- measuring ------------------------------------------------------------------------


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def peak_rss_mb() -> float:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; NaN when empty."""
    if not values:
        return math.nan
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def fifo_bound(
    generation_times: Sequence[float],
    *,
    creates_per_s: int = 5,
    slots: int = 5,
    dispatch_delay: float = 0.0,
) -> float:
    """The earliest possible makespan of tasks with these generation times, in this
    (creation) order: creates admitted ``creates_per_s`` per second from t=0 (the
    emulator's sliding window admits a burst of that many, then as many a second
    later), ``slots`` running at once, first in first out."""
    free = [0.0] * slots
    end_max = 0.0
    for i, g in enumerate(generation_times):
        submit = float(i // creates_per_s) if creates_per_s else 0.0
        j = min(range(slots), key=free.__getitem__)
        start = max(submit, free[j]) + dispatch_delay
        free[j] = start + g
        end_max = max(end_max, free[j])
    return end_max


# --- running a child ------------------------------------------------------------------


CLIENT_PYTHON_ENV = "WANR2V_BENCH_CLIENT_PYTHON"
"""An interpreter for wanr2v's clients (``nox -s bench`` sets it): a venv holding only
``wanr2v[aiohttp]``, as a user deploys it. The vendor's clients run under this
process's interpreter, which has the vendor's SDK and what it requires (rich, typer)."""


def child_python(spec: dict[str, Any]) -> str:
    """The interpreter of one client: ``$WANR2V_BENCH_CLIENT_PYTHON`` for wanr2v's, when
    set, else this one."""
    own = os.environ.get(CLIENT_PYTHON_ENV)
    if own and str(spec.get("client", "")).startswith("wanr2v"):
        return own
    return sys.executable


def start_child(spec: dict[str, Any]) -> tuple[subprocess.Popen[bytes], Path]:
    """Start one client in a subprocess; ``finish_child`` collects its report."""
    # Imported here, not at the top: the child imports this module too, and what the
    # harness alone needs must not count in the client's memory.
    import subprocess
    import tempfile

    fd, name = tempfile.mkstemp(prefix="wanr2v-bench-", suffix=".json")
    os.close(fd)
    out = Path(name)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "DASHSCOPE_API_KEY": KEY}
    env.pop("DASHSCOPE_HTTP_BASE_URL", None)
    proc = subprocess.Popen(
        [child_python(spec), str(Path(__file__).resolve()), json.dumps(spec), str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return proc, out


def finish_child(proc: subprocess.Popen[bytes], out: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Wait for a child (killing it past its cap plus a margin) and read its report."""
    import subprocess

    limit = float(spec.get("cap", 600)) + 60
    try:
        _, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    try:
        report: dict[str, Any] = json.loads(out.read_text() or "null") or {}
    except ValueError:
        report = {}
    finally:
        out.unlink(missing_ok=True)
    if not report:
        tail = err.decode(errors="replace")[-2000:]
        raise RuntimeError(
            f"client {spec.get('client')} reported nothing (rc={proc.returncode}):\n{tail}"
        )
    return report


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc, out = start_child(spec)
    return finish_child(proc, out, spec)


def run_children(specs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Start every child at once and collect their reports (in order)."""
    started = [(spec, *start_child(spec)) for spec in specs]
    return [finish_child(proc, out, spec) for spec, proc, out in started]


# --- tables ---------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}{suffix}"


# --- the child side -------------------------------------------------------------------
#
# spec keys: client ("wanr2v" | "legacy-threads" | "legacy-aio" | "asyncclient"),
# base_url, n, pace (creates/s started by the caller, or None: all at once), cap
# (seconds), profile (run under cProfile, report the top ``profile_top`` entries),
# and for wanr2v: limits ("default" | "unlimited"), max_connections, running_slots,
# poll (PollPolicy keyword arguments), transport ("default" | "aiohttp":
# wanr2v.AioHttpClient), backend ("asyncio" | "trio"), fanout ("taskgroup", the
# default: an anyio task group; "tasks": one asyncio task per call, as the vendor's
# children do).


class _Outcomes:
    def __init__(self, n: int) -> None:
        self.n = n
        self.ok = 0
        self.errors: dict[str, int] = {}
        self.done_at: list[float] = []

    def succeeded(self) -> None:
        self.ok += 1
        self.done_at.append(time.monotonic())

    def failed(self, why: str) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1
        self.done_at.append(time.monotonic())

    def report(self) -> dict[str, Any]:
        finished = self.ok + sum(self.errors.values())
        return {
            "ok": self.ok,
            "failed": sum(self.errors.values()),
            "unfinished": self.n - finished,
            "errors": self.errors,
            "last_done": max(self.done_at) if self.done_at else None,
        }


def _err(exc: BaseException) -> str:
    code = getattr(exc, "code", None) or getattr(exc, "status_code", None)
    return f"{type(exc).__name__}" + (f"({code})" if code else "")


def _start_delay(spec: dict[str, Any], i: int) -> float:
    pace = spec.get("pace")
    return i / pace if pace else 0.0


async def _child_wanr2v(spec: dict[str, Any], res: _Outcomes, meta: dict[str, Any]) -> None:
    import anyio

    from wanr2v import AsyncWanClient, Limits, PollPolicy

    if spec.get("limits") == "unlimited":
        limits = Limits.unlimited(max_connections=int(spec.get("max_connections", 100)))
    else:
        limits = Limits()
    if spec.get("running_slots"):
        import attrs

        limits = attrs.evolve(limits, running_slots=int(spec["running_slots"]))
    policy = PollPolicy(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in spec.get("poll", {}).items()}
    )
    http: Any = None
    if spec.get("transport") == "aiohttp":
        from wanr2v import AioHttpClient

        http = AioHttpClient(max_connections=limits.max_connections)
    async with (
        http if http is not None else contextlib.nullcontext(),
        AsyncWanClient(
            api_key=KEY,
            base_url=spec["base_url"],
            limits=limits,
            poll_policy=policy,
            http_client=http,
        ) as client,
    ):

        async def one(i: int) -> None:
            await anyio.sleep_until(meta["t_fire"] + _start_delay(spec, i))
            try:
                result = await client.call(
                    model=MODEL,
                    prompt=prompt(i),
                    reference_urls=REFERENCES,
                    size=SIZE,
                    duration=DURATION,
                )
            except Exception as exc:
                res.failed(_err(exc))
                return
            if result.succeeded:
                res.succeeded()
            else:
                res.failed(str(result.status))

        meta["cpu_fire"], meta["t_fire"] = cpu_seconds(), time.monotonic()
        if spec.get("fanout") == "tasks" and spec.get("backend", "asyncio") == "asyncio":
            # As the vendor's children fan out: one asyncio task per call, asyncio.wait.
            import asyncio

            tasks = [asyncio.ensure_future(one(i)) for i in range(int(spec["n"]))]
            _, pending = await asyncio.wait(tasks, timeout=float(spec["cap"]))
            for t in pending:
                t.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        else:
            with anyio.move_on_after(float(spec["cap"])):
                async with anyio.create_task_group() as tg:
                    for i in range(int(spec["n"])):
                        tg.start_soon(one, i)
        st = client.statistics()
        meta["client_429"] = st.rate_limited
        meta["client_requests"] = dict(st.requests)
        meta["scheduler"] = {
            "polls": st.scheduler.polls,
            "transient_errors": st.scheduler.transient_errors,
            "observed": st.scheduler.observed_durations,
        }


async def _child_asyncclient(spec: dict[str, Any], res: _Outcomes, meta: dict[str, Any]) -> None:
    import asyncio

    import dashscope

    async with dashscope.AsyncClient(api_key=KEY, base_url=spec["base_url"]) as client:
        jobs = client.videos.jobs

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, meta["t_fire"] + _start_delay(spec, i) - time.monotonic()))
            try:
                job = await jobs.create(
                    model=MODEL,
                    prompt=prompt(i),
                    extra_input={"reference_urls": REFERENCES},
                    size=SIZE,
                    duration=DURATION,
                )
                done = await jobs.wait(job)
            except Exception as exc:
                res.failed(_err(exc))
                return
            if done.status == "SUCCEEDED":
                res.succeeded()
            else:
                res.failed(str(done.status))

        meta["cpu_fire"], meta["t_fire"] = cpu_seconds(), time.monotonic()
        tasks = [asyncio.ensure_future(one(i)) for i in range(int(spec["n"]))]
        _, pending = await asyncio.wait(tasks, timeout=float(spec["cap"]))
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _child_legacy_aio(spec: dict[str, Any], res: _Outcomes, meta: dict[str, Any]) -> None:
    import asyncio

    import dashscope
    from dashscope.aigc.video_synthesis import AioVideoSynthesis

    dashscope.base_http_api_url = spec["base_url"]

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, meta["t_fire"] + _start_delay(spec, i) - time.monotonic()))
        try:
            rsp = await AioVideoSynthesis.call(
                api_key=KEY,
                model=MODEL,
                prompt=prompt(i),
                reference_urls=REFERENCES,
                size=SIZE,
                duration=DURATION,
            )
        except Exception as exc:
            res.failed(_err(exc))
            return
        _legacy_outcome(rsp, res)

    meta["cpu_fire"], meta["t_fire"] = cpu_seconds(), time.monotonic()
    tasks = [asyncio.ensure_future(one(i)) for i in range(int(spec["n"]))]
    _, pending = await asyncio.wait(tasks, timeout=float(spec["cap"]))
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def _legacy_outcome(rsp: Any, res: _Outcomes) -> None:
    status = getattr(getattr(rsp, "output", None), "task_status", None)
    if getattr(rsp, "status_code", None) == 200 and status == "SUCCEEDED":
        res.succeeded()
    elif getattr(rsp, "status_code", None) != 200:
        res.failed(f"HTTP {rsp.status_code} {getattr(rsp, 'code', '')}".strip())
    else:
        res.failed(str(status))


def _child_legacy_threads(spec: dict[str, Any], res: _Outcomes, meta: dict[str, Any]) -> None:
    import threading

    import dashscope
    from dashscope import VideoSynthesis

    dashscope.base_http_api_url = spec["base_url"]
    lock = threading.Lock()

    def one(i: int) -> None:
        time.sleep(max(0.0, meta["t_fire"] + _start_delay(spec, i) - time.monotonic()))
        try:
            rsp = VideoSynthesis.call(
                api_key=KEY,
                model=MODEL,
                prompt=prompt(i),
                reference_urls=REFERENCES,
                size=SIZE,
                duration=DURATION,
            )
        except Exception as exc:
            with lock:
                res.failed(_err(exc))
            return
        with lock:
            _legacy_outcome(rsp, res)

    meta["cpu_fire"], meta["t_fire"] = cpu_seconds(), time.monotonic()
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(int(spec["n"]))]
    for t in threads:
        t.start()
    deadline = meta["t_fire"] + float(spec["cap"])
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def _write_report(
    spec: dict[str, Any], res: _Outcomes, meta: dict[str, Any], out: Path, capped: bool
) -> None:
    t_end = time.monotonic()
    cpu_end = cpu_seconds()
    report = {
        **meta,
        **res.report(),
        "client": spec["client"],
        "capped": capped,
        "t_end": t_end,
        "elapsed": t_end - meta["t_fire"],
        "cpu_work": cpu_end - meta.get("cpu_fire", meta["cpu_start"]),
        "cpu_total": cpu_end,
        "peak_rss_mb": peak_rss_mb(),
    }
    out.write_text(json.dumps(report))


def _watchdog(spec: dict[str, Any], res: _Outcomes, meta: dict[str, Any], out: Path) -> None:
    """Past the cap, report what there is and end the process: a client whose event
    loop is starved (httpcore's pool with thousands waiting) may never get to cancel
    its tasks."""

    def run() -> None:
        time.sleep(max(0.0, meta["t_fire"] + float(spec["cap"]) + 2.0 - time.monotonic()))
        with _REPORT_LOCK:
            _write_report(spec, res, meta, out, capped=True)
            os._exit(0)

    threading.Thread(target=run, name="bench-watchdog", daemon=True).start()


def profile_summary(profiler: Any, top: int) -> str:
    """The ``top`` entries by cumulative and by own time, as pstats prints them."""
    import io
    import pstats

    out = io.StringIO()
    for key in ("cumulative", "tottime"):
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(key).print_stats(top)
    return "\n".join(line for line in out.getvalue().splitlines() if line.strip())


def child_main(spec: dict[str, Any], out: Path) -> None:
    import logging

    logging.disable(logging.CRITICAL)  # the vendor logs every poll at INFO/WARNING
    res = _Outcomes(int(spec["n"]))
    meta: dict[str, Any] = {"t_fire": time.monotonic() + 0.05, "cpu_start": cpu_seconds()}
    _watchdog(spec, res, meta, out)
    kind = spec["client"]
    if kind == "legacy-threads":
        _child_legacy_threads(spec, res, meta)
    else:
        runner: Callable[..., Any] = {
            "wanr2v": _child_wanr2v,
            "asyncclient": _child_asyncclient,
            "legacy-aio": _child_legacy_aio,
        }[kind]
        profiler = None
        if spec.get("profile"):
            import cProfile

            profiler = cProfile.Profile(time.process_time)  # CPU, not wall: a shared machine
            profiler.enable()
        if kind == "wanr2v":
            import anyio

            anyio.run(runner, spec, res, meta, backend=spec.get("backend", "asyncio"))
        else:
            import asyncio

            asyncio.run(runner(spec, res, meta))
        if profiler is not None:
            profiler.disable()
            meta["profile"] = profile_summary(profiler, int(spec.get("profile_top", 15)))
    with _REPORT_LOCK:
        _write_report(spec, res, meta, out, capped=False)
        sys.stdout.flush()
        os._exit(0)  # leave stuck vendor threads and connections behind, bounded


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]), Path(sys.argv[2]))
