"""Shared machinery of the chaos suite and its benchmark (``bench/bench_chaos.py``).

A faulted batch: ``n`` tasks against a loopback emulator (time scale 100) where
about 10 % of all requests meet an injected fault of every kind — 429 bursts, 500,
503, connections dropped before and after a committed create, slow answers, hangs
(read timeouts), FAILED tasks and expired video URLs. :func:`run_faulted_batch`
runs it and returns every figure the tests assert on and the bench prints.

:func:`kill_and_resume` runs the same kind of batch in a child process
(``tests/_chaos_runner.py`` or the ``wanr2v`` CLI) and kills it with SIGKILL at
points of progress drawn from the seed ("k more journal records past CREATED"),
never after a clock delay, then resumes it from its journal, round after round.

Everything talks to 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import sniffio

import wanr2v
from wanr2v import Limits
from wanr2v._retry import RetryPolicy
from wanr2v.journal import SQLiteJournal
from wanr2v.testing import EmulatorConfig, Endpoint, FaultKind, FaultRule, serve
from wanr2v.testing._client import client_for

SCALE = 100.0
"""Emulator seconds per real second."""
GENERATION = (20.0, 80.0)
"""Emulator seconds a task takes (the vendor's 1-5 min would make 200 tasks too slow)."""
CLIENT_TIMEOUT = 4.0
"""Real seconds for one HTTP exchange: an injected hang ends in a read timeout. With
headroom: on a loaded machine an honest answer must not time out too."""
HANG_S = 8.0
SLOW_S = 0.3
BATCH_DEADLINE = 600.0
"""A hang bound (real seconds, ``anyio.fail_after`` around a batch), far above any
batch's run time on a loaded machine: it catches a hang, never a slow run."""
PLANTED_KEY = "sk-chaos-PLANTED-5e3cr37-0a1b2c3d4e5f"
RUNNER = Path(__file__).with_name("_chaos_runner.py")


def fault_rules(seed: int, *, task_faults: bool = True) -> list[FaultRule]:
    """About 10 % of requests faulted, every kind represented.

    Rules are checked in order and the first that strikes wins. Two scripted 429
    bursts open the batch (creates, then queries); then each request meets one of
    the random rules with the probability given (transport and error kinds on
    every endpoint, FAILED tasks on creates, expired URLs on the video host).

    Args:
        task_faults: include FAILED tasks (off for kill-and-resume, where every
            video must end saved).
    """
    rules = [
        FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.CREATE, count=6, retry_after=0.05),
        FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.QUERY, count=8, retry_after=0.05),
        FaultRule(kind=FaultKind.THROTTLE, probability=0.02, seed=seed + 1, retry_after=0.05),
        FaultRule(kind=FaultKind.SERVER_ERROR, probability=0.015, seed=seed + 2),
        FaultRule(kind=FaultKind.UNAVAILABLE, probability=0.015, seed=seed + 3),
        FaultRule(kind=FaultKind.DROP, probability=0.01, seed=seed + 4),
        FaultRule(kind=FaultKind.DROP_AFTER_COMMIT, probability=0.01, seed=seed + 5),
        FaultRule(kind=FaultKind.SLOW, probability=0.015, seed=seed + 6, delay=SLOW_S),
        FaultRule(kind=FaultKind.HANG, probability=0.003, seed=seed + 7, delay=HANG_S),
        FaultRule(kind=FaultKind.EXPIRED_URL, probability=0.1, seed=seed + 8),
    ]
    if task_faults:
        rules.append(
            FaultRule(
                kind=FaultKind.FAIL_TASK,
                endpoint=Endpoint.CREATE,
                probability=0.05,
                seed=seed + 9,
                code="InternalError.Algo",
                message="chaos: the task failed",
            )
        )
    # A lost create is what costs money: make sure both kinds hit creates too.
    rules.append(
        FaultRule(
            kind=FaultKind.DROP_AFTER_COMMIT,
            endpoint=Endpoint.CREATE,
            probability=0.04,
            seed=seed + 10,
        )
    )
    rules.append(
        FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.CREATE, probability=0.02, seed=seed + 11)
    )
    return rules


