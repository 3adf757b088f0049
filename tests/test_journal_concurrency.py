"""A journal shared by processes: compare-and-set claims, one lease holder at a time,
stale owners taken over, refused files, a vanished file noticed, a whole main file.

Store-level tests use real files and real processes (``kill -9`` included); the
batch-level ones are in ``test_journal_batch.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from tests._db import raw_db
from wanr2v import VideoRequest
from wanr2v.journal import (
    JournalBusyError,
    JournalConflictError,
    JournalError,
    JournalVanishedError,
    SQLiteJournal,
    SubmissionRecord,
    SubmissionState,
)
from wanr2v.journal._sqlite import SCHEMA_VERSION

pytestmark = pytest.mark.anyio
S = SubmissionState
REPO_ROOT = Path(__file__).resolve().parents[1]


def request(n: int) -> VideoRequest:
    """A valid request whose prompt carries ``n``."""
    return VideoRequest(
        model="wan2.6-r2v-flash",
        prompt=f"character1 claims take {n}",
        reference_urls=["https://cdn.example.com/a.png"],
    )


async def fill(path: Path, n: int) -> list[str]:
    """A journal at ``path`` with ``n`` NEW records; their submission ids."""
    async with SQLiteJournal(path) as j:
        return [
            (await j.add(SubmissionRecord.new(f"k{i}", request(i)))).submission_id for i in range(n)
        ]


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    """``python -c script args`` from the repository, its output piped."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )


def remove(*paths: str | Path) -> None:
    """Delete files (missing ones are fine)."""
    for path in paths:
        Path(path).unlink(missing_ok=True)


def size_or_zero(path: str | Path) -> int:
    """The size of a file, 0 when it does not exist."""
    return Path(path).stat().st_size if Path(path).exists() else 0


# --- compare-and-set claims ---------------------------------------------------------------

CLAIMER = textwrap.dedent(
    """
    import json, sys, anyio
    from wanr2v.journal import JournalConflictError, SQLiteJournal, SubmissionState as S

    async def main(path, ids):
        won = []
        async with SQLiteJournal(path) as j:
            for sid in ids:
                try:
                    await j.update(sid, expect_state=S.NEW, state=S.SENDING, attempts=1)
                except JournalConflictError:
                    continue
                won.append(sid)
        print(json.dumps(won))

    anyio.run(main, sys.argv[1], json.loads(sys.argv[2]))
    """
)


async def test_two_processes_claim_each_record_exactly_once(tmp_path: Path) -> None:
    """Two processes racing NEW → SENDING over the same 40 records: each record is won by
    exactly one of them (the claim is one UPDATE ... WHERE state = 'NEW')."""
    db = tmp_path / "race.db"
    ids = await fill(db, 40)
    procs = [spawn(CLAIMER, str(db), json.dumps(order)) for order in (ids, ids[::-1])]
    won = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        won.append(json.loads(out))
    assert not set(won[0]) & set(won[1])
    assert sorted(won[0] + won[1]) == sorted(ids)
    async with SQLiteJournal(db) as j:
        assert (await j.counts())[S.SENDING] == 40


async def test_two_journal_objects_and_threads_claim_once(tmp_path: Path) -> None:
    """Two journal objects on one file, many concurrent claims each (worker threads):
    exactly one claim per record succeeds; the others get JournalConflictError with the
    record as it now is."""
    db = tmp_path / "race.db"
    ids = await fill(db, 15)
    wins: list[str] = []
    conflicts: list[JournalConflictError] = []
    async with SQLiteJournal(db) as a, SQLiteJournal(db) as b:

        async def claim(j: SQLiteJournal, sid: str) -> None:
            try:
                await j.update(sid, expect_state=S.NEW, state=S.SENDING)
            except JournalConflictError as exc:
                conflicts.append(exc)
            else:
                wins.append(sid)

        async with anyio.create_task_group() as tg:
            for sid in ids:
                for j in (a, b, a, b):
                    tg.start_soon(claim, j, sid)
    assert sorted(wins) == sorted(ids)
    assert len(conflicts) == 3 * len(ids)
    assert all(c.current is not None and c.current.state is S.SENDING for c in conflicts)


# --- the lease ----------------------------------------------------------------------------


async def test_a_second_owner_is_refused_naming_the_first(tmp_path: Path) -> None:
    """While one holder is alive, another gets JournalBusyError naming its pid and host;
    after a release the lease is free again."""
    db = tmp_path / "lease.db"
    async with SQLiteJournal(db) as a, SQLiteJournal(db) as b:
        mine = await a.acquire()
        assert mine.pid == os.getpid() and mine.host == socket.gethostname()
        with pytest.raises(JournalBusyError) as info:
            await b.acquire()
        assert info.value.owner is not None and info.value.owner.token == mine.token
        text = str(info.value)
        assert f"pid {os.getpid()}" in text and socket.gethostname() in text
        await a.release()
        assert await b.owner() is None
        assert (await b.acquire()).token != mine.token


