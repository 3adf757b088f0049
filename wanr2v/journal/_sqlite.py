"""The SQLite journal: one file, stdlib ``sqlite3`` in WAL mode, off the event loop.

Every call runs in a worker thread (``anyio.to_thread.run_sync``) on one connection
guarded by a ``threading.Lock``, so it works under asyncio and trio alike and never
blocks the event loop. Each write is one transaction, committed before the call
returns. Other processes may open the same file (``wanr2v status`` while a batch runs,
or a resume after a crash); ``busy_timeout`` makes them wait for each other's writes.

Guarantees, and their limits:

* **One runner at a time.** A batch runner takes the journal's lease (the ``owner``
  row: token, pid, host, heartbeat) before it adds or sends anything; a second runner
  on a live journal gets `JournalBusyError` naming the holder.
  A dead holder is taken over: at once when it ran on this host and its pid is gone,
  otherwise after ``lease_ttl`` seconds without a heartbeat. Once a lease is held,
  each write of its holder checks it in the same transaction (a fence), so a runner
  that was paused past its lease and taken over writes, hence claims and sends,
  nothing more. Hosts sharing one file must agree on the clock within ``lease_ttl``
  (and SQLite should not be shared over a network filesystem anyway).
* **Compare-and-set claims.** ``update(..., expect_state=...)`` is one
  ``UPDATE ... WHERE state IN (...)`` whose row count is checked, inside a
  ``BEGIN IMMEDIATE`` transaction: of two writers, one moves ``NEW`` to ``SENDING``.
* **A file is a journal or is refused.** A new journal is built in a side file and
  linked into place whole, so no process ever sees a half-made one; an existing file
  that is empty, is not SQLite, or holds no journal (e.g. a journal's main file copied
  without its ``-wal`` file before its first checkpoint) is refused, never "resumed"
  as an empty batch.
* **A vanished file is noticed.** Each call checks that the path still names the file
  that was opened (same device and inode); a deleted or replaced journal raises
  `JournalVanishedError` instead of writing into a ghost.
* **The main file stays whole.** The WAL is checkpointed into the main file when the
  lease is taken, after every compare-and-set write (a claim: the main file never
  shows NEW for a create that went out), at every heartbeat (passively) and at close
  (``TRUNCATE``), so a copy of the main file alone lags a running batch by a
  heartbeat at most and holds everything once the batch has ended. A passive
  checkpoint is skipped while another process reads; a byte copy taken during a
  checkpoint can be torn. For an exact copy while a batch runs, copy the ``-wal``
  file too, or use ``sqlite3 batch.db ".backup copy.db"``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

import anyio
import anyio.to_thread
import attrs

from .._wire import json_text
from ._base import (
    JournalBusyError,
    JournalConflictError,
    JournalError,
    JournalOwner,
    JournalVanishedError,
    SubmissionRecord,
    SubmissionState,
    check_no_secrets,
    check_updatable,
    record_from_dict,
    record_to_dict,
    states_of,
)

__all__ = ["DEFAULT_LEASE_TTL", "SCHEMA_VERSION", "SQLiteJournal"]

T = TypeVar("T")

logger = logging.getLogger("wanr2v")

SCHEMA_VERSION: Final = 2
"""Kept in ``PRAGMA user_version``; a file with a higher number is refused. Version 2
added the lease (``owner``) and the journal's identity (meta ``journal_id``); a version 1
journal is upgraded on open, and a wanr2v that knows only version 1 refuses it (it would
not honour the lease)."""

DEFAULT_LEASE_TTL: Final = 30.0
"""Seconds without a heartbeat after which a runner's lease is free for another host
(on the same host, a holder whose pid is gone is taken over at once)."""

_HOST: Final = socket.gethostname()

DEFAULT_BUSY_TIMEOUT: Final = 10.0
"""Seconds a statement waits for another process's write lock before failing."""

