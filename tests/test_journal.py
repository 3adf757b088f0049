"""The durable journal: records survive crashes, writes are atomic, the loop never blocks."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import attrs
import pytest

from wanr2v._models import TaskResult, TaskStatus, Usage, VideoRequest
from wanr2v.journal import (
    JournalConflictError,
    JournalError,
    JournalStore,
    SQLiteJournal,
    SubmissionRecord,
    SubmissionState,
)
from wanr2v.journal._base import UPDATABLE_FIELDS, request_to_dict, result_to_dict
from wanr2v.journal._sqlite import SCHEMA_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-0123456789abcdef"

S = SubmissionState


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every test runs under asyncio and under trio."""
    return str(request.param)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A journal file location in a fresh temporary folder."""
    return tmp_path / "batch.db"


@pytest.fixture
async def journal(db_path: Path) -> AsyncIterator[SQLiteJournal]:
    """An open SQLite journal, closed after the test."""
    async with SQLiteJournal(db_path, secrets=[SECRET]) as j:
        yield j


def video_request(n: int = 0) -> VideoRequest:
    """A valid request whose prompt carries ``n``."""
    return VideoRequest(
        model="wan2.6-r2v-flash",
        prompt=f"character1 waves, take {n}",
        reference_urls=["https://example.com/a.mp4"],
    )


def new_record(key: str = "line-1", n: int = 0, **fields: Any) -> SubmissionRecord:
    """A fresh NEW record for ``video_request(n)``."""
    return SubmissionRecord.new(key, video_request(n), **fields)


def full_record() -> SubmissionRecord:
    """A record with every field set to a non-default value."""
    req = VideoRequest(
        model="wan2.6-r2v-flash",
        prompt="character1 and character2 dance — 日本語 too",
        reference_urls=[Path("/tmp/clip one.mp4"), "oss://bucket/b.png"],
        negative_prompt="blur",
        size="1280*720",
        duration=10,
        shot_type="multi",
        audio=False,
        watermark=True,
        seed=42,
        extra_input={"future": [1, 2.5, None, True]},
        extra_parameters={"knob": {"nested": "x"}},
    )
    return SubmissionRecord(
        submission_id="0b4f3c2e-1111-4a2b-9c3d-000000000001",
        batch_key="user-7",
        request=request_to_dict(req),
        state=S.DOWNLOADED,
        fingerprint="f" * 64,
        body={"model": "wan2.6-r2v", "input": {"prompt": "p", "reference_urls": ["oss://x"]}},
        task_id="task-123",
        base_url="https://dashscope-intl.aliyuncs.com/api/v1",
        region="singapore",
        model="wan2.6-r2v",
        sent_at=1_700_000_000.25,
        status="SUCCEEDED",
        video_url="https://result.example/v.mp4?Expires=1",
        result={"task_id": "task-123", "status": "SUCCEEDED", "usage": {"duration": 10.0}},
        download_path="/out/user-7.mp4",
        error_type="DownloadError",
        error_code="Timeout",
        error_message="first try timed out",
        attempts=2,
        created_at=1_700_000_000.5,
        updated_at=1_700_000_100.75,
    )


# --- records ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_field_round_trips(db_path: Path) -> None:
    """Every field of a record reads back equal after the journal is closed and reopened."""
    record = full_record()
    defaults = SubmissionRecord(submission_id="x", batch_key="k", request={})
    for a in attrs.fields(SubmissionRecord):
        if a.name not in ("created_at", "updated_at"):
            assert getattr(record, a.name) != getattr(defaults, a.name), a.name
    async with SQLiteJournal(db_path) as j:
        assert await j.add(record) == record
    async with SQLiteJournal(db_path) as j:
        back = await j.get(record.submission_id)
    assert back == record
    assert back is not None
    assert back.video_request().reference_urls == ("/tmp/clip one.mp4", "oss://bucket/b.png")


@pytest.mark.anyio
async def test_add_is_idempotent_on_batch_key(journal: SQLiteJournal) -> None:
    """Adding a second record with a known batch key returns the stored one, adds nothing."""
    first = await journal.add(new_record("line-1", n=1))
    again = await journal.add(new_record("line-1", n=2))
    assert again == first
    assert again.request["prompt"].endswith("take 1")
    assert len(await journal.list()) == 1


@pytest.mark.anyio
async def test_add_refuses_a_reused_submission_id(journal: SQLiteJournal) -> None:
    """A submission id already used under another batch key is a conflict."""
    first = await journal.add(new_record("line-1"))
    with pytest.raises(JournalConflictError):
        await journal.add(new_record("line-2", submission_id=first.submission_id))
    assert await journal.get_by_key("line-2") is None


@pytest.mark.anyio
async def test_lookups_by_id_key_and_task_id(journal: SQLiteJournal) -> None:
    """A record is found by submission id, batch key and task id; unknown ones give None."""
    rec = await journal.add(new_record("line-1", task_id="t-1", state=S.CREATED))
    assert await journal.get(rec.submission_id) == rec
    assert await journal.get_by_key("line-1") == rec
    assert await journal.get_by_task_id("t-1") == rec
    assert await journal.get("nope") is None
    assert await journal.get_by_key("nope") is None
    assert await journal.get_by_task_id("nope") is None


@pytest.mark.anyio
async def test_state_transitions_and_counts(journal: SQLiteJournal) -> None:
    """Updates move records through the states and counts() follows, zeros included."""
    recs = [await journal.add(new_record(f"line-{i}", n=i)) for i in range(4)]
    assert await journal.counts() == {**dict.fromkeys(S, 0), S.NEW: 4}

    sid = recs[0].submission_id
    await journal.update(sid, state=S.SENDING, sent_at=time.time(), attempts=1)
    await journal.update(sid, state=S.CREATED, task_id="t-0", status="PENDING")
    await journal.update(sid, state=S.SUCCEEDED, status="SUCCEEDED", video_url="https://v/0")
    done = await journal.update(sid, state=S.DOWNLOADED, download_path="/out/0.mp4")
    await journal.update(recs[1].submission_id, state=S.AMBIGUOUS)
    await journal.update(recs[2].submission_id, state="FAILED", error_type="TaskFailedError")

    assert done.state is S.DOWNLOADED
    assert done.is_terminal
    assert (done.task_id, done.video_url, done.attempts) == ("t-0", "https://v/0", 1)
    assert await journal.counts() == {
        **dict.fromkeys(S, 0),
        S.NEW: 1,
        S.AMBIGUOUS: 1,
        S.FAILED: 1,
        S.DOWNLOADED: 1,
    }


@pytest.mark.anyio
async def test_update_returns_the_stored_record_and_bumps_updated_at(
    journal: SQLiteJournal,
) -> None:
    """update() returns what a fresh read returns, with a later updated_at."""
    rec = await journal.add(new_record(created_at=1.0, updated_at=1.0))
    new = await journal.update(rec.submission_id, status="RUNNING")
    assert new == await journal.get(rec.submission_id)
    assert new.status == "RUNNING"
    assert new.updated_at > 1.0
    assert new.created_at == 1.0


@pytest.mark.anyio
@pytest.mark.parametrize("field", ["nonsense", "submission_id", "batch_key", "created_at"])
async def test_update_refuses_unknown_and_frozen_fields(journal: SQLiteJournal, field: str) -> None:
    """update() raises TypeError for a field it may not set, and changes nothing."""
    rec = await journal.add(new_record())
    changes: dict[str, Any] = {field: "x", "status": "RUNNING"}
    with pytest.raises(TypeError):
        await journal.update(rec.submission_id, **changes)
    assert await journal.get(rec.submission_id) == rec
    assert field not in UPDATABLE_FIELDS


@pytest.mark.anyio
async def test_update_refuses_wrong_types_and_changes_nothing(journal: SQLiteJournal) -> None:
    """A value of the wrong type or not JSON is refused and the record is unchanged."""
    rec = await journal.add(new_record())
    with pytest.raises(TypeError):
        await journal.update(rec.submission_id, attempts="3")
    with pytest.raises(TypeError):
        await journal.update(rec.submission_id, body={"when": datetime.now(UTC)})
    assert await journal.get(rec.submission_id) == rec


@pytest.mark.anyio
async def test_update_of_a_missing_record_raises_key_error(journal: SQLiteJournal) -> None:
    """update() of an unknown submission id raises KeyError."""
    with pytest.raises(KeyError):
        await journal.update("nope", status="RUNNING")


@pytest.mark.anyio
async def test_expect_state_lets_one_of_many_claimers_win(journal: SQLiteJournal) -> None:
    """Of 20 concurrent NEW→SENDING claims with expect_state, exactly one succeeds."""
    rec = await journal.add(new_record())
    wins: list[int] = []
    conflicts: list[JournalConflictError] = []

    async def claim(i: int) -> None:
        try:
            await journal.update(
                rec.submission_id,
                expect_state=S.NEW,
                state=S.SENDING,
                attempts=rec.attempts + 1,
                error_message=f"claimer {i}",
            )
        except JournalConflictError as exc:
            conflicts.append(exc)
        else:
            wins.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(claim, i)

    assert len(wins) == 1
    assert len(conflicts) == 19
    assert all(c.current is not None and c.current.state is S.SENDING for c in conflicts)
    stored = await journal.get(rec.submission_id)
    assert stored is not None
    assert (stored.state, stored.attempts) == (S.SENDING, 1)
    assert stored.error_message == f"claimer {wins[0]}"


@pytest.mark.anyio
async def test_known_task_ids_and_a_task_claimed_once(journal: SQLiteJournal) -> None:
    """known_task_ids() lists claimed tasks, and no two records may claim the same one."""
    a = await journal.add(new_record("a"))
    b = await journal.add(new_record("b"))
    await journal.add(new_record("c"))
    assert await journal.known_task_ids() == set()
    await journal.update(a.submission_id, task_id="t-a", state=S.CREATED)
    await journal.update(b.submission_id, task_id="t-b", state=S.CREATED)
    assert await journal.known_task_ids() == {"t-a", "t-b"}

    c = await journal.get_by_key("c")
    assert c is not None
    with pytest.raises(JournalConflictError):
        await journal.update(c.submission_id, task_id="t-a", state=S.CREATED)
    assert (await journal.get_by_task_id("t-a")) == await journal.get(a.submission_id)
    assert await journal.get(c.submission_id) == c


@pytest.mark.anyio
async def test_list_filters_by_state_in_insertion_order(journal: SQLiteJournal) -> None:
    """list() gives records in insertion order, all or those in the given states."""
    keys = [f"k{i}" for i in range(6)]
    recs = [await journal.add(new_record(k)) for k in keys]
    for r in recs[::2]:
        await journal.update(r.submission_id, state=S.SENDING)
    await journal.update(recs[1].submission_id, state=S.AMBIGUOUS)

    assert [r.batch_key for r in await journal.list()] == keys
    assert [r.batch_key for r in await journal.list(S.SENDING)] == ["k0", "k2", "k4"]
    both = await journal.list([S.SENDING, S.AMBIGUOUS])
    assert [r.batch_key for r in both] == ["k0", "k1", "k2", "k4"]
    assert all(r.state.needs_reconciliation for r in both)
    assert await journal.list([]) == ()


# --- meta ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_meta_round_trips_json_values(db_path: Path) -> None:
    """Meta values round-trip as JSON, can be overwritten and survive a reopen."""
    async with SQLiteJournal(db_path) as j:
        assert await j.get_meta("out") is None
        assert await j.get_meta("out", "default") == "default"
        await j.set_meta("out", "videos/")
        await j.set_meta("out", "clips/")
        await j.set_meta("config", {"base_url": "http://127.0.0.1:1", "n": [1, 2], "ok": True})
        with pytest.raises(TypeError):
            await j.set_meta("bad", {1, 2})
    async with SQLiteJournal(db_path) as j:
        assert await j.get_meta("out") == "clips/"
        assert await j.get_meta("config") == {
            "base_url": "http://127.0.0.1:1",
            "n": [1, 2],
            "ok": True,
        }
        assert await j.get_meta("bad") is None


# --- the file ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_wal_mode_and_schema_version_are_set(journal: SQLiteJournal, db_path: Path) -> None:
    """The file is in WAL mode and carries the schema version (seen from a raw connection)."""
    await journal.add(new_record())
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        indexes = {row[1] for row in raw.execute("PRAGMA index_list(submissions)")}
    finally:
        raw.close()
    assert {"submissions_task_id", "submissions_state", "submissions_batch_key"} <= indexes


@pytest.mark.anyio
async def test_a_second_connection_sees_committed_records(db_path: Path) -> None:
    """Another journal on the same file sees each write as soon as it returns."""
    async with SQLiteJournal(db_path) as writer, SQLiteJournal(db_path) as reader:
        rec = await writer.add(new_record())
        assert await reader.get(rec.submission_id) == rec
        await writer.update(rec.submission_id, state=S.CREATED, task_id="t-1")
        seen = await reader.get_by_task_id("t-1")
        assert seen is not None
        assert seen.state is S.CREATED
        await reader.set_meta("out", "v/")
        assert await writer.get_meta("out") == "v/"


@pytest.mark.anyio
async def test_a_newer_schema_is_refused(db_path: Path) -> None:
    """A journal written by a newer wanr2v (higher user_version) is refused, not misread."""
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(JournalError, match="schema version"):
        await SQLiteJournal.open(db_path)


@pytest.mark.anyio
async def test_a_file_that_is_not_a_database_raises_journal_error(tmp_path: Path) -> None:
    """Opening a file that is not SQLite raises JournalError naming the path."""
    path = tmp_path / "notes.txt"
    path.write_text("not a database, just text " * 100)
    with pytest.raises(JournalError) as info:
        await SQLiteJournal.open(path)
    assert info.value.path == str(path)


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time, anyio
    from wanr2v._models import VideoRequest
    from wanr2v.journal import SQLiteJournal, SubmissionRecord, SubmissionState

    async def main():
        j = await SQLiteJournal.open(sys.argv[1], synchronous=sys.argv[2])
        req = VideoRequest(model="wan2.6-r2v-flash", prompt="p",
                           reference_urls=["https://example.com/a.png"])
        rec = await j.add(SubmissionRecord.new("line-1", req))
        await j.update(rec.submission_id, expect_state=SubmissionState.NEW,
                       state=SubmissionState.SENDING, sent_at=123.0, attempts=1)
        await j.set_meta("out", "videos/")
        print("written", flush=True)
        time.sleep(60)  # never closes the journal: it dies with SIGKILL here

    anyio.run(main)
    """
)


