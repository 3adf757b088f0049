"""The SQLite journal: one file, stdlib ``sqlite3`` in WAL mode, off the event loop.

Every call runs in a worker thread (``anyio.to_thread.run_sync``) on one connection
guarded by a ``threading.Lock``, so it works under asyncio and trio alike and never
blocks the event loop. Each write is one transaction, committed before the call
returns. Other processes may open the same file (``wanr2v status`` while a batch runs,
or a resume after a crash); ``busy_timeout`` makes them wait for each other's writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

import anyio
import anyio.to_thread
import attrs

from ._base import (
    UPDATABLE_FIELDS,
    JournalConflictError,
    JournalError,
    SubmissionRecord,
    SubmissionState,
    check_no_secrets,
)

__all__ = ["SCHEMA_VERSION", "SQLiteJournal"]

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
"""Kept in ``PRAGMA user_version``; a file with a higher number is refused."""

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
"""


def _dumps(value: Any, where: str) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where} must hold JSON values only: {exc}") from None


def _states(
    states: SubmissionState | Iterable[SubmissionState] | None,
) -> tuple[SubmissionState, ...] | None:
    # A SubmissionState is a str, hence iterable: wrap it before iterating.
    if states is None:
        return None
    if isinstance(states, str):
        return (SubmissionState(states),)
    return tuple(SubmissionState(s) for s in states)


class SQLiteJournal:
    """A :class:`~wanr2v.journal.JournalStore` in one SQLite file.

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
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        secrets: Iterable[str] = (),
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self._path = os.fspath(path)
        self._secrets = tuple(s for s in secrets if s)
        self._synchronous = synchronous
        self._busy_timeout = float(busy_timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        secrets: Iterable[str] = (),
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> SQLiteJournal:
        """Open (creating if needed) the journal at ``path``; see the class for the args.

        Raises:
            JournalError: the file cannot be opened, is not a journal, or was written
                by a newer wanr2v.
        """
        journal = cls(path, secrets=secrets, synchronous=synchronous, busy_timeout=busy_timeout)
        await journal._run(lambda conn: None)
        return journal

    @property
    def path(self) -> str:
        """The database file's path."""
        return self._path

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
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
                return fn(self._conn)
            except sqlite3.IntegrityError as exc:
                raise JournalConflictError(
                    f"Journal {self._path!r}: {exc} (an id or task id is already claimed).",
                    path=self._path,
                ) from exc
            except sqlite3.Error as exc:
                raise JournalError(f"Journal {self._path!r}: {exc}", path=self._path) from exc

    def _connect(self) -> sqlite3.Connection:
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
                raise JournalError(
                    f"The journal {self._path!r} has schema version {version}; this "
                    f"wanr2v reads up to {SCHEMA_VERSION}. Upgrade wanr2v.",
                    path=self._path,
                )
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check(self, value: object, where: str) -> None:
        check_no_secrets(value, self._secrets, where=where)

    def _row_values(self, record: SubmissionRecord) -> tuple[Any, ...]:
        values = []
        for name in _COLUMNS:
            value = getattr(record, name)
            self._check(value, name)
            if name in _JSON_FIELDS and value is not None:
                value = _dumps(value, name)
            elif isinstance(value, SubmissionState):
                value = value.value
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
            with _transaction(conn):
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
            **changes: fields of :data:`~wanr2v.journal.UPDATABLE_FIELDS`.

        Returns:
            The record as stored after the change.

        Raises:
            KeyError: no such record.
            TypeError: an unknown or immutable field, or a value of the wrong type.
            ValueError: a value contains a configured secret.
            JournalConflictError: the state was not ``expect_state``, or the task id is
                claimed by another record.
        """
        unknown = sorted(set(changes) - UPDATABLE_FIELDS)
        if unknown:
            raise TypeError(
                f"update() cannot set {', '.join(unknown)}; "
                f"settable fields: {', '.join(sorted(UPDATABLE_FIELDS))}."
            )
        for name, value in changes.items():
            self._check(value, name)
        expected = _states(expect_state)
        assignments = ", ".join(f"{name} = ?" for name in _COLUMNS)

        def update(conn: sqlite3.Connection) -> SubmissionRecord:
            with _transaction(conn):
                row = conn.execute(
                    "SELECT * FROM submissions WHERE submission_id = ?", (submission_id,)
                ).fetchone()
                if row is None:
                    raise KeyError(submission_id)
                current = _record(row)
                if expected is not None and current.state not in expected:
                    raise JournalConflictError(
                        f"Submission {submission_id} is {current.state.value}, not "
                        f"{' or '.join(s.value for s in expected)}: another writer moved it.",
                        submission_id=submission_id,
                        current=current,
                        path=self._path,
                    )
                new = attrs.evolve(
                    current, **changes, updated_at=max(time.time(), current.updated_at)
                )
                conn.execute(
                    f"UPDATE submissions SET {assignments} WHERE submission_id = ?",
                    (*self._row_values(new), submission_id),
                )
                return new

        return await self._run(update)

    async def list(
        self, states: SubmissionState | Iterable[SubmissionState] | None = None
    ) -> tuple[SubmissionRecord, ...]:
        """The records (in one state or several; all when ``None``) in insertion order."""
        wanted = _states(states)

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
        text = _dumps(value, f"meta {key!r}")

        def put(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
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

    async def aclose(self) -> None:
        """Close the connection; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True

        def close() -> None:
            with self._lock:
                conn, self._conn = self._conn, None
                if conn is not None:
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
    return SubmissionRecord(**fields)