_JSON_FIELDS: Final = frozenset({"request", "body", "result"})
_COLUMNS: Final = tuple(a.name for a in attrs.fields(SubmissionRecord))

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS submissions (
    submission_id  TEXT PRIMARY KEY,
    batch_key      TEXT NOT NULL,
    request        TEXT NOT NULL,   -- JSON
    state          TEXT NOT NULL,
    fingerprint    TEXT,
    body           TEXT,            -- JSON
    task_id        TEXT,
    base_url       TEXT,
    region         TEXT,
    model          TEXT,
    sent_at        REAL,
    status         TEXT,
    video_url      TEXT,
    result         TEXT,            -- JSON
    download_path  TEXT,
    error_type     TEXT,
    error_code     TEXT,
    error_message  TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS submissions_batch_key ON submissions (batch_key);
-- A task belongs to one submission at most: reconciliation can never claim it twice.
CREATE UNIQUE INDEX IF NOT EXISTS submissions_task_id
    ON submissions (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS submissions_state ON submissions (state);
CREATE TABLE IF NOT EXISTS meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL            -- JSON
);
-- The lease: at most one runner (a row) owns the journal at a time.
CREATE TABLE IF NOT EXISTS owner (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    token         TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    host          TEXT NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL,
    ttl           REAL NOT NULL
);
"""


class SQLiteJournal:
    """A `JournalStore` in one SQLite file.

    Example::

        async with SQLiteJournal("batch.db", secrets=[api_key]) as journal:
            rec = await journal.add(SubmissionRecord.new("line-1", request))
            await journal.update(rec.submission_id, expect_state=SubmissionState.NEW,
                                 state=SubmissionState.SENDING, attempts=rec.attempts + 1)

    The file is opened on first use (or by ``await SQLiteJournal.open(path)`` /
    ``async with``) and created with its schema if missing; an existing journal, e.g.
    one left by a killed process, is opened as it is and its WAL recovered.

    Args:
        path: the database file; ``":memory:"`` gives a throw-away journal (no WAL).
        secrets: strings that must never be stored (the API key): writing a value that
            contains one raises ``ValueError``.
        synchronous: ``"FULL"`` (default) syncs the WAL to disk at every commit, so a
            recorded submission survives a power cut or a killed VM, not just a killed
            process; ``"NORMAL"`` skips that sync (faster, still safe against
            ``kill -9``, see the note in ``_connect``).
        busy_timeout: seconds to wait for another process's write lock.
        create: make the journal when ``path`` does not exist (the default); with
            ``False`` a missing file is a `JournalError` (a
            resume must find what a run wrote, not start afresh).
        lease_ttl: seconds without a heartbeat after which a runner's lease is free.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        secrets: Iterable[str] = (),
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        create: bool = True,
        lease_ttl: float = DEFAULT_LEASE_TTL,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if not lease_ttl > 0:
            raise ValueError(f"lease_ttl must be > 0 seconds, got {lease_ttl!r}")
        self._path = os.fspath(path)
        self._secrets = tuple(s for s in secrets if s)
        self._synchronous = synchronous
        self._busy_timeout = float(busy_timeout)
        self._create = create
        self._lease_ttl = float(lease_ttl)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._identity: tuple[int, int] | None = None
        self._lease: JournalOwner | None = None
        self._holders = 0

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        secrets: Iterable[str] = (),
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        create: bool = True,
        lease_ttl: float = DEFAULT_LEASE_TTL,
    ) -> SQLiteJournal:
        """Open (creating if needed) the journal at ``path``; see the class for the args.

        Raises:
            JournalError: the file cannot be opened, is missing (with ``create=False``),
                is not a journal, or was written by a newer wanr2v.
        """
        journal = cls(
            path,
            secrets=secrets,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            create=create,
            lease_ttl=lease_ttl,
        )
        await journal._run(lambda conn: None)
        return journal

    @property
    def path(self) -> str:
        """The database file's path."""
        return self._path

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._conn else "not opened"
        return f"<SQLiteJournal path={self._path!r} {state}>"

    # --- plumbing ---------------------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise JournalError(f"The journal {self._path!r} is closed.", path=self._path)
        # Not abandoned on cancel: a write that has started is committed before the
        # cancellation is delivered, so the journal never lags behind what was done.
        return await anyio.to_thread.run_sync(self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            if self._closed:
                raise JournalError(f"The journal {self._path!r} is closed.", path=self._path)
            try:
                if self._conn is None:
                    self._conn = self._connect()
                self._check_file()
                return fn(self._conn)
            except sqlite3.IntegrityError as exc:
                raise JournalConflictError(
                    f"Journal {self._path!r}: {exc} (an id or task id is already claimed).",
                    path=self._path,
                ) from exc
            except sqlite3.Error as exc:
                raise JournalError(f"Journal {self._path!r}: {exc}", path=self._path) from exc

    def _check_file(self) -> None:
        """Refuse to go on when the path no longer names the file that was opened."""
        if self._identity is None:
            return
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            what = "was deleted or moved"
        else:
            if (st.st_dev, st.st_ino) == self._identity:
                return
            what = "was replaced by another file"
        raise JournalVanishedError(
            f"The journal {self._path!r} {what} while it was open: nothing more is "
            "written to it (what would be written now would be lost). Tasks already "
            "created keep running; restore the file and `resume`.",
            path=self._path,
        )

    def _create_file(self) -> None:
        """Build a new journal in a side file and link it into place whole (atomic: a
        process opening ``path`` meanwhile sees no file or a complete journal)."""
        tmp = f"{self._path}.new-{uuid.uuid4().hex[:12]}"
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = DELETE")
                conn.execute("PRAGMA synchronous = FULL")
                with _transaction(conn):
                    self._create_schema(conn)
            finally:
                conn.close()
            try:
                os.link(tmp, self._path)
            except FileExistsError:
                pass  # another process made it first: open theirs
            except OSError:  # no hard links on this filesystem: a plain rename
                if not os.path.exists(self._path):
                    os.replace(tmp, self._path)
            with contextlib.suppress(OSError):
                dir_fd = os.open(os.path.dirname(os.path.abspath(self._path)), os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            raise JournalError(
                f"Cannot create the journal {self._path!r}: {exc}", path=self._path
            ) from exc
        finally:
            for leftover in (tmp, f"{tmp}-journal"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        for key, value in (("journal_id", str(uuid.uuid4())), ("created_at", time.time())):
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value))
            )

    def _newer(self, version: int) -> JournalError:
        return JournalError(
            f"The journal {self._path!r} has schema version {version}; this "
            f"wanr2v reads up to {SCHEMA_VERSION}. Upgrade wanr2v.",
            path=self._path,
        )

    def _not_a_journal(self, why: str) -> JournalError:
        return JournalError(
            f"{self._path!r} is not a wanr2v journal: {why}. A journal's main file copied "
            "without its '-wal' file can look like this: copy both, or copy it after the "
            "batch ended. Nothing was changed; give another path, or delete this file to "
            "start afresh.",
            path=self._path,
        )

    def _connect(self) -> sqlite3.Connection:
        memory = self._path == ":memory:"
        if not memory and not os.path.exists(self._path):
            if not self._create:
                raise JournalError(
                    f"No journal at {self._path!r} (it is made by the batch that uses it).",
                    path=self._path,
                )
            self._create_file()
        try:
            # isolation_level=None: no implicit transactions; each write below opens
            # its own BEGIN IMMEDIATE ... COMMIT, so nothing stays uncommitted.
            conn = sqlite3.connect(
                self._path,
                timeout=self._busy_timeout,  # sets SQLite's busy handler (busy_timeout)
                isolation_level=None,
                check_same_thread=False,  # one connection, many worker threads, one lock
            )
        except sqlite3.Error as exc:
            raise JournalError(
                f"Cannot open the journal {self._path!r}: {exc}", path=self._path
            ) from exc
        try:
            conn.row_factory = sqlite3.Row
            if not memory:
                # Before anything writes: a file that is not a journal stays untouched.
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {
                    row[0]
                    for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                }
                if version > SCHEMA_VERSION:
                    raise self._newer(version)
                if version == 0 and not tables:
                    raise self._not_a_journal("it is empty")
                if not {"submissions", "meta"} <= tables:
                    raise self._not_a_journal("it holds no journal tables")
                st = os.stat(self._path)
                self._identity = (st.st_dev, st.st_ino)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and self._path != ":memory:":
                raise JournalError(
                    f"The journal {self._path!r} cannot use WAL mode (got {mode!r}); "
                    "put it on a local filesystem.",
                    path=self._path,
                )
            # Durability: in WAL mode a COMMIT appends the transaction to the -wal file
            # with write() before returning, under either setting. The OS keeps those
            # bytes when the *process* dies (kill -9 included), and the next open
            # replays the WAL: NORMAL already survives any process crash. Only FULL
            # also fsyncs the WAL at each commit, which is what survives a power cut or
            # a killed VM. A lost "SENDING" record there could mean paying twice, and
            # an fsync costs milliseconds against minutes per video: FULL by default.
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise self._newer(version)
            # 0: ":memory:" only (a file is made whole first); 1: add the lease and the
            # identity (every statement is idempotent).
            if version < SCHEMA_VERSION:
                self._create_schema(conn)
            row = conn.execute("SELECT value FROM meta WHERE key = 'journal_id'").fetchone()
            if row is None:
                raise self._not_a_journal("it has lost its metadata (no journal_id)")

    def _check(self, value: object, where: str) -> None:
        check_no_secrets(value, self._secrets, where=where)

    def _row_values(self, record: SubmissionRecord) -> tuple[Any, ...]:
        data = record_to_dict(record)
        values = []
        for name in _COLUMNS:
            value = data[name]
            self._check(value, name)
            if name in _JSON_FIELDS and value is not None:
                value = json_text(value, name)
            values.append(value)
        return tuple(values)

    # --- JournalStore -----------------------------------------------------------------

    async def add(self, record: SubmissionRecord) -> SubmissionRecord:
        """Insert ``record``; if its ``batch_key`` is already there, return that one.

        Raises:
            JournalConflictError: the ``submission_id`` or ``task_id`` is already used
                by a record with another batch key.
            ValueError: a field contains a configured secret.
            TypeError: a JSON field holds something JSON cannot encode.
        """
        values = self._row_values(record)
        columns = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)

        def add(conn: sqlite3.Connection) -> SubmissionRecord:
            with self._write(conn):
                row = conn.execute(
                    "SELECT * FROM submissions WHERE batch_key = ?", (record.batch_key,)
                ).fetchone()
                if row is not None:
                    return _record(row)
                conn.execute(f"INSERT INTO submissions ({columns}) VALUES ({marks})", values)
                return record

        return await self._run(add)

    async def get(self, submission_id: str) -> SubmissionRecord | None:
        """The record with this id, or ``None``."""
        return await self._one("submission_id", submission_id)

    async def get_by_key(self, batch_key: str) -> SubmissionRecord | None:
        """The record with this batch key, or ``None``."""
        return await self._one("batch_key", batch_key)

    async def get_by_task_id(self, task_id: str) -> SubmissionRecord | None:
        """The record that claims this task id, or ``None``."""
        return await self._one("task_id", task_id)

    async def _one(self, column: str, value: str) -> SubmissionRecord | None:
        def one(conn: sqlite3.Connection) -> SubmissionRecord | None:
            row = conn.execute(f"SELECT * FROM submissions WHERE {column} = ?", (value,)).fetchone()
            return None if row is None else _record(row)

        return await self._run(one)

    async def update(
        self,
        submission_id: str,
        *,
        expect_state: SubmissionState | Iterable[SubmissionState] | None = None,
        **changes: Any,
    ) -> SubmissionRecord:
        """Change fields of one record atomically; sets ``updated_at``.

        Args:
            submission_id: the record to change.
            expect_state: write only if the record is in this state (or these states).
            **changes: fields of `UPDATABLE_FIELDS`.

        Returns:
            The record as stored after the change.

        Raises:
            KeyError: no such record.
            TypeError: an unknown or immutable field, or a value of the wrong type.
            ValueError: a value contains a configured secret.
            JournalConflictError: the state was not ``expect_state``, or the task id is
                claimed by another record.
        """
        check_updatable(changes, self._check)
        expected = states_of(expect_state)
        assignments = ", ".join(f"{name} = ?" for name in _COLUMNS)

        def conflict(current: SubmissionRecord, expected: tuple[SubmissionState, ...]) -> None:
            raise JournalConflictError(
                f"Submission {submission_id} is {current.state.value}, not "
                f"{' or '.join(s.value for s in expected)}: another writer moved it.",
                submission_id=submission_id,
                current=current,
                path=self._path,
            )

        def update(conn: sqlite3.Connection) -> SubmissionRecord:
            with self._write(conn):
                row = conn.execute(
                    "SELECT * FROM submissions WHERE submission_id = ?", (submission_id,)
                ).fetchone()
                if row is None:
                    raise KeyError(submission_id)
                current = _record(row)
                if expected is not None and current.state not in expected:
                    conflict(current, expected)
                new = attrs.evolve(
                    current, **changes, updated_at=max(time.time(), current.updated_at)
                )
                # The compare-and-set is in the statement itself, its row count checked:
                # of two writers, only one moves a record out of the expected state.
                where = "submission_id = ?"
                args: tuple[Any, ...] = (*self._row_values(new), submission_id)
                if expected is not None:
                    where += f" AND state IN ({', '.join('?' for _ in expected)})"
                    args += tuple(s.value for s in expected)
                cur = conn.execute(f"UPDATE submissions SET {assignments} WHERE {where}", args)
                if cur.rowcount != 1:  # pragma: no cover - the SELECT above already saw it
                    conflict(current, expected or ())
            if expected is not None:
                # A claim (the runner's only compare-and-set writes) goes into the main
                # file at once: a copy of it alone never shows NEW for a create that
                # was sent. (At most a few creates a second: the cost is an fsync each.)
                _checkpoint(conn, "PASSIVE")
            return new

        return await self._run(update)

    async def list(
        self, states: SubmissionState | Iterable[SubmissionState] | None = None
    ) -> tuple[SubmissionRecord, ...]:
        """The records (in one state or several; all when ``None``) in insertion order."""
        wanted = states_of(states)

        def select(conn: sqlite3.Connection) -> tuple[SubmissionRecord, ...]:
            if wanted is None:
                rows = conn.execute("SELECT * FROM submissions ORDER BY rowid").fetchall()
            else:
                marks = ", ".join("?" for _ in wanted)
                rows = conn.execute(
                    f"SELECT * FROM submissions WHERE state IN ({marks}) ORDER BY rowid",
                    tuple(s.value for s in wanted),
                ).fetchall()
            return tuple(_record(row) for row in rows)

        return await self._run(select)

    async def counts(self) -> dict[SubmissionState, int]:
        """How many records are in each state (every state present, zeros included)."""

        def counts(conn: sqlite3.Connection) -> dict[SubmissionState, int]:
            out = dict.fromkeys(SubmissionState, 0)
            for state, n in conn.execute("SELECT state, COUNT(*) FROM submissions GROUP BY state"):
                out[SubmissionState(state)] = n
            return out

        return await self._run(counts)

    async def known_task_ids(self) -> set[str]:
        """Every task id some record claims."""

        def known(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute("SELECT task_id FROM submissions WHERE task_id IS NOT NULL")
            return {row[0] for row in rows}

        return await self._run(known)

    async def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key``.

        Raises:
            ValueError: the key or value contains a configured secret.
            TypeError: the value is not JSON.
        """
        self._check(key, "meta key")
        self._check(value, f"meta {key!r}")
        text = json_text(value, f"meta {key!r}")

        def put(conn: sqlite3.Connection) -> None:
            with self._write(conn):
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, text),
                )

        await self._run(put)

    async def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""

        def get(conn: sqlite3.Connection) -> Any:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            return default if row is None else json.loads(row[0])

        return await self._run(get)

    # --- the lease (LeasedJournal) ----------------------------------------------------

    @property
    def lease_ttl(self) -> float:
        """Seconds without a heartbeat after which a runner's lease is free."""
        return self._lease_ttl

    async def owner(self) -> JournalOwner | None:
        """Who holds the lease now (a dead owner not yet taken over included)."""

        def owner(conn: sqlite3.Connection) -> JournalOwner | None:
            row = conn.execute("SELECT * FROM owner WHERE id = 1").fetchone()
            return None if row is None else _owner(row)

        return await self._run(owner)

    async def acquire(self) -> JournalOwner:
        """Take the lease (or take it over from a dead owner); see the module docstring.

        Raises:
            JournalBusyError: a live process holds it, named in the message.
        """

        def acquire(conn: sqlite3.Connection) -> tuple[JournalOwner, JournalOwner | None]:
            now = time.time()
            if self._lease is not None:
                # Held by this object already (the CLI, then its batch runner; or two
                # batches of one program sharing it): one more holder, same lease.
                with _transaction(conn):
                    self._fence(conn)
                    conn.execute(
                        "UPDATE owner SET heartbeat_at = ? WHERE id = 1 AND token = ?",
                        (now, self._lease.token),
                    )
                self._holders += 1
                return self._lease, None
            mine = uuid.uuid4().hex
            with _transaction(conn):
                row = conn.execute("SELECT * FROM owner WHERE id = 1").fetchone()
                current = None if row is None else _owner(row)
                if current is not None and current.token != mine and _alive(current, now):
                    raise JournalBusyError(
                        f"The journal {self._path!r} is in use by another batch: "
                        f"{current.describe(now)}. Nothing was sent. Wait for it to end, "
                        "or stop it (a dead owner is taken over by the next run: at once "
                        f"on its own host, after {current.ttl:.0f} s without a heartbeat "
                        "from another).",
                        owner=current,
                        path=self._path,
                    )
                me = JournalOwner(
                    token=mine,
                    pid=os.getpid(),
                    host=_HOST,
                    started_at=now,
                    heartbeat_at=now,
                    ttl=self._lease_ttl,
                )
                conn.execute(
                    "INSERT OR REPLACE INTO owner "
                    "(id, token, pid, host, started_at, heartbeat_at, ttl) "
                    "VALUES (1, ?, ?, ?, ?, ?, ?)",
                    (me.token, me.pid, me.host, me.started_at, me.heartbeat_at, me.ttl),
                )
            self._lease = me
            self._holders = 1
            _checkpoint(conn, "PASSIVE")
            return me, current

        me, previous = await self._run(acquire)
        if previous is not None:
            logger.warning(
                "journal %s: took over the lease of %s, which is gone; its unfinished "
                "submissions are resumed (a create it had in flight is reconciled, not re-sent)",
                self._path,
                previous.describe(me.started_at),
            )
        return me

    async def heartbeat(self) -> None:
        """Renew the lease and checkpoint the WAL into the main file (passively).

        Raises:
            JournalError: no lease is held.
            JournalBusyError: another process took the lease over.
            JournalVanishedError: the file is gone.
        """

        def beat(conn: sqlite3.Connection) -> None:
            if self._lease is None:
                raise JournalError("heartbeat() without a lease: acquire() it first.")
            with _transaction(conn):
                self._fence(conn)
                conn.execute(
                    "UPDATE owner SET heartbeat_at = ? WHERE id = 1 AND token = ?",
                    (time.time(), self._lease.token),
                )
            _checkpoint(conn, "PASSIVE")

        await self._run(beat)

    async def release(self) -> None:
        """Give the lease up (once every `acquire` of this object is matched) and
        checkpoint the WAL; harmless when not held."""
        if self._lease is None or self._closed:
            self._lease = None
            return

        def release(conn: sqlite3.Connection) -> None:
            if self._lease is None:
                return
            self._holders -= 1
            if self._holders > 0:
                return
            token, self._lease = self._lease.token, None
            with _transaction(conn):
                conn.execute("DELETE FROM owner WHERE id = 1 AND token = ?", (token,))
            _checkpoint(conn, "TRUNCATE")

        with anyio.CancelScope(shield=True):
            await self._run(release)

    async def checkpoint(self) -> None:
        """Copy the WAL into the main file now (``TRUNCATE``: a copy of the main file
        alone is then whole, unless another process is reading at that moment)."""
        await self._run(lambda conn: _checkpoint(conn, "TRUNCATE"))

    def _fence(self, conn: sqlite3.Connection) -> None:
        """Inside a write transaction: refuse if another process took our lease over."""
        if self._lease is None:
            return
        row = conn.execute("SELECT * FROM owner WHERE id = 1").fetchone()
        if row is not None and row["token"] == self._lease.token:
            return
        current = None if row is None else _owner(row)
        holder = current.describe() if current is not None else "nobody (it was released)"
        raise JournalBusyError(
            f"This process lost the lease of the journal {self._path!r} (it missed its "
            f"heartbeats and was taken over; it is now held by {holder}): it writes and "
            "sends nothing more.",
            owner=current,
            path=self._path,
        )

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[None]:
        """A write transaction, fenced by the lease when one is held."""
        with _transaction(conn):
            self._fence(conn)
            yield

    async def aclose(self) -> None:
        """Release the lease (if held), checkpoint the WAL into the main file and close
        the connection; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        await self._disconnect()

    def _is_connected(self) -> bool:
        """Whether the journal holds an open SQLite connection (opened by its first use)."""
        return self._conn is not None

    async def _release(self) -> None:
        """Release the lease, checkpoint and close the connection as `aclose` does, but
        leave the journal usable: its next use opens the file again. For callers that
        cannot hold the journal in ``async with`` across calls: the blocking
        `WanClient` does this after each call on a journal the call opened."""
        if not self._closed:
            await self._disconnect()

    async def _disconnect(self) -> None:
        def close() -> None:
            with self._lock:
                conn, self._conn = self._conn, None
                if conn is None:
                    return
                try:
                    vanished = False
                    try:
                        self._check_file()
                    except JournalVanishedError:
                        vanished = True
                    if self._lease is not None and not vanished:
                        token, self._lease = self._lease.token, None
                        with contextlib.suppress(sqlite3.Error), _transaction(conn):
                            conn.execute("DELETE FROM owner WHERE id = 1 AND token = ?", (token,))
                    if not vanished and self._path != ":memory:":
                        _checkpoint(conn, "TRUNCATE")
                finally:
                    conn.close()

        # Shielded: a cancelled caller must still release the file.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(close)

    async def __aenter__(self) -> Self:
        """Open the journal (creating it if needed) and return it."""
        await self._run(lambda conn: None)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the journal."""
        await self.aclose()


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a read-modify-write cannot be
    # interleaved with another process's write (no lost update, no upgrade deadlock).
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _record(row: sqlite3.Row) -> SubmissionRecord:
    fields: dict[str, Any] = {}
    for name in _COLUMNS:
        value = row[name]
        if name in _JSON_FIELDS and value is not None:
            value = json.loads(value)
        fields[name] = value
    return record_from_dict(fields)


def _owner(row: sqlite3.Row) -> JournalOwner:
    return JournalOwner(
        token=row["token"],
        pid=int(row["pid"]),
        host=row["host"],
        started_at=float(row["started_at"]),
        heartbeat_at=float(row["heartbeat_at"]),
        ttl=float(row["ttl"]),
    )


def _alive(owner: JournalOwner, now: float) -> bool:
    """Whether a lease holder may still be running (when unsure: yes)."""
    if now - owner.heartbeat_at > owner.ttl:
        return False
    if owner.host != _HOST:
        return True
    return _pid_alive(owner.pid)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    except OSError:  # pragma: no cover - unusual platforms
        return True
    try:  # Linux: a killed process not yet reaped (a zombie) is dead
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
    except (OSError, ValueError):
        return True


def _checkpoint(conn: sqlite3.Connection, mode: Literal["PASSIVE", "TRUNCATE"]) -> None:
    """Copy the WAL into the main file; a busy reader only makes it partial (no error)."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
