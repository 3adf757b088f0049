"""Batches users can mend: retry_failed, file-name templates, a spending cap, and a
summary whose cost is what the service billed — through run_many against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import wanr2v
from tests._db import raw_db
from wanr2v import BatchItem, BudgetExceededError, VideoRequest, WanClient
from wanr2v._batch_records import summarize
from wanr2v._demo import make_png
from wanr2v.journal import SubmissionState
from wanr2v.testing import Emulator, EmulatorConfig, serve

SCALE = 60.0
PNG = make_png(240, 240, lambda x, y: (x % 256, y % 256, 40))


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with serve(EmulatorConfig(time_scale=SCALE, generation_time=(1.0, 2.0), seed=1)) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[WanClient]:
    with WanClient(base_url=emu.base_url, api_key="sk-test-batch", time_scale=SCALE) as c:
        yield c


def req(ref: str | Path, seed: int = 0, **more: Any) -> VideoRequest:
    return VideoRequest(
        model="wan2.6-r2v-flash",
        prompt=f"character1 dances ({seed})",
        reference_urls=[ref],
        size="1280*720",
        duration=2,
        seed=seed,
        **more,
    )


def test_retry_failed_reruns_local_failures_without_duplicates(
    client: WanClient, emu: Emulator, tmp_path: Path
) -> None:
    """A missing reference file fails its item before anything is sent. A plain re-run
    replays that failure (saying how to retry); after the file appears, retry_failed=True
    runs it: every video saved, one task per item, none twice. (The journal is given by
    path: the blocking client opens and closes it for each call.)"""
    present = tmp_path / "a.png"
    present.write_bytes(PNG)
    missing = tmp_path / "b.png"
    requests = {"alpha": req(present, 1), "beta": req(missing, 2)}
    out = tmp_path / "videos"
    journal = str(tmp_path / "j.db")  # a path: opened and closed by each call
    first = client.run_many(requests, journal=journal, download_to=out)
    assert [it.ok for it in first] == [True, False]
    assert first[1].task is None and "b.png" in str(first[1].error)

    again = client.run_many(requests, journal=journal, download_to=out)
    assert again[1].earlier and "retry" in str(again[1].error).lower()
    assert emu.stats().tasks_created == 1

    missing.write_bytes(PNG)
    fixed = client.run_many(requests, journal=journal, download_to=out, retry_failed=True)
    assert all(it.ok for it in fixed)
    assert fixed[0].earlier and not fixed[1].earlier
    assert sorted(p.name for p in out.iterdir()) == ["alpha.mp4", "beta.mp4"]
    assert emu.stats().tasks_created == 2 and emu.stats().duplicate_creates == 0


def test_retry_failed_never_recreates_a_task_that_failed_on_the_service(
    client: WanClient, emu: Emulator, tmp_path: Path
) -> None:
    """An item whose task FAILED on the service keeps its outcome under retry_failed."""
    from wanr2v.testing import Endpoint, FaultKind, FaultRule

    emu.faults.add(FaultRule(kind=FaultKind.FAIL_TASK, endpoint=Endpoint.CREATE, count=1))
    requests = {"x": req("https://cdn.example.com/x.png", 3)}
    journal = tmp_path / "j.db"  # a path: the sync client opens and closes it per call
    first = client.run_many(requests, journal=journal)
    assert not first[0].ok and first[0].task is not None
    again = client.run_many(requests, journal=journal, retry_failed=True)
    assert not again[0].ok and again[0].earlier
    assert emu.stats().tasks_created == 1


def test_file_names_follow_the_template(client: WanClient, tmp_path: Path) -> None:
    """Keys name the files by default ({key}.mp4); a template may add the task id or
    model; a list of requests keeps {task_id}.mp4; bad templates are refused up front."""
    refs = "https://cdn.example.com/k.png"
    items = client.run_many({"intro": req(refs, 4)}, download_to=tmp_path / "a")
    assert items[0].path == tmp_path / "a" / "intro.mp4"
    items = client.run_many(
        {"intro": req(refs, 5)}, download_to=tmp_path / "b", name="{key}-{model}.mp4"
    )
    assert items[0].path == tmp_path / "b" / "intro-wan2.6-r2v-flash.mp4"
    [one] = client.run_many([req(refs, 6)], download_to=tmp_path / "c")
    assert one.path is not None and one.task is not None
    assert one.path.name == f"{one.task.task_id}.mp4"
    for bad, why in [
        ("video.mp4", "same name"),
        ("{key}", ".mp4"),
        ("{nope}.mp4", "unknown field"),
        ("sub/{key}.mp4", "not a path"),
    ]:
        with pytest.raises(ValueError, match=why):
            client.run_many({"k": req(refs)}, name=bad)


def test_budget_stops_creates_that_would_overspend(
    client: WanClient, emu: Emulator, tmp_path: Path
) -> None:
    """With budget_usd, no task is created whose estimate would take the batch over it:
    such items end with BudgetExceededError and send nothing. A later run on the same
    journal counts what was billed, and retry_failed with a larger budget finishes."""
    requests = {f"k{i}": req("https://cdn.example.com/b.png", 10 + i) for i in range(3)}
    each = requests["k0"].estimated_cost_usd()
    journal = tmp_path / "j.db"  # a path: the sync client opens and closes it per call
    items = client.run_many(requests, journal=journal, budget_usd=each * 2.5)
    over = [it for it in items if isinstance(it.error, BudgetExceededError)]
    assert len(over) == 1 and over[0].task is None
    err = over[0].error
    assert isinstance(err, BudgetExceededError)
    assert err.budget_usd == pytest.approx(each * 2.5) and err.estimated_usd == each
    assert emu.stats().tasks_created == 2
    billed = sum(it.billed_usd for it in items)
    assert billed > 0

    # What is billed counts on the next run: a budget below it creates nothing.
    items = client.run_many(requests, journal=journal, budget_usd=billed, retry_failed=True)
    assert emu.stats().tasks_created == 2
    [again] = [it for it in items if it.key == over[0].key]
    assert isinstance(again.error, BudgetExceededError)
    assert again.error.committed_usd == pytest.approx(billed)

    items = client.run_many(requests, journal=journal, budget_usd=billed + each, retry_failed=True)
    assert all(it.ok for it in items) and emu.stats().tasks_created == 3
    states = journal_states(tmp_path / "j.db")
    assert states == {SubmissionState.SUCCEEDED.value: 3}


def journal_states(path: Path) -> dict[str, int]:

    with raw_db(path) as conn:
        rows = conn.execute("SELECT state, count(*) FROM submissions GROUP BY state").fetchall()
    return {str(state): int(n) for state, n in rows}


def test_summary_cost_is_what_was_billed_even_when_the_download_fails(
    client: WanClient, tmp_path: Path
) -> None:
    """A task that succeeded is billed even when its video cannot be saved: the summary
    counts it (from usage), and items finished by an earlier run are not counted again."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the folder should be")
    requests = {"a": req("https://cdn.example.com/s.png", 20)}
    journal = tmp_path / "j.db"  # a path: the sync client opens and closes it per call
    items = client.run_many(requests, journal=journal, download_to=blocker / "videos")
    assert not items[0].ok and items[0].result is not None and items[0].result.succeeded
    summary = summarize(items, 1.0)
    assert summary.succeeded == 0 and summary.estimated_cost_usd > 0
    assert summary.estimated_cost_usd == pytest.approx(items[0].billed_usd)
    usage = items[0].result.usage
    assert usage is not None and usage.duration is not None
    done = client.run_many(requests, journal=journal, download_to=tmp_path / "ok")
    assert done[0].ok
    again: list[BatchItem] = client.run_many(
        requests, journal=tmp_path / "j.db", download_to=tmp_path / "ok"
    )
    s = summarize(again, 0.1)
    assert s.earlier == 1 and s.estimated_cost_usd == 0
    # The public way to the same record: BatchSummary.of(items).
    public = wanr2v.BatchSummary.of(done)
    assert (public.total, public.succeeded, public.downloaded, public.wall_seconds) == (1, 1, 1, 0)
    assert public.estimated_cost_usd == pytest.approx(done[0].billed_usd) and public.earlier == 0


