"""Journaled batches against the emulator: the money rule lives in the library, a
journal belongs to one account and base URL, one runner owns it at a time, a race
still sends each submission once, a refused create is final, a vanished or stolen
journal stops the batch."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Self

import anyio
import pytest

from tests._db import raw_db
from wanr2v import InvalidParameterError, RateLimitError, SubmitOutcomeUnknownError, VideoRequest
from wanr2v.journal import (
    DuplicateRequestError,
    JournalAccountError,
    JournalBusyError,
    JournalConflictError,
    JournalStore,
    JournalVanishedError,
    SQLiteJournal,
    SubmissionRecord,
    SubmissionState,
    account_fingerprint,
)
from wanr2v.testing import EmulatorConfig, Endpoint, FaultKind, FaultRule, serve
from wanr2v.testing._client import client_for

pytestmark = pytest.mark.anyio
S = SubmissionState
SCALE = 200.0
KEY_A = "sk-account-a-0123456789"
KEY_B = "sk-account-b-9876543210"


def req(i: int, **kw: object) -> dict[str, object]:
    """A distinct valid request (its prompt carries ``i``)."""
    return {
        "model": "wan2.6-r2v-flash",
        "prompt": f"character1 waves, take {i}",
        "reference_urls": ["https://cdn.example.com/me.mp4"],
        "duration": 5,
        "size": "1280*720",
        **kw,
    }


def emulator(**kw: Any) -> EmulatorConfig:
    """A fast emulator with two accounts (KEY_A, KEY_B)."""
    kw.setdefault("generation_time", (60.0, 120.0))
    kw.setdefault("api_keys", {KEY_A: "alice", KEY_B: "bob"})
    return EmulatorConfig(time_scale=SCALE, seed=5, **kw)


# --- the library's money rule ---------------------------------------------------------------


async def test_a_changed_request_under_a_known_key_raises_before_sending(tmp_path: Path) -> None:
    """run_many({"k": r1}) then run_many({"k": r2}) with r2 changed: JournalConflictError,
    nothing sent, nothing recorded; the journal still holds r1."""
    with serve(emulator()) as emu:
        async with client_for(emu, api_key=KEY_A) as c, SQLiteJournal(tmp_path / "j.db") as j:
            first = await c.run_many({"k": req(1)}, journal=j)
            assert first[0].ok
            sent = emu.stats().total_requests
            with pytest.raises(JournalConflictError, match="different request under key 'k'"):
                await c.run_many({"k": req(1, prompt="character1 waves, changed")}, journal=j)
            assert emu.stats().total_requests == sent
            assert emu.stats().tasks_created == 1
            (rec,) = await j.list()
            assert rec.request["prompt"] == "character1 waves, take 1"


async def test_the_same_request_under_a_renamed_key_is_refused_unless_allowed(
    tmp_path: Path,
) -> None:
    """A request journaled under "a" and given again as "b" would be paid again:
    DuplicateRequestError naming both keys; allow_duplicates=True sends it."""
    with serve(emulator()) as emu:
        async with client_for(emu, api_key=KEY_A) as c, SQLiteJournal(tmp_path / "j.db") as j:
            await c.run_many({"a": req(1)}, journal=j)
            with pytest.raises(DuplicateRequestError) as info:
                await c.run_many({"b": req(1)}, journal=j)
            assert (info.value.key, info.value.other_key) == ("b", "a")
            assert emu.stats().tasks_created == 1 and len(await j.list()) == 1
            items = await c.run_many({"b": req(1)}, journal=j, allow_duplicates=True)
            assert items[0].ok and emu.stats().tasks_created == 2


async def test_two_keys_with_one_request_in_one_call_are_refused(tmp_path: Path) -> None:
    """Within one call too: nothing is recorded or sent."""
    with serve(emulator()) as emu:
        async with client_for(emu, api_key=KEY_A) as c, SQLiteJournal(tmp_path / "j.db") as j:
            with pytest.raises(DuplicateRequestError, match="'x' and 'y'"):
                await c.run_many({"x": req(3), "y": req(3)}, journal=j)
            assert await j.list() == ()
        assert emu.stats().total_requests == 0


# --- accounts and base URLs -------------------------------------------------------------------


async def _detached_batch(c: Any, j: SQLiteJournal, n: int) -> None:
    """Start ``n`` journaled items and walk away once all are created (tasks live on)."""
    with anyio.move_on_after(30):
        async with c.as_completed([req(i) for i in range(n)], journal=j):
            await _until_created(j, n)
    assert (await j.counts())[S.CREATED] == n


async def _until_created(j: SQLiteJournal, n: int) -> None:
    """Poll the journal (another writer's progress has no event) until ``n`` are CREATED."""
    while (await j.counts())[S.CREATED] < n:  # noqa: ASYNC110
        await anyio.sleep(0.02)


async def test_resume_with_another_accounts_key_is_refused_and_marks_nothing(
    tmp_path: Path,
) -> None:
    """Live tasks made with key A, resumed with key B: JournalAccountError before any
    query; every record stays CREATED (not FAILED); key A then finishes them."""
    db = tmp_path / "j.db"
    with serve(emulator(generation_time=(600.0, 900.0))) as emu:
        async with client_for(emu, api_key=KEY_A) as c, SQLiteJournal(db) as j:
            await _detached_batch(c, j, 3)
            url = c.base_url
            assert await j.get_meta("accounts") == {url: account_fingerprint(KEY_A)}
        queries = emu.stats().requests.get("query", {})
        async with client_for(emu, api_key=KEY_B) as c, SQLiteJournal(db) as j:
            with pytest.raises(JournalAccountError) as info:
                await c.resume(j)
            assert info.value.expected == account_fingerprint(KEY_A)
            assert info.value.got == account_fingerprint(KEY_B)
            assert KEY_A not in str(info.value) and KEY_B not in str(info.value)
            assert (await j.counts())[S.CREATED] == 3
        assert emu.stats().requests.get("query", {}) == queries
        async with client_for(emu, api_key=KEY_A) as c, SQLiteJournal(db) as j:
            items = await c.resume(j)
        assert all(it.ok for it in items)
        assert emu.stats().tasks_created == 3


async def test_resume_at_another_base_url_is_refused(tmp_path: Path) -> None:
    """Unfinished tasks live at emulator 1; a client for emulator 2 cannot reach them."""
    db = tmp_path / "j.db"
    with serve(emulator(generation_time=(600.0, 900.0))) as one, serve(emulator()) as two:
        async with client_for(one, api_key=KEY_A) as c, SQLiteJournal(db) as j:
            await _detached_batch(c, j, 2)
        async with client_for(two, api_key=KEY_A) as c, SQLiteJournal(db) as j:
            with pytest.raises(JournalAccountError, match="unfinished tasks at"):
                await c.resume(j)
            assert (await j.counts())[S.CREATED] == 2
        assert two.stats().total_requests == 0


# --- one runner at a time; a race still sends once ------------------------------------------


async def test_a_second_runner_on_a_live_journal_is_refused(tmp_path: Path) -> None:
    """While one batch runs, another run_many on the same file is refused naming the
    first (this very process here), and sends nothing."""
    db = tmp_path / "j.db"
    with serve(emulator(generation_time=(300.0, 400.0))) as emu:
        async with client_for(emu, api_key=KEY_A) as c, SQLiteJournal(db) as a:
            async with c.as_completed([req(i) for i in range(2)], journal=a) as results:
                async with SQLiteJournal(db) as b:
                    with pytest.raises(JournalBusyError, match="in use by another batch"):
                        await c.run_many([req(i) for i in range(10, 12)], journal=b)
                done = [item async for item in results]
            assert all(it.ok for it in done)
        assert emu.stats().tasks_created == 2


async def test_two_batches_of_one_program_may_share_one_journal_object(tmp_path: Path) -> None:
    """The lease belongs to the journal object and counts its holders: a batch that ends
    while another runs through the same object does not free the lease under it (its
    heartbeats go on); the lease is free once both have ended."""
    with serve(emulator()) as emu:
        async with (
            client_for(emu, api_key=KEY_A) as c,
            SQLiteJournal(tmp_path / "j.db", lease_ttl=0.3) as j,
        ):
            async with c.as_completed([req(10 + i) for i in range(3)], journal=j) as results:
                first = await c.run_many({f"a{i}": req(i) for i in range(3)}, journal=j)
                assert await j.owner() is not None  # still held for the second batch
                await anyio.sleep(0.3)  # several heartbeats of the second batch
                second = [item async for item in results]
            assert all(it.ok for it in first + second)
            assert await j.owner() is None
        assert emu.stats().tasks_created == 6


class Unleased:
    """A JournalStore without a lease (a store that only implements the protocol)."""

    def __init__(self, inner: SQLiteJournal) -> None:
        self._inner = inner

    async def add(self, record: SubmissionRecord) -> SubmissionRecord:
        return await self._inner.add(record)

    async def get(self, submission_id: str) -> SubmissionRecord | None:
        return await self._inner.get(submission_id)

    async def get_by_key(self, batch_key: str) -> SubmissionRecord | None:
        return await self._inner.get_by_key(batch_key)

    async def get_by_task_id(self, task_id: str) -> SubmissionRecord | None:
        return await self._inner.get_by_task_id(task_id)

    async def update(
        self,
        submission_id: str,
        *,
        expect_state: SubmissionState | Iterable[SubmissionState] | None = None,
        **changes: Any,
    ) -> SubmissionRecord:
        return await self._inner.update(submission_id, expect_state=expect_state, **changes)

    async def list(
        self, states: SubmissionState | Iterable[SubmissionState] | None = None
    ) -> tuple[SubmissionRecord, ...]:
        return await self._inner.list(states)

    async def counts(self) -> dict[SubmissionState, int]:
        return await self._inner.counts()

    async def known_task_ids(self) -> set[str]:
        return await self._inner.known_task_ids()

    async def set_meta(self, key: str, value: Any) -> None:
        await self._inner.set_meta(key, value)

    async def get_meta(self, key: str, default: Any = None) -> Any:
        return await self._inner.get_meta(key, default)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._inner.aclose()


async def test_two_runners_racing_without_a_lease_create_each_task_once(tmp_path: Path) -> None:
    """Two runners, two journal objects on one file, no lease (a bare store), the same
    12 items at once: the compare-and-set claim lets one of them send each create; the
    emulator sees 12 creates and no duplicate, and every item ends DOWNLOADED."""
    db = tmp_path / "j.db"
    n = 12
    with serve(emulator()) as emu:
        async with (
            client_for(emu, api_key=KEY_A) as c1,
            client_for(emu, api_key=KEY_A) as c2,
            SQLiteJournal(db) as j1,
            SQLiteJournal(db) as j2,
        ):
            s1, s2 = Unleased(j1), Unleased(j2)
            assert isinstance(s1, JournalStore)
            batch = {f"k{i}": req(i) for i in range(n)}
            out: dict[str, Any] = {}

            async def run(name: str, c: Any, store: Unleased) -> None:
                out[name] = await c.run_many(batch, journal=store, download_to=tmp_path / name)

            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "one", c1, s1)
                tg.start_soon(run, "two", c2, s2)
            counts = await j1.counts()
            resumed = await c1.resume(j1, download_to=tmp_path / "one")
        stats = emu.stats()
    assert stats.tasks_created == n and stats.duplicate_creates == 0
    lost = [it for it in out["one"] + out["two"] if isinstance(it.error, JournalConflictError)]
    assert counts[S.DOWNLOADED] + counts[S.SUCCEEDED] + counts[S.CREATED] == n, counts
    assert len(lost) <= n  # a runner that lost a claim does not write over the winner's record
    assert all(it.ok for it in resumed)