WORLD_ALL: Mapping[str, Any] = {
    "list_lag": 5.0,
    "query_lag": 5.0,
    "commit_delay": 5.0,
    "prompt_normalization": True,
    "page_size_cap": 10,
}
"""Every world knob on at once (emulator seconds): lags and delays of 5 s, prompts
echoed normalized, list pages of at most 10 rows."""


def emulator_config(seed: int, world: Mapping[str, Any] | None = None) -> EmulatorConfig:
    return EmulatorConfig(
        time_scale=SCALE, seed=seed, generation_time=GENERATION, **dict(world or {})
    )


def requests(n: int, seed: int, *, messy: bool = False) -> dict[str, dict[str, Any]]:
    """``n`` distinct requests (distinct prompts: a duplicate is then always a re-sent create).

    ``messy``: prompts a normalizing service echoes differently (decomposed accents,
    runs of spaces and tabs, surrounding blanks)."""
    rng = random.Random(seed)
    refs = [
        "https://cdn.example.com/me.mp4",
        "https://cdn.example.com/dog.png",
        "https://cdn.example.com/beach.jpg",
        "https://cdn.example.com/clip.mov",
    ]
    out: dict[str, dict[str, Any]] = {}
    for i in range(n):
        out[f"item-{i:04d}"] = {
            "model": rng.choice(["wan2.6-r2v-flash", "wan2.6-r2v"]),
            "prompt": (
                f"  character1  waves at the Cafe\u0301 camera,\tchaos take {i} (seed {seed}) "
                if messy
                else f"character1 waves at the camera, chaos take {i} (seed {seed})"
            ),
            "reference_urls": rng.sample(refs, rng.randint(1, 3)),
            "duration": rng.choice([2, 5, 10]),
            "size": rng.choice(["1280*720", "960*960", "1920*1080"]),
        }
    return out


def client_kwargs() -> dict[str, Any]:
    """Client settings for the chaos runs: scaled to the emulator, short HTTP timeout."""
    return {
        "api_key": PLANTED_KEY,
        "timeout": CLIENT_TIMEOUT,
        "reconcile_grace": 0.1,
        "reconcile_wait": 60.0,
        "retry_policy": RetryPolicy(max_retries=6, initial=0.05, maximum=0.5, max_retry_after=1.0),
        "limits": Limits(max_in_flight=50).scaled(SCALE),
    }