def test_resume_names_videos_as_the_run_did(
    client: WanClient, emu: Emulator, tmp_path: Path
) -> None:
    """A keyed run names its videos ``{key}.mp4`` and records that in the journal; a
    resume (without ``name=``) of an item whose download did not happen saves it under
    the same name, never a second copy as ``{task_id}.mp4``."""
    ref = tmp_path / "a.png"
    ref.write_bytes(PNG)
    out = tmp_path / "videos"
    db = tmp_path / "j.db"
    items = client.run_many(
        {"alpha": req(ref, 1), "beta": req(ref, 2)}, journal=str(db), download_to=out
    )
    assert all(it.ok for it in items)
    assert sorted(p.name for p in out.iterdir()) == ["alpha.mp4", "beta.mp4"]
    # As after a kill between the task's success and its download: file gone, record back.
    (out / "beta.mp4").unlink()

    with raw_db(db) as conn:
        conn.execute(
            "UPDATE submissions SET state = ?, download_path = NULL WHERE batch_key = 'beta'",
            (SubmissionState.SUCCEEDED.value,),
        )
    conn.close()
    again = client.resume(str(db), download_to=out)
    assert all(it.ok for it in again)
    assert sorted(p.name for p in out.iterdir()) == ["alpha.mp4", "beta.mp4"]
    assert emu.stats().tasks_created == 2


def test_a_journal_object_is_disconnected_after_each_blocking_call(
    client: WanClient, emu: Emulator, tmp_path: Path
) -> None:
    """A `SQLiteJournal` object given to the blocking client, which cannot close it with
    ``async with``, holds no SQLite connection between calls (Python 3.13 reports one
    left to the garbage collector), keeps no lease, and serves the next call: a second
    run on it sends nothing more. One the caller opened stays open."""
    from wanr2v.journal import SQLiteJournal

    requests = {"a": req("https://cdn.example.com/j.png", 30)}
    journal = SQLiteJournal(tmp_path / "j.db")
    assert client.run_many(requests, journal=journal)[0].ok
    assert not journal._is_connected() and not journal.closed
    with raw_db(tmp_path / "j.db") as conn:
        assert conn.execute("SELECT count(*) FROM owner").fetchone()[0] == 0  # no lease
    again = client.run_many(requests, journal=journal)
    assert again[0].ok and emu.stats().tasks_created == 1  # the same task, not a new one
    assert not journal._is_connected()
    assert [it.ok for it in client.resume(journal)] == [True]
    assert not journal._is_connected()

    async def opened() -> SQLiteJournal:
        return await SQLiteJournal.open(tmp_path / "j.db")

    held = anyio.run(opened)
    try:
        assert held._is_connected()
        client.run_many(requests, journal=held)
        assert held._is_connected()  # the caller's to close
    finally:
        anyio.run(held.aclose)