# --- refusals on create ---------------------------------------------------------------------


async def test_a_400_on_create_is_final_and_never_resent(tmp_path: Path) -> None:
    """The service refusing a create (400 InvalidParameter) made nothing: the record is
    FAILED with the error (not AMBIGUOUS), and resume does not send it again."""
    db = tmp_path / "j.db"
    with serve(emulator()) as emu:
        async with client_for(emu, api_key=KEY_A) as c, SQLiteJournal(db) as j:
            bad = req(1, extra_parameters={"duration": 99})
            items = await c.run_many({"bad": bad, "good": req(2)}, journal=j)
            assert isinstance(items[0].error, InvalidParameterError) and items[1].ok
            rec = await j.get_by_key("bad")
            assert rec is not None and rec.state is S.FAILED
            assert (
                rec.error_type == "InvalidParameterError" and rec.error_code == "InvalidParameter"
            )
            creates = emu.stats().requests["create"]
            await c.resume(j)
            assert emu.stats().requests["create"] == creates
            assert (await j.get_by_key("bad")).state is S.FAILED  # type: ignore[union-attr]


async def test_an_account_refusal_on_create_goes_back_to_new(tmp_path: Path) -> None:
    """A 429 on create (quota; no retries asked) made nothing and is not the request's
    fault: the record goes back to NEW with the error, and resume sends it once."""
    db = tmp_path / "j.db"
    with serve(emulator()) as emu:
        emu.faults.add(FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.CREATE, count=1))
        async with (
            client_for(emu, api_key=KEY_A, max_retries=0) as c,
            SQLiteJournal(db) as j,
        ):
            items = await c.run_many({"k": req(1)}, journal=j)
            assert isinstance(items[0].error, RateLimitError)
            rec = await j.get_by_key("k")
            assert rec is not None and rec.state is S.NEW and rec.error_type == "RateLimitError"
            assert rec.body is None and rec.base_url is None
            items = await c.resume(j)
            assert items[0].ok
        assert emu.stats().tasks_created == 1 and emu.stats().duplicate_creates == 0


