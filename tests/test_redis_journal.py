"""RedisJournal against a real redis-server: the JournalStore contract (same semantics
as the SQLite journal), compare-and-set claims between two "processes" (two journal
connections), and two workers resuming one journal without paying twice."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

from wanr2v import AsyncWanClient, Limits, PollPolicy, VideoRequest
from wanr2v.journal import (
    JournalConflictError,
    JournalError,
    JournalStore,
    RedisJournal,
    SubmissionRecord,
)
from wanr2v.journal import SubmissionState as S
from wanr2v.testing import Emulator, EmulatorConfig, serve

from ._redis_server import RedisServer
from .test_journal import full_record, new_record
from .test_wire_json import RECORD, STORED_REDIS

pytestmark = pytest.mark.anyio

KEY = "sk-journal-fleet-0123456789"
SCALE = 20.0


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's client is asyncio-only."""
    return "asyncio"


@pytest.fixture
async def journal(redis_server: RedisServer) -> AsyncIterator[RedisJournal]:
    async with RedisJournal(redis_server.uri, name="batch", secrets=[KEY]) as j:
        yield j


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    config = EmulatorConfig(time_scale=SCALE, generation_time=(2.0, 4.0), seed=5)
    with serve(config) as emu:
        yield emu


def client_for(emu: Emulator) -> AsyncWanClient:
    return AsyncWanClient(
        api_key=KEY,
        base_url=emu.base_url,
        limits=Limits().scaled(SCALE),
        poll_policy=PollPolicy().scaled(SCALE),
        reconcile_grace=0.1,
    )


# --- the contract ----------------------------------------------------------------------


async def test_satisfies_the_store_protocol_and_round_trips_every_field(
    journal: RedisJournal,
) -> None:
    """Every field of a record comes back equal, through a second connection too."""
    assert isinstance(journal, JournalStore)
    rec = full_record()
    assert await journal.add(rec) == rec
    assert await journal.get(rec.submission_id) == rec
    assert await journal.get_by_key(rec.batch_key) == rec
    assert await journal.get_by_task_id("task-123") == rec


async def test_add_is_idempotent_on_batch_key_and_refuses_a_reused_id(
    journal: RedisJournal,
) -> None:
    """The same batch key returns the stored record; a reused submission id conflicts."""
    first = await journal.add(new_record("k", 1))
    assert await journal.add(new_record("k", 2)) == first
    with pytest.raises(JournalConflictError):
        await journal.add(new_record("other", submission_id=first.submission_id))
    assert [r.batch_key for r in await journal.list()] == ["k"]


async def test_a_claim_is_compare_and_set_across_processes(redis_server: RedisServer) -> None:
    """Two journal connections (two workers) race 20 NEW→SENDING claims: one wins, the
    others get JournalConflictError carrying the winner's record."""
    async with (
        RedisJournal(redis_server.uri, name="b") as one,
        RedisJournal(redis_server.uri, name="b") as two,
    ):
        rec = await one.add(new_record())
        wins: list[int] = []
        conflicts: list[JournalConflictError] = []

        async def claim(i: int) -> None:
            j = one if i % 2 else two
            try:
                await j.update(
                    rec.submission_id,
                    expect_state=S.NEW,
                    state=S.SENDING,
                    attempts=1,
                    error_message=f"claimer {i}",
                )
            except JournalConflictError as exc:
                conflicts.append(exc)
            else:
                wins.append(i)

        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(claim, i)
        stored = await two.get(rec.submission_id)
    assert len(wins) == 1 and len(conflicts) == 19
    assert all(c.current is not None and c.current.state is S.SENDING for c in conflicts)
    assert stored is not None and stored.error_message == f"claimer {wins[0]}"


async def test_concurrent_updates_of_other_fields_lose_no_write(journal: RedisJournal) -> None:
    """Updates of different fields at once all land (the CAS retries, never overwrites)."""
    rec = await journal.add(new_record())
    fields = ["status", "video_url", "error_code", "error_message", "download_path", "model"]

    async def set_field(name: str) -> None:
        changes: dict[str, Any] = {name: f"v-{name}"}
        await journal.update(rec.submission_id, **changes)

    async with anyio.create_task_group() as tg:
        for name in fields:
            tg.start_soon(set_field, name)
    stored = await journal.get(rec.submission_id)
    assert stored is not None
    assert all(getattr(stored, n) == f"v-{n}" for n in fields)