# --- resource probes --------------------------------------------------------------------


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what they point at."""
    out: dict[int, str] = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return out


def settle_fds(baseline: Mapping[int, str], timeout: float = 3.0) -> dict[int, str]:
    """The descriptors open now that were not in ``baseline``, after letting closes land."""
    deadline = time.monotonic() + timeout
    while True:
        extra = {fd: what for fd, what in open_fds().items() if baseline.get(fd) != what}
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.05)


def part_files(folder: Path) -> list[str]:
    """Hidden partial downloads (``.NAME.RANDOM.part``) left in ``folder``."""
    return sorted(p.name for p in folder.glob(".*.part")) if folder.exists() else []


def live_tasks() -> int:
    """Tasks alive in the running event loop (asyncio or trio)."""
    if sniffio.current_async_library() == "trio":
        import trio

        def count(task: Any) -> int:
            return 1 + sum(count(c) for n in task.child_nurseries for c in n.child_tasks)

        return count(trio.lowlevel.current_root_task())
    return len(asyncio.all_tasks())


# --- one faulted batch ------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class BatchFigures:
    """Everything measured on one faulted batch."""

    tasks: int
    wall_s: float
    requests_total: int
    faults_total: int
    faults_by_kind: Mapping[str, int]
    outcomes: Mapping[str, int]
    untyped_errors: list[str]
    downloaded_ok: int
    failed_tasks_expected: int
    tasks_created: int
    duplicate_creates: int
    orphan_tasks: list[str]
    shared_task_ids: list[str]
    max_item_s: float
    leaked_fds: Mapping[int, str]
    leaked_tasks: int
    part_files: list[str]
    governor_after: Any
    scheduler_after: Any
    client_stats: Any

    @property
    def fault_rate(self) -> float:
        return self.faults_total / max(1, self.requests_total)


async def run_faulted_batch(
    n: int,
    seed: int,
    folder: Path,
    *,
    deadline: float = BATCH_DEADLINE,
    world: Mapping[str, Any] | None = None,
) -> BatchFigures:
    """Serve an emulator, run ``n`` faulted tasks with ``run_many``, measure everything.

    Args:
        world: emulator world knobs (e.g. :data:`WORLD_ALL`); with
            ``prompt_normalization`` the prompts are messy, so that it shows.
    """
    fds_before = open_fds()
    tasks_before = live_tasks()
    reqs = requests(n, seed, messy=bool(world and world.get("prompt_normalization")))
    done_at: dict[str, float] = {}
    items: list[wanr2v.BatchItem] = []
    with serve(emulator_config(seed, world)) as emu:
        for rule in fault_rules(seed):
            emu.faults.add(rule)
        started = time.monotonic()
        kwargs = client_kwargs()
        if world:
            # The first look comes before the lags are over (1 s of service time): the
            # settle period, not the grace, must keep the batch from paying twice.
            kwargs["reconcile_grace"] = 0.01
        async with client_for(emu, **kwargs) as client:
            with anyio.fail_after(deadline):
                async with client.as_completed(reqs, download_to=folder) as results:
                    async for item in results:
                        done_at[str(item.key)] = time.monotonic() - started
                        items.append(item)
            wall = time.monotonic() - started
            governor = client.governor.statistics()
            scheduler = client._scheduler.statistics()
            cstats = client.statistics()
        emu.faults.clear()
        stats = emu.stats()
        records = emu.task_records()
    await anyio.lowlevel.checkpoint()  # let finished tasks be collected
    leaked = settle_fds(fds_before)
    tasks_after = live_tasks()

    outcomes: collections.Counter[str] = collections.Counter()
    untyped: list[str] = []
    downloaded_ok = 0
    owned: collections.Counter[str] = collections.Counter()
    for it in items:
        if it.task is not None:
            owned[it.task.task_id] += 1
        if it.error is None:
            if it.path is not None and it.path.is_file() and it.path.stat().st_size > 0:
                outcomes["downloaded"] += 1
                downloaded_ok += 1
            else:
                outcomes["succeeded, not saved"] += 1
        elif isinstance(it.error, wanr2v.WanError):
            outcomes[type(it.error).__name__] += 1
        else:
            outcomes[f"untyped {type(it.error).__name__}"] += 1
            untyped.append(f"{it.key}: {it.error!r}")
    server_ids = {r.task_id for r in records}
    return BatchFigures(
        tasks=n,
        wall_s=wall,
        requests_total=stats.total_requests,
        faults_total=sum(stats.faults_injected.values()),
        faults_by_kind=dict(stats.faults_injected),
        outcomes=dict(outcomes),
        untyped_errors=untyped,
        downloaded_ok=downloaded_ok,
        failed_tasks_expected=stats.faults_injected.get("fail_task", 0),
        tasks_created=stats.tasks_created,
        duplicate_creates=stats.duplicate_creates,
        orphan_tasks=sorted(server_ids - set(owned)),
        shared_task_ids=sorted(t for t, c in owned.items() if c > 1),
        max_item_s=max(done_at.values(), default=0.0),
        leaked_fds=leaked,
        leaked_tasks=tasks_after - tasks_before,
        part_files=part_files(folder),
        governor_after=governor,
        scheduler_after=scheduler,
        client_stats=cstats,
    )


# --- kill and resume --------------------------------------------------------------------

#: How far a submission got, for "k records past a state" (``AMBIGUOUS`` sits between
#: a sent create and a known task; ``FAILED`` is as far as ``SUCCEEDED`` goes).
STATE_RANK: Mapping[str, int] = {
    "NEW": 0,
    "SENDING": 1,
    "AMBIGUOUS": 1,
    "CREATED": 2,
    "SUCCEEDED": 3,
    "FAILED": 3,
    "DOWNLOADED": 4,
}
KILL_STATES = ("SENDING", "CREATED", "SUCCEEDED", "DOWNLOADED")
"""The states a kill point is drawn from."""
WATCH_INTERVAL = 0.005
"""Real seconds between two looks at the journal while a round runs."""
ROUND_TIMEOUT = 600.0
"""Real seconds after which a round is declared hung (a bug, never a kill point)."""


@attrs.frozen(kw_only=True)
class KillPoint:
    """Kill the child once ``target`` submissions are at ``state`` or past it."""

    state: str
    k: int
    target: int

    def __str__(self) -> str:
        return f"{self.k} more past {self.state} (at {self.target})"


@attrs.frozen(kw_only=True)
class RoundFigures:
    """One round of kill-and-resume.

    ``kill_point`` is where the round was to be killed (``None``: the final rounds);
    ``killed`` whether it was: a round that finished (or ended with a typed error)
    before its kill point was reached had nothing left to kill, a valid outcome.
    """

    round: int
    mode: str
    kill_point: KillPoint | None
    killed: bool
    seen_at_kill: Mapping[str, int] | None
    killed_after_s: float | None
    exit_code: int | None
    timed_out: bool
    journal_states: Mapping[str, int]
    tasks_created: int
    duplicate_creates: int
    saved: int

    def describe(self) -> str:
        if self.kill_point is None:
            how = "final round"
        elif self.killed:
            how = f"SIGKILL at {self.kill_point}, journal then {dict(self.seen_at_kill or {})}"
        else:
            how = f"nothing left to kill at {self.kill_point}: ran to the end"
        return (
            f"round {self.round} ({self.mode}): {how}; exit {self.exit_code}"
            f"{' TIMED OUT' if self.timed_out else ''}; journal {dict(self.journal_states)}, "
            f"created {self.tasks_created}, duplicates {self.duplicate_creates}, "
            f"saved {self.saved}"
        )


@attrs.frozen(kw_only=True)
class ResumeFigures:
    tasks: int
    rounds: list[RoundFigures]
    saved: int
    video_names: list[str]
    tasks_created: int
    duplicate_creates: int
    orphan_tasks: int
    part_files: list[str]
    final_states: Mapping[str, int]
    download_paths: Mapping[str, str]
    wall_s: float

    @property
    def kills(self) -> int:
        return sum(r.killed for r in self.rounds)


class JournalWatch:
    """A read-only view of a journal file another process writes (WAL: readers never
    block the writer). Every read is one fresh read transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def states(self) -> dict[str, int] | None:
        """Submission counts by state, or ``None`` when the file cannot be read yet."""
        if self._conn is None:
            if not self.path.exists():
                return None
            try:
                self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2.0)
            except sqlite3.Error:
                return None
        try:
            rows = self._conn.execute(
                "SELECT state, COUNT(*) FROM submissions GROUP BY state"
            ).fetchall()
        except sqlite3.Error:
            self.close()  # e.g. the table is not created yet: reconnect next time
            return None
        return {str(s): int(c) for s, c in rows}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def journal_states(path: Path) -> dict[str, int]:
    """Submission counts by state, read straight from the SQLite file (read-only)."""
    watch = JournalWatch(path)
    try:
        return watch.states() or {}
    finally:
        watch.close()