async def test_an_error_while_reconciling_a_lost_create_is_not_a_refusal(tmp_path: Path) -> None:
    """The create's answer is lost (it did make a task) and the lookup that follows is
    refused (429 on the list): that is no proof of absence, so the record stays
    AMBIGUOUS (not NEW), and resume adopts the task instead of paying again."""
    db = tmp_path / "j.db"
    with serve(emulator()) as emu:
        emu.faults.add(
            FaultRule(kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, count=1)
        )
        emu.faults.add(FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.LIST, count=1))
        async with (
            client_for(emu, api_key=KEY_A, max_retries=0, reconcile_grace=0.05) as c,
            SQLiteJournal(db) as j,
        ):
            items = await c.run_many({"k": req(1)}, journal=j)
            assert isinstance(items[0].error, (SubmitOutcomeUnknownError, RateLimitError))
            rec = await j.get_by_key("k")
            assert rec is not None and rec.state is S.AMBIGUOUS and rec.body is not None
            assert emu.stats().tasks_created == 1
            items = await c.resume(j)
            assert items[0].ok
        assert emu.stats().tasks_created == 1 and emu.stats().duplicate_creates == 0


async def test_only_the_create_requests_own_answer_counts_as_a_refusal() -> None:
    """The create path returns the service's error answer to a create itself as a typed
    refusal (nothing was made); an error of a lookup while reconciling (a throttled
    list after a lost answer) is raised instead, and leaves the create unresolved."""
    from wanr2v._create import Refused

    with serve(emulator()) as emu:
        async with client_for(emu, api_key=KEY_A, max_retries=0, reconcile_grace=0.05) as c:
            body, headers = await c._creator.prepare(VideoRequest(**req(1)))  # type: ignore[arg-type]
            emu.faults.add(FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.CREATE, count=1))
            outcome = await c._creator.attempt(body, headers=headers)
            assert isinstance(outcome, Refused) and isinstance(outcome.error, RateLimitError)
            assert c.unresolved == []

            emu.faults.add(
                FaultRule(kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, count=1)
            )
            emu.faults.add(FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.LIST, count=1))
            with pytest.raises((SubmitOutcomeUnknownError, RateLimitError)):
                await c._creator.attempt(body, headers=headers)
            assert len(c.unresolved) == 1
        assert emu.stats().tasks_created == 1