async def test_a_task_id_is_claimed_by_one_record_only(journal: RedisJournal) -> None:
    """No two records may claim one task; the refused write changes nothing."""
    a = await journal.add(new_record("a"))
    c = await journal.add(new_record("c"))
    await journal.update(a.submission_id, task_id="t-a", state=S.CREATED)
    assert await journal.known_task_ids() == {"t-a"}
    with pytest.raises(JournalConflictError, match="t-a"):
        await journal.update(c.submission_id, task_id="t-a", state=S.CREATED)
    assert await journal.get(c.submission_id) == c
    await journal.update(a.submission_id, task_id="t-a2")  # a record may move its claim
    assert await journal.known_task_ids() == {"t-a2"}


async def test_update_refusals(journal: RedisJournal) -> None:
    """Unknown or frozen fields, missing records and wrong states are refused."""
    rec = await journal.add(new_record())
    with pytest.raises(TypeError):
        await journal.update(rec.submission_id, batch_key="x")
    with pytest.raises(KeyError):
        await journal.update("nope", status="x")
    with pytest.raises(JournalConflictError):
        await journal.update(rec.submission_id, expect_state=S.CREATED, state=S.FAILED)
    assert await journal.get(rec.submission_id) == rec


async def test_list_counts_and_meta(journal: RedisJournal) -> None:
    """list() in insertion order, filtered by state; counts per state; JSON meta."""
    recs = [await journal.add(new_record(f"k{i}", i)) for i in range(5)]
    await journal.update(recs[1].submission_id, state=S.CREATED, task_id="t1")
    await journal.update(recs[3].submission_id, state=S.FAILED)
    assert [r.batch_key for r in await journal.list()] == [f"k{i}" for i in range(5)]
    assert [r.batch_key for r in await journal.list([S.CREATED, S.FAILED])] == ["k1", "k3"]
    counts = await journal.counts()
    assert (counts[S.NEW], counts[S.CREATED], counts[S.FAILED], counts[S.DOWNLOADED]) == (
        3,
        1,
        1,
        0,
    )
    await journal.set_meta("out", {"dir": "/v", "n": [1, 2]})
    assert await journal.get_meta("out") == {"dir": "/v", "n": [1, 2]}
    assert await journal.get_meta("missing", 7) == 7


async def test_a_record_stored_before_the_converters_loads_and_is_rewritten_alike(
    journal: RedisJournal, redis_server: RedisServer
) -> None:
    """A record as the Redis journal stored it before ``_wire``'s converters (copied
    from its output) is found by id, key and task id, and an update writes its JSON
    fields back unchanged."""
    from redis.asyncio import Redis

    rec = RECORD
    r = Redis.from_url(redis_server.uri, decode_responses=True)
    try:
        await r.hset("wanr2v:journal:batch:records", rec.submission_id, STORED_REDIS)
        await r.hset("wanr2v:journal:batch:keys", rec.batch_key, rec.submission_id)
        await r.hset("wanr2v:journal:batch:tasks", "t-77", rec.submission_id)
        await r.rpush("wanr2v:journal:batch:order", rec.submission_id)
        assert await journal.get(rec.submission_id) == rec
        assert await journal.get_by_key("line-3") == rec
        assert await journal.get_by_task_id("t-77") == rec
        assert await journal.list() == (rec,)
        await journal.update(rec.submission_id, error_message="noted")
        text = await r.hget("wanr2v:journal:batch:records", rec.submission_id)
    finally:
        await r.aclose()
    assert isinstance(text, str)
    stored = json.loads(text)
    assert stored["error_message"] == "noted"
    assert json.loads(STORED_REDIS) == {
        **stored,
        "error_message": None,
        "updated_at": rec.updated_at,
    }
    assert text.startswith(STORED_REDIS[: STORED_REDIS.index('"error_message"')])


