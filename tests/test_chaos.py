"""Chaos: faulted batches against the loopback emulator, and kill -9 in the middle.

About 10 % of all requests meet an injected fault of every kind (429 bursts, 500,
503, drops before and after a committed create, slow answers, hangs, FAILED tasks,
expired video URLs). Whatever happens, every item ends downloaded or with a typed
``WanError``, no create is paid twice, nothing hangs, and nothing is left open.
The figures are printed by ``bench/bench_chaos.py`` (``nox -s chaos``).
"""

from __future__ import annotations

import collections
import random
from pathlib import Path

import anyio
import pytest

import wanr2v
from tests import _chaos
from wanr2v.testing import EmulatorConfig, Endpoint, FaultKind, FaultRule, Quotas, serve
from wanr2v.testing._client import client_for

pytestmark = [pytest.mark.chaos, pytest.mark.anyio]

TASKS = 200
ALL_KINDS = {k.value for k in FaultKind} - {
    "endless_body",
    "trickle",
    "echo_headers",
    "repeat_page",
    "huge_answer",
}  # the hostile kinds have their own tests (test_hostile.py)


def _show(fig: _chaos.BatchFigures) -> str:
    return (
        f"{fig.tasks} tasks in {fig.wall_s:.1f}s, {fig.faults_total}/{fig.requests_total} "
        f"requests faulted ({fig.fault_rate:.1%}) {dict(fig.faults_by_kind)}; "
        f"outcomes {dict(fig.outcomes)}; duplicates {fig.duplicate_creates}"
    )


async def test_faulted_batch_ends_every_task_and_leaks_nothing(tmp_path: Path) -> None:
    """200 tasks, ~10 % of requests faulted: all end downloaded or typed, 0 duplicates, no leak."""
    fig = await _chaos.run_faulted_batch(TASKS, seed=7, folder=tmp_path)
    print("\n" + _show(fig))
    # The chaos was real: every kind struck, about one request in ten.
    assert set(fig.faults_by_kind) == ALL_KINDS, fig.faults_by_kind
    # About one in ten; more when the scheduler sends fewer (unfaulted) polls.
    assert 0.07 <= fig.fault_rate <= 0.20
    # Every item ended downloaded or with a typed error; FAILED tasks are exactly the
    # tasks the emulator was told to fail.
    assert fig.untyped_errors == []
    assert sum(fig.outcomes.values()) == TASKS
    assert fig.outcomes.get("succeeded, not saved", 0) == 0
    assert fig.outcomes.get("TaskFailedError", 0) == fig.failed_tasks_expected
    assert fig.downloaded_ok >= TASKS * 0.85
    # No paid task twice, none orphaned, none shared by two items.
    assert fig.duplicate_creates == 0
    assert fig.shared_task_ids == []
    assert fig.orphan_tasks == []
    # Nothing left behind: descriptors, tasks, partial files, governor and scheduler state.
    assert fig.leaked_fds == {}
    assert fig.leaked_tasks == 0
    assert fig.part_files == []
    gov = fig.governor_after
    assert (gov.http_in_flight, gov.http_waiting, gov.tasks_in_flight, gov.tasks_waiting) == (
        0,
        0,
        0,
        0,
    )
    assert all(r.waiting == 0 for r in gov.rates.values())
    assert fig.scheduler_after.watched == 0


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_faulted_batch_under_trio(tmp_path: Path) -> None:
    """The same chaos under trio: every item typed or downloaded, 0 duplicates, no leak."""
    fig = await _chaos.run_faulted_batch(100, seed=8, folder=tmp_path)
    print("\n" + _show(fig))
    assert fig.untyped_errors == []
    assert fig.outcomes.get("TaskFailedError", 0) == fig.failed_tasks_expected
    assert fig.duplicate_creates == 0 and fig.orphan_tasks == [] and fig.shared_task_ids == []
    assert fig.leaked_fds == {} and fig.leaked_tasks == 0 and fig.part_files == []