@pytest.mark.anyio
@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_records_survive_sigkill_of_the_writing_process(
    db_path: Path, synchronous: str
) -> None:
    """A record written before the writer is killed with SIGKILL is there on reopen."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    cmd = [sys.executable, "-c", KILLED_WRITER, str(db_path), synchronous]
    async with await anyio.open_process(cmd, cwd=REPO_ROOT, env=env) as proc:
        assert proc.stdout is not None
        out = b""
        with anyio.fail_after(30):
            while b"written" not in out:
                out += await proc.stdout.receive()
        proc.kill()  # SIGKILL on POSIX: no atexit, no close, no checkpoint
        await proc.wait()
    assert proc.returncode == -9

    async with SQLiteJournal(db_path) as j:
        rec = await j.get_by_key("line-1")
        assert rec is not None
        assert (rec.state, rec.sent_at, rec.attempts) == (S.SENDING, 123.0, 1)
        assert rec.state.needs_reconciliation
        assert await j.get_meta("out") == "videos/"


# --- concurrency -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_concurrent_updates_lose_no_writes(journal: SQLiteJournal) -> None:
    """300 concurrent updates of different fields of 100 records all land."""
    recs = [await journal.add(new_record(f"k{i}", n=i)) for i in range(100)]

    async def set_field(sid: str, field: str, value: str) -> None:
        change: dict[str, Any] = {field: value}
        await journal.update(sid, **change)

    async with anyio.create_task_group() as tg:
        for i, r in enumerate(recs):
            tg.start_soon(set_field, r.submission_id, "status", f"s{i}")
            tg.start_soon(set_field, r.submission_id, "video_url", f"https://v/{i}")
            tg.start_soon(set_field, r.submission_id, "download_path", f"/out/{i}.mp4")
            tg.start_soon(journal.set_meta, f"m{i}", i)

    for i, r in enumerate(await journal.list()):
        assert (r.status, r.video_url, r.download_path) == (
            f"s{i}",
            f"https://v/{i}",
            f"/out/{i}.mp4",
        )
        assert await journal.get_meta(f"m{i}") == i


@pytest.mark.anyio
async def test_writes_do_not_block_the_event_loop(journal: SQLiteJournal) -> None:
    """A heartbeat task keeps ticking while one task makes 500 writes in a row.

    The heartbeat yields (a checkpoint, no clock): it runs whenever the loop is free,
    so however fast or slow the disk and the machine, it ticks during every write that
    waits off the loop, and never during one that blocks it."""
    rec = await journal.add(new_record())
    ticks = 0
    writing = True

    async def heartbeat() -> None:
        nonlocal ticks
        while writing:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        await anyio.lowlevel.checkpoint()
        before = ticks
        for i in range(500):
            await journal.update(rec.submission_id, status=f"tick {i}")
        during = ticks - before
        writing = False

    # A store that ran SQLite on the loop would never yield here: ``during`` would be 0.
    assert during >= 250, during
    stored = await journal.get(rec.submission_id)
    assert stored is not None
    assert stored.status == "tick 499"


# --- lifecycle and safety ------------------------------------------------------------


@pytest.mark.anyio
async def test_closing_twice_is_harmless_and_use_after_close_fails(db_path: Path) -> None:
    """aclose() twice is fine; a call after closing raises JournalError."""
    async with await SQLiteJournal.open(db_path) as j:
        await j.add(new_record())
    assert j.closed
    await j.aclose()
    await j.aclose()
    with pytest.raises(JournalError, match="closed"):
        await j.get_by_key("line-1")


@pytest.mark.anyio
async def test_a_journal_that_was_never_used_closes_cleanly(db_path: Path) -> None:
    """Closing a journal that never opened its file works and creates no file."""
    j = SQLiteJournal(db_path)
    await j.aclose()
    assert not await anyio.Path(db_path).exists()


@pytest.mark.anyio
async def test_sqlite_journal_satisfies_the_store_protocol(db_path: Path) -> None:
    """SQLiteJournal is a JournalStore (statically via the annotation, and at run time)."""
    store: JournalStore = await SQLiteJournal.open(db_path)
    try:
        assert isinstance(store, JournalStore)
        assert (await store.add(new_record())).state is S.NEW
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_the_api_key_never_reaches_the_file(journal: SQLiteJournal, db_path: Path) -> None:
    """Values containing a configured secret are refused everywhere; the file never holds it."""
    with pytest.raises(ValueError):
        await journal.add(new_record(body={"headers": {"Authorization": f"Bearer {SECRET}"}}))
    rec = await journal.add(new_record())
    with pytest.raises(ValueError):
        await journal.update(rec.submission_id, error_message=f"bad key {SECRET}")
    with pytest.raises(ValueError):
        await journal.update(rec.submission_id, result={"nested": [{"k": SECRET}]})
    with pytest.raises(ValueError):
        await journal.set_meta("auth", {"key": SECRET})
    with pytest.raises(ValueError):
        await journal.set_meta(SECRET, 1)
    assert SECRET not in repr(journal)
    assert await journal.get(rec.submission_id) == rec

    await journal.aclose()
    async for path in anyio.Path(db_path).parent.iterdir():
        assert SECRET.encode() not in await path.read_bytes(), path.name


# --- conversions -----------------------------------------------------------------------


def test_request_to_dict_is_json_and_rebuilds_the_request() -> None:
    """request_to_dict gives JSON (paths as strings, unset fields dropped) that rebuilds it."""
    req = VideoRequest(
        model="wan2.6-r2v-flash",
        prompt="character1 runs",
        reference_urls=[Path("refs/a.mp4"), "https://example.com/b.png"],
        duration=3,
    )
    data = request_to_dict(req)
    assert data == {
        "model": "wan2.6-r2v-flash",
        "prompt": "character1 runs",
        "reference_urls": ["refs/a.mp4", "https://example.com/b.png"],
        "duration": 3,
    }
    assert json.loads(json.dumps(data)) == data
    rebuilt = SubmissionRecord.new("k", req).video_request()
    assert rebuilt == attrs.evolve(req, reference_urls=("refs/a.mp4", "https://example.com/b.png"))


def test_result_to_dict_keeps_the_essentials_as_json() -> None:
    """result_to_dict keeps status, URL, codes, ISO times and usage, all JSON-encodable."""
    result = TaskResult(
        task_id="t-1",
        status=TaskStatus.SUCCEEDED,
        raw_status="SUCCEEDED",
        end_time=datetime(2025, 12, 16, 0, 25, 59, tzinfo=UTC),
        video_url="https://v/1.mp4",
        usage=Usage(duration=10.0, output_video_duration=5.0, extra={"x": 1}),
    )
    data = result_to_dict(result)
    assert json.loads(json.dumps(data)) == data
    assert data["status"] == "SUCCEEDED"
    assert data["video_url"] == "https://v/1.mp4"
    assert data["end_time"] == "2025-12-16T00:25:59+00:00"
    assert data["usage"]["duration"] == 10.0
    assert data["usage"]["extra"] == {"x": 1}
    assert "code" not in data


def test_states_say_what_is_terminal_and_what_needs_reconciliation() -> None:
    """Only FAILED and DOWNLOADED are terminal; only SENDING and AMBIGUOUS need reconciling."""
    assert {s for s in S if s.is_terminal} == {S.FAILED, S.DOWNLOADED}
    assert {s for s in S if s.needs_reconciliation} == {S.SENDING, S.AMBIGUOUS}