HOLDER = textwrap.dedent(
    """
    import sys, anyio
    from wanr2v.journal import SQLiteJournal

    async def main(path):
        j = await SQLiteJournal.open(path)
        await j.acquire()
        print("held", flush=True)
        await anyio.sleep(3600)

    anyio.run(main, sys.argv[1])
    """
)


async def test_an_owner_killed_with_sigkill_is_taken_over_at_once(tmp_path: Path) -> None:
    """A holder on this host whose pid is gone (kill -9: no release) is taken over at
    once, without waiting for its heartbeat to expire."""
    db = tmp_path / "lease.db"
    await fill(db, 1)
    proc = spawn(HOLDER, str(db))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "held"
        async with SQLiteJournal(db) as j:
            with pytest.raises(JournalBusyError, match=f"pid {proc.pid}"):
                await j.acquire()
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)
            me = await j.acquire()
            assert me.pid == os.getpid()
            assert (await j.owner()) == me
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


async def test_an_owner_on_another_host_is_taken_over_only_after_its_ttl(tmp_path: Path) -> None:
    """The pid of another host cannot be checked: its lease holds until it misses
    heartbeats for its ttl, then it is free."""
    db = tmp_path / "lease.db"
    await fill(db, 1)

    def plant(heartbeat_at: float) -> None:
        with raw_db(db) as raw:
            raw.execute(
                "INSERT OR REPLACE INTO owner VALUES (1, 'other', 4242, 'far-away-host', ?, ?, 30)",
                (heartbeat_at - 5, heartbeat_at),
            )

    plant(time.time())
    async with SQLiteJournal(db) as j:
        with pytest.raises(JournalBusyError, match="pid 4242 on host far-away-host"):
            await j.acquire()
        plant(time.time() - 31)
        assert (await j.acquire()).host == socket.gethostname()


async def test_writes_after_a_takeover_are_fenced(tmp_path: Path) -> None:
    """A holder that stopped heartbeating past its ttl and was taken over cannot write
    (claim) or heartbeat any more: JournalBusyError naming the new holder."""
    db = tmp_path / "lease.db"
    (sid,) = await fill(db, 1)
    async with SQLiteJournal(db, lease_ttl=0.3) as slow, SQLiteJournal(db) as other:
        await slow.acquire()
        with pytest.raises(JournalBusyError):
            await other.acquire()  # alive: same host, our own pid, fresh heartbeat
        await anyio.sleep(0.5)  # no heartbeat for longer than its ttl
        new = await other.acquire()
        with pytest.raises(JournalBusyError, match=f"held by pid {new.pid}"):
            await slow.update(sid, expect_state=S.NEW, state=S.SENDING)
        with pytest.raises(JournalBusyError):
            await slow.heartbeat()
        rec = await other.update(sid, expect_state=S.NEW, state=S.SENDING)
        assert rec.state is S.SENDING


async def test_heartbeat_keeps_a_short_lease_alive(tmp_path: Path) -> None:
    """Heartbeats within the ttl keep the lease; the owner row shows the last one."""
    db = tmp_path / "lease.db"
    async with SQLiteJournal(db, lease_ttl=0.5) as a, SQLiteJournal(db) as b:
        await a.acquire()
        for _ in range(4):
            await anyio.sleep(0.2)
            await a.heartbeat()
            with pytest.raises(JournalBusyError):
                await b.acquire()
        owner = await b.owner()
        assert owner is not None and time.time() - owner.heartbeat_at < 0.5


# --- files that are not (or no longer) a journal ---------------------------------------------


async def test_an_empty_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    """An existing empty file is not "a journal with 0 tasks": refused, not written."""
    db = tmp_path / "empty.db"
    db.write_bytes(b"")
    with pytest.raises(JournalError, match="not a wanr2v journal: it is empty"):
        await SQLiteJournal.open(db)
    assert db.read_bytes() == b""


async def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    """A text file, or an SQLite database without the journal's tables: refused."""
    text = tmp_path / "notes.db"
    text.write_text("hello, not a database\n" * 100)
    with pytest.raises(JournalError):
        await SQLiteJournal.open(text)
    other = tmp_path / "other.db"
    with raw_db(other) as raw:
        raw.execute("CREATE TABLE t (x)")
    with pytest.raises(JournalError, match="no journal tables"):
        await SQLiteJournal.open(other)