# --- a journal lost mid-run -----------------------------------------------------------------


async def test_a_journal_deleted_mid_run_stops_the_batch(tmp_path: Path) -> None:
    """The file vanishes while tasks run: the batch stops with JournalVanishedError at
    the next heartbeat, sending nothing more."""
    db = tmp_path / "j.db"
    with serve(emulator(generation_time=(600.0, 900.0))) as emu:
        async with (
            client_for(emu, api_key=KEY_A) as c,
            SQLiteJournal(db, lease_ttl=0.6) as j,
        ):

            async def drive() -> None:
                async with c.as_completed([req(i) for i in range(3)], journal=j) as results:
                    await _until_created(j, 3)
                    _remove(db, f"{db}-wal", f"{db}-shm")
                    async for _ in results:
                        pass

            with anyio.fail_after(20), pytest.raises(JournalVanishedError):
                await drive()
        assert emu.stats().tasks_created == 3


async def test_a_runner_whose_lease_is_taken_stops(tmp_path: Path) -> None:
    """Another process taking the lease over (planted in the owner row) stops the
    running batch with JournalBusyError at its next heartbeat or write."""
    db = tmp_path / "j.db"
    with serve(emulator(generation_time=(600.0, 900.0))) as emu:
        async with (
            client_for(emu, api_key=KEY_A) as c,
            SQLiteJournal(db, lease_ttl=0.6) as j,
        ):

            async def drive() -> None:
                async with c.as_completed([req(i) for i in range(2)], journal=j) as results:
                    await _until_created(j, 2)
                    _steal(db)
                    async for _ in results:
                        pass

            with anyio.fail_after(20), pytest.raises(JournalBusyError, match="lost the lease"):
                await drive()
        assert emu.stats().tasks_created == 2


def _remove(*paths: str | Path) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


def _steal(db: Path) -> None:
    with raw_db(db, timeout=10) as raw:
        raw.execute("UPDATE owner SET token = 'thief', pid = 1, host = 'elsewhere' WHERE id = 1")