async def test_the_api_key_never_reaches_redis(
    journal: RedisJournal, redis_server: RedisServer
) -> None:
    """A value holding the key is refused, and nothing stored contains it."""
    from redis.asyncio import Redis

    rec = await journal.add(new_record())
    with pytest.raises(ValueError, match="secret"):
        await journal.update(rec.submission_id, error_message=f"Bearer {KEY}")
    with pytest.raises(ValueError):
        await journal.set_meta("k", KEY)
    r = Redis.from_url(redis_server.uri)
    dumped = b"".join([await r.dump(k) or b"" for k in await r.keys("*")])
    await r.aclose()
    assert KEY.encode() not in dumped


async def test_unreachable_redis_is_a_clear_journal_error() -> None:
    """Nothing listens: a JournalError naming where, not a hang."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JournalError, match=f"127.0.0.1:{port}"):
        async with RedisJournal(f"redis://127.0.0.1:{port}/0", name="x"):
            pass


# --- workers sharing one journal -------------------------------------------------------


def requests(n: int) -> dict[str, VideoRequest]:
    return {
        f"item-{i}": VideoRequest(
            model="wan2.6-r2v-flash",
            prompt=f"character1 waves at character2, shared take {i}",
            reference_urls=["https://cdn.example.com/me.mp4", "https://cdn.example.com/dog.png"],
        )
        for i in range(n)
    }


async def test_two_workers_resume_one_journal_without_paying_twice(
    emulator: Emulator, redis_server: RedisServer
) -> None:
    """Worker A stops once its 6 tasks are created; workers B and C, each with its own
    connection, resume the journal at the same time: every item ends SUCCEEDED for
    both, and the service saw 6 creates, none twice."""
    created = anyio.Event()
    async with RedisJournal(redis_server.uri, name="shared") as ja, client_for(emulator) as a:

        def on(event: Any) -> None:
            if event.kind == "created" and emulator.stats().tasks_created >= 6:
                created.set()

        a.subscribe(on)
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await a.run_many(requests(6), journal=ja)

            tg.start_soon(run)
            await created.wait()
            tg.cancel_scope.cancel()  # worker A stops (its tasks go on on the service)
        counts = await ja.counts()
    assert counts[S.CREATED] == 6

    outcomes: dict[str, list[Any]] = {}

    async def resume(name: str) -> None:
        async with RedisJournal(redis_server.uri, name="shared") as j, client_for(emulator) as c:
            outcomes[name] = await c.resume(j)

    async with anyio.create_task_group() as tg:
        tg.start_soon(resume, "b")
        tg.start_soon(resume, "c")
    for items in outcomes.values():
        assert sorted(it.key for it in items) == sorted(requests(6))
        assert all(it.ok for it in items), [it.error for it in items]
    stats = emulator.stats()
    assert stats.tasks_created == 6 and stats.duplicate_creates == 0
    async with RedisJournal(redis_server.uri, name="shared") as j:
        assert (await j.counts())[S.SUCCEEDED] == 6


async def test_reconciliation_never_adopts_a_task_another_worker_claimed(
    emulator: Emulator, redis_server: RedisServer
) -> None:
    """Worker A's record claims task T. Worker B resumes a record with the same prompt
    whose create's outcome is unknown: T matches by prompt but is claimed in the shared
    journal, so B does not adopt it (the service provably has no other: B sends once)."""
    req = requests(1)["item-0"]
    async with RedisJournal(redis_server.uri, name="r") as j, client_for(emulator) as a:
        t = await a.async_call(req)
        body, _ = await a._creator.prepare(req)
        await j.add(SubmissionRecord.new("a", req, state=S.CREATED, task_id=t.task_id))
        await j.add(
            SubmissionRecord.new(
                "b", req, state=S.AMBIGUOUS, body=body, sent_at=time.time(), attempts=1
            )
        )
    async with RedisJournal(redis_server.uri, name="r") as j, client_for(emulator) as b:
        items = await b.resume(j)
        rec_b = await j.get_by_key("b")
    assert all(it.ok for it in items)
    assert rec_b is not None and rec_b.task_id not in (None, t.task_id)
    assert emulator.stats().tasks_created == 2
