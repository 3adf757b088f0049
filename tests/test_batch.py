"""The batch API against the emulator: outcomes, backpressure, cancellation, journal."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

import wanr2v
from wanr2v import Limits, TaskEvent
from wanr2v.journal import SQLiteJournal, SubmissionRecord, SubmissionState
from wanr2v.testing import EmulatorConfig, Endpoint, FaultKind, FaultRule, serve
from wanr2v.testing._client import client_for

pytestmark = pytest.mark.anyio

SCALE = 100.0


def req(i: int, **kw: object) -> dict[str, object]:
    return {
        "model": "wan2.6-r2v-flash",
        "prompt": f"character1 walks, take {i}",
        "reference_urls": ["https://cdn.example.com/me.mp4", "https://cdn.example.com/bg.png"],
        "duration": 5,
        "size": "1280*720",
        **kw,
    }


def emulator(**kw: object) -> EmulatorConfig:
    kw.setdefault("generation_time", (60.0, 200.0))
    return EmulatorConfig(time_scale=SCALE, seed=11, **kw)  # type: ignore[arg-type]


async def test_run_many_per_item_outcomes() -> None:
    """One FAILED task is its own outcome; the others succeed; order is kept."""
    with serve(emulator()) as emu:
        emu.faults.add(
            FaultRule(
                kind=FaultKind.FAIL_TASK,
                endpoint=Endpoint.CREATE,
                count=1,
                code="DataInspectionFailed",
                message="nope",
            )
        )
        async with client_for(emu) as c:
            items = await c.run_many([req(i) for i in range(8)])
    assert [it.key for it in items] == list(range(8))
    failed = [it for it in items if not it.ok]
    assert len(failed) == 1 and isinstance(failed[0].error, wanr2v.TaskFailedError)
    assert failed[0].error.code == "DataInspectionFailed"
    assert sum(it.ok for it in items) == 7
    assert emu.stats().duplicate_creates == 0


async def test_backpressure_in_flight_cap() -> None:
    """Never more tasks in flight than max_in_flight (measured on the emulator's records)."""
    with serve(emulator()) as emu:
        async with client_for(emu, limits=Limits(max_in_flight=3).scaled(SCALE)) as c:
            peak = 0

            def watch(ev: TaskEvent) -> None:
                nonlocal peak
                peak = max(peak, c.governor.statistics().tasks_in_flight)

            c.subscribe(watch)
            items = await c.run_many({f"k{i}": req(i) for i in range(9)})
        assert all(it.ok for it in items) and next(it.key for it in items) == "k0"
        assert 1 <= peak <= 3
        # Server side: at no instant were more than 3 of our tasks created and unfinished.
        recs = emu.task_records()
        events = sorted([(r.submit_time, 1) for r in recs] + [(r.end_time, -1) for r in recs])
        live = best = 0
        for _, d in events:
            live += d
            best = max(best, live)
        assert best <= 3


async def test_as_completed_yields_in_completion_order_and_events() -> None:
    """as_completed yields as tasks finish; lifecycle events arrive without extra polls."""
    with serve(emulator()) as emu:
        async with client_for(emu) as c:
            kinds: list[str] = []
            c.subscribe(lambda ev: kinds.append(ev.kind))
            got = []
            async with c.as_completed([req(i) for i in range(6)]) as results:
                async for item in results:
                    got.append(item)
            polls = c.statistics().scheduler.polls
    assert len(got) == 6 and all(it.ok for it in got)
    assert kinds.count("created") == 6 and kinds.count("succeeded") == 6
    assert polls == c.statistics().requests["query"]


async def test_fail_fast_cancels_the_rest() -> None:
    """fail_fast stops the batch at the first error."""
    with serve(emulator(generation_time=(100.0, 100.0))) as emu:
        async with client_for(emu) as c:
            items = await c.run_many(
                [req(0, duration=11 - 1, size="1280*720")]
                + [req(i) for i in range(1, 4)]
                + [
                    {
                        "model": "wan2.6-r2v-flash",
                        "prompt": "x",
                        "reference_urls": ["https://x.invalid/a.png"],
                    }
                ],
                fail_fast=True,
            )
    assert any(not it.ok for it in items)


@pytest.mark.parametrize("policy", ["detach", "cancel_pending"])
async def test_cancellation_policies(policy: str) -> None:
    """Cancelling the caller's scope detaches remote tasks, or cancels the PENDING ones."""
    with serve(emulator(generation_time=(30000.0, 30000.0))) as emu:
        async with client_for(emu) as c:
            created = anyio.Event()
            seen: list[str] = []

            def on_event(ev: TaskEvent) -> None:
                seen.append(ev.kind)
                if seen.count("created") == 8:
                    created.set()

            c.subscribe(on_event)
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: c.run_many([req(i) for i in range(8)], on_cancel=policy))  # type: ignore[arg-type]
                with anyio.fail_after(120):  # a hang bound only
                    await created.wait()
                tg.cancel_scope.cancel()
        recs = emu.task_records()
        statuses = [r.status for r in recs]
    assert len(recs) == 8
    if policy == "detach":
        assert "CANCELED" not in statuses
    else:
        assert statuses.count("CANCELED") == 3
        assert statuses.count("RUNNING") == 5