async def test_a_meta_less_journal_is_refused(tmp_path: Path) -> None:
    """A current journal that lost its identity row is refused, not taken as new."""
    db = tmp_path / "j.db"
    await fill(db, 2)
    with raw_db(db) as raw:
        raw.execute("DELETE FROM meta")
    with pytest.raises(JournalError, match="lost its metadata"):
        await SQLiteJournal.open(db)


async def test_a_missing_file_is_refused_without_create(tmp_path: Path) -> None:
    """create=False (what `resume` uses): a missing journal is an error, no file is made."""
    db = tmp_path / "missing.db"
    with pytest.raises(JournalError, match="No journal at"):
        await SQLiteJournal.open(db, create=False)
    assert not db.exists()


async def test_a_new_journal_appears_whole(tmp_path: Path) -> None:
    """A new journal is linked into place complete: its main file alone (no -wal) is a
    journal with its identity from the first moment; no side file is left behind."""
    db = tmp_path / "new.db"
    async with SQLiteJournal(db) as j:
        copy = tmp_path / "copy.db"
        shutil.copyfile(db, copy)  # while open, WAL not copied
        journal_id = await j.get_meta("journal_id")
    async with SQLiteJournal(copy) as c:
        assert await c.get_meta("journal_id") == journal_id
    assert not [name for name in os.listdir(tmp_path) if ".new-" in name]


async def test_a_version_1_journal_is_upgraded(tmp_path: Path) -> None:
    """A journal written by the previous schema gets the lease table and an identity."""
    db = tmp_path / "v1.db"
    await fill(db, 2)
    with raw_db(db) as raw:
        raw.execute("DROP TABLE owner")
        raw.execute("DELETE FROM meta")
        raw.execute("PRAGMA user_version = 1")
    async with SQLiteJournal(db) as j:
        assert len(await j.list()) == 2
        assert await j.get_meta("journal_id")
        await j.acquire()
    with raw_db(db) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


# --- a vanishing file ---------------------------------------------------------------------


async def test_a_deleted_journal_is_noticed(tmp_path: Path) -> None:
    """Deleted while open: the next call raises JournalVanishedError, writes nothing."""
    db = tmp_path / "gone.db"
    (sid,) = await fill(db, 1)
    async with SQLiteJournal(db) as j:
        await j.acquire()
        remove(db, f"{db}-wal", f"{db}-shm")
        with pytest.raises(JournalVanishedError, match="deleted or moved"):
            await j.update(sid, state=S.SENDING)
        with pytest.raises(JournalVanishedError):
            await j.heartbeat()
    assert not db.exists()  # closing did not bring it back


async def test_a_replaced_journal_is_noticed(tmp_path: Path) -> None:
    """Another file moved over the path: JournalVanishedError, the new file untouched."""
    db = tmp_path / "j.db"
    await fill(db, 1)
    other = tmp_path / "other.db"
    await fill(other, 3)
    async with SQLiteJournal(db) as j:
        await j.list()
        os.replace(other, db)
        with pytest.raises(JournalVanishedError, match="replaced"):
            await j.list()
    async with SQLiteJournal(db) as j:
        assert len(await j.list()) == 3


# --- the main file is whole ---------------------------------------------------------------


async def test_a_copy_of_the_main_file_is_whole_after_a_heartbeat_and_after_close(
    tmp_path: Path,
) -> None:
    """Heartbeats checkpoint the WAL (a copy of the main file alone holds everything
    written before the last one); close truncates it (the copy holds everything)."""
    db = tmp_path / "j.db"
    async with SQLiteJournal(db) as j:
        await j.acquire()
        for i in range(5):
            await j.add(SubmissionRecord.new(f"k{i}", request(i)))
        await j.heartbeat()
        mid = tmp_path / "mid.db"
        shutil.copyfile(db, mid)
        for i in range(5, 8):
            await j.add(SubmissionRecord.new(f"k{i}", request(i)))
    end = tmp_path / "end.db"
    shutil.copyfile(db, end)
    assert size_or_zero(f"{db}-wal") == 0
    async with SQLiteJournal(mid) as m, SQLiteJournal(end) as e:
        assert len(await m.list()) == 5
        assert len(await e.list()) == 8
        assert await e.owner() is None  # released at close


async def test_a_claim_reaches_the_main_file_at_once(tmp_path: Path) -> None:
    """Right after NEW → SENDING (before the create goes out), a copy of the main file
    alone already shows SENDING: a copy can never make a resume send it again."""
    db = tmp_path / "j.db"
    (sid,) = await fill(db, 1)
    async with SQLiteJournal(db) as j:
        await j.acquire()
        await j.update(sid, expect_state=S.NEW, state=S.SENDING, attempts=1)
        copy = tmp_path / "copy.db"
        shutil.copyfile(db, copy)
        async with SQLiteJournal(copy) as c:
            rec = await c.get(sid)
    assert rec is not None and rec.state is S.SENDING