def _check_resumed(fig: _chaos.ResumeFigures, n: int, logs: str) -> None:
    """What kill -9 and resume guarantee, whatever the machine's speed: each kill round
    was killed at its point of progress or had nothing left to kill (it ran to its end);
    the last round finished the batch; every task was created once, every video saved
    once (one file per item, no partial file); the journal ends complete."""
    report = "\n".join(r.describe() for r in fig.rounds)
    print("\n" + report + f"\n{fig.kills} kills, {fig.wall_s:.1f} s")
    assert not any(r.timed_out for r in fig.rounds), report + logs[-3000:]
    for r in fig.rounds:
        if r.killed:
            assert r.exit_code == -9 and r.seen_at_kill is not None, report
            assert r.kill_point is not None
            assert _chaos.past(r.seen_at_kill, r.kill_point.state) >= r.kill_point.target
        else:  # ran to its end: finished (0) or stopped on a typed error, to resume (3)
            assert r.exit_code in (0, 3), report + logs[-3000:]
    # A round with a kill point that was not killed had nothing left to kill: the
    # batch was complete (0) or needed a resume (3), never a crash.
    assert fig.kills >= 1, f"the first round always has work left past its kill point\n{report}"
    assert fig.rounds[-1].exit_code == 0 and len(fig.rounds) <= 6, report + logs[-3000:]
    assert fig.final_states == {"DOWNLOADED": n}, report
    assert fig.tasks_created == n and fig.duplicate_creates == 0 and fig.orphan_tasks == 0
    # Every video saved once: one file per item, each the journal's, none partial.
    assert fig.saved == n and len(set(fig.download_paths.values())) == n
    assert {Path(p).name for p in fig.download_paths.values()} == set(fig.video_names)
    # A download killed mid-way leaves its hidden partial file (no process survives to
    # remove it); never as the only copy: each belongs to a video saved in full since.
    for part in fig.part_files:
        assert part.startswith(".") and part[1:].rsplit(".", 2)[0] in fig.video_names, part


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_kill_and_resume_three_times(tmp_path: Path) -> None:
    """SIGKILL at three points of progress drawn from the seed (k more journal records
    past SENDING / CREATED / SUCCEEDED / DOWNLOADED), resumed from the journal each
    time: every video saved once, no task created twice, the journal complete."""
    fig = await anyio.to_thread.run_sync(
        lambda: _chaos.kill_and_resume(TASKS, seed=5, work=tmp_path / "batch")
    )
    logs = "".join(p.read_text() for p in sorted((tmp_path / "batch").glob("*.log")))
    _check_resumed(fig, TASKS, logs)
    for video in (tmp_path / "batch" / "videos").glob("*.mp4"):
        assert video.read_bytes()[4:8] == b"ftyp"