async def test_journal_records_and_downloads(tmp_path: Path) -> None:
    """A journaled batch records each submission and saves each video."""
    with serve(emulator()) as emu:
        async with client_for(emu) as c, SQLiteJournal(tmp_path / "b.db") as j:
            items = await c.run_many(
                [req(i) for i in range(4)], journal=j, download_to=tmp_path / "out"
            )
            counts = await j.counts()
    assert counts[SubmissionState.DOWNLOADED] == 4, (counts, [repr(it.error) for it in items])
    for it in items:
        assert it.path is not None and it.path.read_bytes()[4:8] == b"ftyp"


async def test_resume_after_crash_never_pays_twice(tmp_path: Path) -> None:
    """A record left SENDING by a crash whose create did land is adopted, not re-sent;
    one that never landed is sent; one CREATED is polled; all end downloaded."""
    with serve(emulator()) as emu:
        db = tmp_path / "b.db"
        async with client_for(emu) as c, SQLiteJournal(db) as j:
            # 1: sent and created on the server, but the crash hit before the answer was recorded.
            r1 = await j.add(SubmissionRecord.new("1", wanr2v.VideoRequest(**req(1))))  # type: ignore[arg-type]
            body, _ = await c._creator.prepare(r1.video_request())
            t1 = await c._creator.submit(body)
            await j.update(
                r1.submission_id,
                state=SubmissionState.SENDING,
                body=body,
                sent_at=t1.submitted_at,
                attempts=1,
            )
            # 2: recorded SENDING, but the create never reached the server.
            r2 = await j.add(SubmissionRecord.new("2", wanr2v.VideoRequest(**req(2))))  # type: ignore[arg-type]
            body2, _ = await c._creator.prepare(r2.video_request())
            await j.update(
                r2.submission_id,
                state=SubmissionState.SENDING,
                body=body2,
                sent_at=t1.submitted_at,
                attempts=1,
            )
            # 3: created and recorded.
            r3 = await j.add(SubmissionRecord.new("3", wanr2v.VideoRequest(**req(3))))  # type: ignore[arg-type]
            t3 = await c.async_call(r3.video_request())
            await j.update(
                r3.submission_id,
                state=SubmissionState.CREATED,
                task_id=t3.task_id,
                base_url=t3.base_url,
            )
        assert emu.stats().tasks_created == 2
        async with client_for(emu, reconcile_grace=0.05) as c2, SQLiteJournal(db) as j2:
            items = await c2.resume(j2, download_to=tmp_path / "out")
            recs = {r.batch_key: r for r in await j2.list()}
        assert all(it.ok for it in items), [it.error for it in items]
        assert recs["1"].task_id == t1.task_id and recs["3"].task_id == t3.task_id
        assert all(r.state is SubmissionState.DOWNLOADED for r in recs.values())
        st = emu.stats()
        assert st.tasks_created == 3 and st.duplicate_creates == 0