def past(states: Mapping[str, int], state: str) -> int:
    """How many submissions are at ``state`` or further."""
    rank = STATE_RANK[state]
    return sum(c for s, c in states.items() if STATE_RANK.get(s, 0) >= rank)


def draw_kill_point(rng: random.Random, states: Mapping[str, int], n: int) -> KillPoint | None:
    """The next kill point: a state and ``k`` drawn from ``rng``, ``k`` at most half of
    what is left past that state (so the kill leaves work behind). When nothing is
    left past the drawn state, the last state with work left; ``None`` when the
    journal is complete. The draws do not depend on the journal, so the sequence of
    (state, fraction) is the seed's alone."""
    state = rng.choice(KILL_STATES)
    fraction = rng.random()
    candidates = [s for s in KILL_STATES if n - past(states, s) > 0]
    if not candidates:
        return None
    if state not in candidates:
        state = candidates[-1]
    left = n - past(states, state)
    k = 1 + int(fraction * max(1, left // 2))
    return KillPoint(state=state, k=k, target=past(states, state) + k)


def journal_task_ids(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    try:
        rows = conn.execute(
            "SELECT batch_key, task_id FROM submissions WHERE task_id IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    return {str(k): str(t) for k, t in rows}


def journal_download_paths(path: Path) -> dict[str, str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    try:
        rows = conn.execute(
            "SELECT batch_key, download_path FROM submissions WHERE download_path IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()
    return {str(k): str(p) for k, p in rows}


def _spawn(
    via: str, mode: str, base_url: str, work: Path, n: int, seed: int
) -> subprocess.Popen[bytes]:
    """Start round ``mode`` (``run``/``resume``) of the batch in a child process, either
    through ``tests/_chaos_runner.py`` (the Python API) or through the ``wanr2v`` CLI."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DASHSCOPE_API_KEY", None)
    env.pop("DASHSCOPE_HTTP_BASE_URL", None)
    db, videos = str(work / "batch.db"), str(work / "videos")
    if via == "cli":
        env["DASHSCOPE_API_KEY"] = PLANTED_KEY
        argv = [sys.executable, "-m", "wanr2v", mode]
        if mode == "run":
            argv += [str(work / "requests.jsonl"), "--out", videos]
            argv += ["--base-url", base_url, "--time-scale", f"{SCALE:g}"]
        argv += ["--journal", db]
    else:
        argv = [sys.executable, str(RUNNER), mode, "--base-url", base_url]
        argv += ["--journal", db, "--out", videos, "--tasks", str(n), "--seed", str(seed)]
    with open(work / f"{via}-{mode}.log", "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)


def write_jsonl(path: Path, n: int, seed: int) -> None:
    """The chaos requests as a CLI batch file (one JSON object a line, with its key)."""
    lines = [json.dumps({"key": k, **f}) for k, f in requests(n, seed).items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _watch_round(
    proc: subprocess.Popen[bytes],
    watch: JournalWatch,
    point: KillPoint | None,
    timeout: float,
) -> tuple[bool, dict[str, int] | None, float | None, bool]:
    """Run one round to its kill point or its end: ``(killed, states seen at the kill,
    real seconds to the kill, timed out)``. The kill point is progress in the journal,
    never a clock: however slow the machine, the child is killed at the same place
    (or, if it finished first, not at all)."""
    t0 = time.monotonic()
    while proc.poll() is None:
        if point is not None:
            seen = watch.states()
            if seen is not None and past(seen, point.state) >= point.target:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                # A child that exited on its own just before the signal (its last
                # record was the kill point) was not killed: nothing was left to kill.
                killed = proc.returncode == -signal.SIGKILL
                after = time.monotonic() - t0 if killed else None
                return killed, seen if killed else None, after, False
        if time.monotonic() - t0 > timeout:  # a hung child: a bug, reported as such
            proc.kill()
            proc.wait()
            return False, None, None, True
        time.sleep(WATCH_INTERVAL if point is not None else 0.05)
    return False, None, None, False


def kill_and_resume(
    n: int,
    seed: int,
    work: Path,
    *,
    kills: int = 3,
    final_timeout: float = ROUND_TIMEOUT,
    via: str = "runner",
    max_extra_resumes: int = 2,
) -> ResumeFigures:
    """Run a journaled batch in a child; SIGKILL it ``kills`` times at points of
    progress drawn from ``seed`` (resuming from the journal each time); let the last
    resume finish; measure.

    A kill point is "``k`` more submissions at or past STATE than when the round
    began" (STATE among SENDING, CREATED, SUCCEEDED, DOWNLOADED): the parent watches
    the journal file read-only and SIGKILLs the child the moment it shows that much
    progress. No clock decides anything, so a fast or a loaded machine kills at the
    same places; a round that finishes before its kill point is reached (there was
    nothing left to kill) is recorded as such (``killed=False``), not an error.

    Args:
        via: ``"runner"`` (``tests/_chaos_runner.py``: ``run_many`` / ``client.resume``)
            or ``"cli"`` (``wanr2v run`` / ``wanr2v resume``).
        final_timeout: real seconds after which a round is declared hung (``timed_out``):
            a bound for bugs, far above any round's run time.
        max_extra_resumes: when the final resume ends with unfinished items (exit 3: a
            typed error such as ``ResultExpiredError`` after a streak of expired URLs),
            resume again, as its message says, at most this many times.
    """
    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    db = work / "batch.db"
    videos = work / "videos"
    rounds: list[RoundFigures] = []
    if via == "cli":
        write_jsonl(work / "requests.jsonl", n, seed)
    started = time.monotonic()
    watch = JournalWatch(db)
    with serve(emulator_config(seed)) as emu:
        for rule in fault_rules(seed, task_faults=False):
            emu.faults.add(rule)
        r = -1
        try:
            while r < kills + max_extra_resumes:
                r += 1
                if r > kills and rounds[-1].exit_code == 0:
                    break  # the final resume finished everything
                mode = "run" if r == 0 else "resume"
                point: KillPoint | None = None
                if r < kills:
                    # Round 0 starts from an empty journal: every submission is NEW
                    # (``run_many`` journals them all before it sends a create).
                    before = {"NEW": n} if r == 0 else (watch.states() or {})
                    point = draw_kill_point(rng, before, n)
                proc = _spawn(via, mode, emu.base_url, work, n, seed)
                try:
                    killed, seen, after, timed_out = _watch_round(proc, watch, point, final_timeout)
                finally:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                st = emu.stats()
                rounds.append(
                    RoundFigures(
                        round=r + 1,
                        mode=mode,
                        kill_point=point,
                        killed=killed,
                        seen_at_kill=seen,
                        killed_after_s=after,
                        exit_code=proc.returncode,
                        timed_out=timed_out,
                        journal_states=watch.states() or {},
                        tasks_created=st.tasks_created,
                        duplicate_creates=st.duplicate_creates,
                        saved=len(list(videos.glob("*.mp4"))) if videos.exists() else 0,
                    )
                )
                if timed_out:
                    break
        finally:
            watch.close()
        emu.faults.clear()
        st = emu.stats()
        server_ids = {rec.task_id for rec in emu.task_records()}
    owned = set(journal_task_ids(db).values())
    names = sorted(p.name for p in videos.glob("*.mp4")) if videos.exists() else []
    return ResumeFigures(
        tasks=n,
        rounds=rounds,
        saved=len(names),
        video_names=names,
        tasks_created=st.tasks_created,
        duplicate_creates=st.duplicate_creates,
        orphan_tasks=len(server_ids - owned),
        part_files=part_files(videos),
        final_states=journal_states(db),
        download_paths=journal_download_paths(db),
        wall_s=time.monotonic() - started,
    )


async def open_journal(path: Path) -> SQLiteJournal:
    return await SQLiteJournal.open(path)