def test_kill_points_are_drawn_from_the_seed_and_leave_work_behind() -> None:
    """A kill point is a state and a count drawn from the seed, never past the work left:
    the same seed gives the same points; a complete journal has no point at all."""
    n = 10

    def points(seed: int) -> list[_chaos.KillPoint | None]:
        rng = random.Random(seed)
        return [_chaos.draw_kill_point(rng, {"NEW": n}, n) for _ in range(20)]

    assert points(1) == points(1) and points(1) != points(2)
    for p in points(3):
        assert p is not None and p.state in _chaos.KILL_STATES
        assert 1 <= p.k <= n // 2 and p.target == p.k
    # Nothing left past SENDING or CREATED: the point moves to a later state.
    after = {"CREATED": 4, "DOWNLOADED": 6}
    for seed in range(20):
        rng = random.Random(seed)
        p = _chaos.draw_kill_point(rng, after, n)
        assert p is not None
        left = n - _chaos.past(after, p.state)
        assert left > 0 and 1 <= p.k <= max(1, left // 2)
        assert p.target == _chaos.past(after, p.state) + p.k <= n
    assert _chaos.draw_kill_point(random.Random(0), {"DOWNLOADED": n}, n) is None


def _quiet_config(**kw: object) -> EmulatorConfig:
    """Only the faults a test adds: no request rates (at 100x a rate window is 10 ms of
    real time, which a loaded machine's scheduling alone overruns), the five running
    slots kept."""
    kw.setdefault("quotas", Quotas(create_per_s=None, query_per_s=None, list_per_s=None))
    return EmulatorConfig(time_scale=_chaos.SCALE, seed=3, generation_time=(20.0, 60.0), **kw)  # type: ignore[arg-type]


async def test_a_streak_of_5xx_on_polls_never_ends_a_wait(tmp_path: Path) -> None:
    """Three 5xx in a row on every task's polls (the vendor SDK lost a task so): none is lost."""
    n = 20
    with serve(_quiet_config()) as emu:
        emu.faults.add(FaultRule(kind=FaultKind.SERVER_ERROR, endpoint=Endpoint.QUERY, count=3 * n))
        emu.faults.add(FaultRule(kind=FaultKind.UNAVAILABLE, endpoint=Endpoint.QUERY, count=n))
        async with client_for(emu, **_chaos.client_kwargs()) as client:
            with anyio.fail_after(300):  # a hang bound only
                items = await client.run_many(_chaos.requests(n, 3), download_to=tmp_path)
        stats = emu.stats()
    assert stats.faults_injected == {"server_error": 3 * n, "unavailable": n}
    assert all(it.ok and it.path is not None for it in items), [it.error for it in items]
    assert stats.duplicate_creates == 0 and stats.tasks_created == n


async def test_creates_lost_after_commit_are_adopted_not_resent(tmp_path: Path) -> None:
    """Half the creates commit and then lose their answer: each task is adopted, none re-sent."""
    n = 20
    with serve(_quiet_config()) as emu:
        emu.faults.add(
            FaultRule(
                kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, probability=0.5, seed=1
            )
        )
        async with client_for(emu, **_chaos.client_kwargs()) as client:
            with anyio.fail_after(300):  # a hang bound only
                items = await client.run_many(_chaos.requests(n, 4), download_to=tmp_path)
            reconciled = client.statistics().reconciled
        stats = emu.stats()
    lost = stats.faults_injected.get("drop_after_commit", 0)
    assert lost >= 5
    assert reconciled == lost
    assert all(it.ok for it in items), [it.error for it in items]
    assert stats.tasks_created == n and stats.duplicate_creates == 0


async def test_concurrent_calls_under_chaos_are_bounded_and_typed(tmp_path: Path) -> None:
    """60 concurrent call()+download() under the chaos mix, each under fail_after: all typed."""
    n = 60
    outcomes: collections.Counter[str] = collections.Counter()
    fds_before = _chaos.open_fds()
    with serve(_chaos.emulator_config(21)) as emu:
        for rule in _chaos.fault_rules(21):
            emu.faults.add(rule)
        async with client_for(emu, **_chaos.client_kwargs()) as client:

            async def one(fields: dict[str, object]) -> None:
                try:
                    with anyio.fail_after(300):  # a hang bound only
                        result = await client.call(**fields)  # type: ignore[arg-type]
                        await client.download(result, tmp_path)
                    outcomes["downloaded"] += 1
                except wanr2v.WanError as exc:
                    outcomes[type(exc).__name__] += 1

            async with anyio.create_task_group() as tg:
                for fields in _chaos.requests(n, 21).values():
                    tg.start_soon(one, fields)
            gov = client.governor.statistics()
        stats = emu.stats()
    assert sum(outcomes.values()) == n
    assert outcomes["downloaded"] >= n * 0.8, outcomes
    assert stats.duplicate_creates == 0
    assert gov.tasks_in_flight == 0 and gov.http_in_flight == 0
    assert _chaos.settle_fds(fds_before) == {}
    assert _chaos.part_files(tmp_path) == []


async def test_a_500_on_create_is_reconciled_not_final(tmp_path: Path) -> None:
    """A create answered 500 (outcome unknown) is looked up, then sent again: the item succeeds."""
    with serve(_quiet_config()) as emu:
        emu.faults.add(FaultRule(kind=FaultKind.SERVER_ERROR, endpoint=Endpoint.CREATE, count=2))
        async with client_for(emu, **_chaos.client_kwargs()) as client:
            with anyio.fail_after(300):  # a hang bound only
                items = await client.run_many(_chaos.requests(4, 9), download_to=tmp_path)
        stats = emu.stats()
    assert stats.duplicate_creates == 0
    assert all(it.ok for it in items), [type(it.error).__name__ for it in items]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_cli_run_killed_and_resumed_three_times(tmp_path: Path) -> None:
    """``wanr2v run`` SIGKILLed at three points of progress, finished by ``wanr2v resume``:
    every video saved once, no task created twice, the journal complete, the key unlogged."""
    pytest.importorskip("wanr2v._cli", reason="the CLI is not there yet")
    n = 60
    fig = await anyio.to_thread.run_sync(
        lambda: _chaos.kill_and_resume(n, seed=6, work=tmp_path / "cli", via="cli")
    )
    logs = "".join(p.read_text() for p in sorted((tmp_path / "cli").glob("*.log")))
    _check_resumed(fig, n, logs)
    assert _chaos.PLANTED_KEY not in logs


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_reconciliation_never_adopts_an_older_foreign_task() -> None:
    """A create dropped before the service saw it is sent again, not matched to yesterday's task."""
    fields = _chaos.requests(1, 77)["item-0000"]
    with serve(_quiet_config()) as emu:
        async with client_for(emu, **_chaos.client_kwargs()) as earlier:
            with anyio.fail_after(300):  # a hang bound only
                old = await earlier.call(**fields)
        emu.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.CREATE, count=1))
        other_refs = {**fields, "reference_urls": ["https://cdn.example.com/someone-else.png"]}
        async with client_for(emu, **_chaos.client_kwargs()) as client:
            with anyio.fail_after(300):  # a hang bound only
                task = await client.async_call(**other_refs)
        created = emu.stats().tasks_created
    assert task.task_id != old.task_id
    assert created == 2
