"""The Redis journal: one journal shared by every worker of a fleet.

Any worker can ``resume`` (or adopt) another worker's submissions: the records live in
Redis under ``wanr2v:journal:{name}:``, not in one machine's file.

Guarantees, the same as `SQLiteJournal`'s:

- every write is one atomic step in Redis (a Lua script), acknowledged before the call
  returns; ``update(expect_state=...)`` is a compare-and-set of the record's state
  (read, then written only if the stored record is still the one that was read), so of
  two workers only one moves a record ``NEW`` to ``SENDING``;
- a task id belongs to one record at most (an index checked in the same script), so
  reconciliation in one process never adopts a task another process has claimed;
- ``add`` is idempotent on ``batch_key``; records list in insertion order;
- the API key never reaches Redis (``secrets=``).

Limits: durability is Redis's. With Redis's defaults (RDB snapshots, no AOF), a Redis
crash loses the last writes, and with them the proof that a create was sent: run Redis
with ``appendonly yes`` and ``appendfsync always`` (or ``everysec``, accepting a
second of loss) for journals that guard money. Like the Redis budget, this store uses
redis-py's asyncio client: asyncio only (a clear error under trio).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

import attrs

from .._wire import json_text
from ._base import (
    JournalConflictError,
    JournalError,
    SubmissionRecord,
    SubmissionState,
    check_no_secrets,
    check_updatable,
    record_from_dict,
    record_to_dict,
    states_of,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisJournal"]

_ADD: Final = """
local sid = redis.call('HGET', KEYS[2], ARGV[2])
if sid then return {1, redis.call('HGET', KEYS[1], sid)} end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {2, ARGV[1]} end
if ARGV[4] ~= '' then
  local owner = redis.call('HGET', KEYS[3], ARGV[4])
  if owner then return {3, owner} end
  redis.call('HSET', KEYS[3], ARGV[4], ARGV[1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[1])
return {0}
"""
"""KEYS: records, keys, tasks, order. ARGV: sid, batch_key, json, task_id ('' if none).
``{0}`` added; ``{1, json}`` key exists; ``{2, sid}`` sid taken; ``{3, owner}`` task taken."""

_CAS: Final = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return {0} end
if cur ~= ARGV[2] then return {1, cur} end
local old, new = ARGV[4], ARGV[5]
if new ~= '' and new ~= old then
  local owner = redis.call('HGET', KEYS[2], new)
  if owner and owner ~= ARGV[1] then return {2, owner} end
end
if old ~= '' and old ~= new then redis.call('HDEL', KEYS[2], old) end
if new ~= '' then redis.call('HSET', KEYS[2], new, ARGV[1]) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return {3}
"""
"""KEYS: records, tasks. ARGV: sid, expected json, new json, old task id, new task id.
``{0}`` missing; ``{1, json}`` changed meanwhile; ``{2, owner}`` task taken; ``{3}`` done."""


def _encode(record: SubmissionRecord) -> str:
    return json_text(record_to_dict(record), "record")


def _decode(text: str) -> SubmissionRecord:
    return record_from_dict(json.loads(text))


class RedisJournal:
    """A `JournalStore` in Redis, shared by a fleet of workers.

    Example::

        async with RedisJournal("redis://127.0.0.1:6379/0", name="nightly",
                                secrets=[api_key]) as journal:
            items = await client.run_many(requests, journal=journal)

        # any other worker, after a crash of the first:
        async with RedisJournal("redis://127.0.0.1:6379/0", name="nightly") as journal:
            items = await client.resume(journal)

    Args:
        uri: ``redis://host:port/db``.
        name: the journal's name (one batch, or one worker's batches).
        secrets: strings that must never be stored (the API key).
        prefix: the Redis key prefix.
    """

    def __init__(
        self,
        uri: str,
        *,
        name: str,
        secrets: Iterable[str] = (),
        prefix: str = "wanr2v:journal",
    ) -> None:
        if not isinstance(name, str) or not name or any(c.isspace() for c in name):
            raise ValueError(f"name must be a non-empty string without spaces, got {name!r}")
        from .._storage import redact_uri, resolve_storage_uri

        if resolve_storage_uri(uri) is None:
            raise ValueError("RedisJournal needs a redis:// URI.")
        self._uri = uri
        self._where = f"{redact_uri(uri)} ({name})"
        self.name = name
        self._base = f"{prefix}:{name}"
        self._secrets = tuple(s for s in secrets if s)
        self._redis: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._connect_lock = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._redis else "not opened"
        return f"<RedisJournal {self._where} {state}>"

    @property
    def closed(self) -> bool:
        """Whether `aclose` was called."""
        return self._closed

    def _k(self, part: str) -> str:
        return f"{self._base}:{part}"

    async def _client(self) -> Redis:
        if self._closed:
            raise JournalError(f"The journal {self._where} is closed.", path=self._where)
        if self._redis is not None:
            return self._redis
        async with self._connect_lock:
            return self._redis or await self._connect()

    async def _connect(self) -> Redis:
        from .._redis import connect_redis
        from .._storage import SharedStorageError

        try:
            redis = await connect_redis(self._uri, what="RedisJournal")
        except SharedStorageError as exc:
            raise JournalError(str(exc), path=self._where) from exc
        self._scripts = {"add": redis.register_script(_ADD), "cas": redis.register_script(_CAS)}
        self._redis = redis
        return redis

    async def _do(self, fn: Any) -> Any:
        from .._redis import _errors

        redis = await self._client()
        try:
            return await fn(redis)
        except _errors() as exc:
            raise JournalError(f"Journal {self._where}: {exc}", path=self._where) from exc

    def _check(self, value: object, where: str) -> None:
        check_no_secrets(value, self._secrets, where=where)

    # --- JournalStore -----------------------------------------------------------------

    async def add(self, record: SubmissionRecord) -> SubmissionRecord:
        """Insert ``record``; if its ``batch_key`` is already there, return that one.

        Raises:
            JournalConflictError: the ``submission_id`` or ``task_id`` is already used.
            ValueError: a field contains a configured secret.
            TypeError: a JSON field holds something JSON cannot encode.
        """
        for a in attrs.fields(SubmissionRecord):
            self._check(getattr(record, a.name), a.name)
        text = _encode(record)

        async def add(redis: Redis) -> Any:
            return await self._scripts["add"](
                keys=[self._k("records"), self._k("keys"), self._k("tasks"), self._k("order")],
                args=[record.submission_id, record.batch_key, text, record.task_id or ""],
            )

        answer = await self._do(add)
        code = int(answer[0])
        if code == 0:
            return record
        if code == 1:
            return _decode(answer[1])
        what = "submission id" if code == 2 else f"task id {record.task_id}"
        raise JournalConflictError(
            f"Journal {self._where}: the {what} is already claimed by another record.",
            submission_id=record.submission_id,
            path=self._where,
        )

    async def get(self, submission_id: str) -> SubmissionRecord | None:
        """The record with this id, or ``None``."""
        text = await self._do(lambda r: r.hget(self._k("records"), submission_id))
        return None if text is None else _decode(text)

    async def get_by_key(self, batch_key: str) -> SubmissionRecord | None:
        """The record with this batch key, or ``None``."""
        sid = await self._do(lambda r: r.hget(self._k("keys"), batch_key))
        return None if sid is None else await self.get(sid)

    async def get_by_task_id(self, task_id: str) -> SubmissionRecord | None:
        """The record that claims this task id, or ``None``."""
        sid = await self._do(lambda r: r.hget(self._k("tasks"), task_id))
        return None if sid is None else await self.get(sid)

    async def update(
        self,
        submission_id: str,
        *,
        expect_state: SubmissionState | Iterable[SubmissionState] | None = None,
        **changes: Any,
    ) -> SubmissionRecord:
        """Change fields of one record atomically (compare-and-set); sets ``updated_at``.

        Raises:
            KeyError: no such record.
            TypeError: an unknown or immutable field, or a value of the wrong type.
            ValueError: a value contains a configured secret.
            JournalConflictError: the state was not ``expect_state``, or the task id is
                claimed by another record.
        """
        import time

        check_updatable(changes, self._check)
        expected = states_of(expect_state)
        text = await self._do(lambda r: r.hget(self._k("records"), submission_id))
        while True:
            if text is None:
                raise KeyError(submission_id)
            current = _decode(text)
            if expected is not None and current.state not in expected:
                raise JournalConflictError(
                    f"Submission {submission_id} is {current.state.value}, not "
                    f"{' or '.join(s.value for s in expected)}: another writer moved it.",
                    submission_id=submission_id,
                    current=current,
                    path=self._where,
                )
            new = attrs.evolve(current, **changes, updated_at=max(time.time(), current.updated_at))
            new_text = _encode(new)
            args = [submission_id, text, new_text, current.task_id or "", new.task_id or ""]

            async def cas(redis: Redis, args: list[str] = args) -> Any:
                return await self._scripts["cas"](
                    keys=[self._k("records"), self._k("tasks")], args=args
                )

            answer = await self._do(cas)
            code = int(answer[0])
            if code == 3:
                return new
            if code == 0:
                raise KeyError(submission_id)
            if code == 2:
                raise JournalConflictError(
                    f"Journal {self._where}: task {new.task_id} is already claimed by "
                    f"submission {answer[1]}.",
                    submission_id=submission_id,
                    current=current,
                    path=self._where,
                )
            text = answer[1]  # changed meanwhile: check again against the fresh record

    async def list(
        self, states: SubmissionState | Iterable[SubmissionState] | None = None
    ) -> tuple[SubmissionRecord, ...]:
        """The records (in one state or several; all when ``None``) in insertion order."""
        wanted = states_of(states)

        async def read(redis: Redis) -> list[str | None]:
            ids = await redis.lrange(self._k("order"), 0, -1)
            if not ids:
                return []
            texts = await redis.hmget(self._k("records"), ids)
            return [t if t is None or isinstance(t, str) else t.decode() for t in texts]

        records = [_decode(t) for t in await self._do(read) if t is not None]
        if wanted is not None:
            records = [r for r in records if r.state in wanted]
        return tuple(records)

    async def counts(self) -> dict[SubmissionState, int]:
        """How many records are in each state (every state present, zeros included)."""
        out = dict.fromkeys(SubmissionState, 0)
        for rec in await self.list():
            out[rec.state] += 1
        return out

    async def known_task_ids(self) -> set[str]:
        """Every task id some record claims (in any worker of the fleet)."""
        ids = await self._do(lambda r: r.hkeys(self._k("tasks")))
        return set(ids)

    async def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key``.

        Raises:
            ValueError: the key or value contains a configured secret.
            TypeError: the value is not JSON.
        """
        self._check(key, "meta key")
        self._check(value, f"meta {key!r}")
        text = json_text(value, f"meta {key!r}")
        await self._do(lambda r: r.hset(self._k("meta"), key, text))

    async def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        text = await self._do(lambda r: r.hget(self._k("meta"), key))
        return default if text is None else json.loads(text)

    async def aclose(self) -> None:
        """Close the connection; closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        redis, self._redis = self._redis, None
        if redis is not None:
            import anyio

            with anyio.CancelScope(shield=True):
                await redis.aclose()

    async def __aenter__(self) -> Self:
        """Connect (a clear `JournalError` if Redis is unreachable) and return it."""
        await self._client()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the journal."""
        await self.aclose()
