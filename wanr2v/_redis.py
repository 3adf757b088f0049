"""The Redis backend of `SharedBudget`: one account's limits
shared by every process that names the same Redis.

Guarantees:

- **Rates** are decided by a Lua script on Redis's own clock (``redis.call('TIME')``):
  GCRA with no burst, so two grants of one kind are never closer than ``1 / rate``
  across the whole fleet, whatever the processes' clocks say. Within a process the
  callers reach Redis one at a time per kind, in the governor's priority order; the
  kinds (create, query, list, cancel, policy) have separate budgets, so polls never
  wait behind creates or the reverse.
- **Task slots** are leases in a sorted set scored by their expiry (Redis time). A
  live process renews its leases every ``lease_ttl / 4``; a process killed with
  ``-9`` stops renewing and its slots come back within ``lease_ttl`` (5 s by default).
- **Polls** of one task by several workers: an answer younger than the poll policy's
  ``min_interval`` is shared through Redis, with a single-flight marker, so N workers
  waiting on one task send about one query per interval, not N.
- **429s** set a fleet-wide pause of that kind (``Retry-After``, else one interval)
  and halve its rate for 10 s.
- **Redis unreachable at start**: `SharedStorageError`.
  **Lost mid-run**: a warning, and each process falls back to ``0.8/N`` of each rate
  and of the task slots, ``N`` being the number of live processes Redis last
  reported, so the fleet stays under the quota without Redis (never a 429 storm).
  Nothing in flight is dropped: slots already held stay held. Every ``lease_ttl / 4``
  the process tries Redis again and, once it answers, re-registers its leases and
  uses the shared budgets again.

Limits: the client is redis-py's ``redis.asyncio``, so this backend runs under asyncio
only (a clear error under trio). The fleet's rate is exact, but requests granted in
one order can still reach the service in another (network jitter); the governor's
safety margin (8 %) absorbs that.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio

from ._storage_base import SharedStorageError, StorageStatistics, redact_uri

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ._limits import Kind

__all__ = ["RedisBudget", "connect_redis", "require_asyncio"]

logger = logging.getLogger("wanr2v")

T = TypeVar("T")

DEFAULT_LEASE_TTL: Final = 5.0
"""Seconds a task-slot lease lives unless renewed (a killed process frees its slots
within this long)."""

FALLBACK_MARGIN: Final = 0.8
"""Without Redis, each of N processes uses this fraction of 1/N of each rate: N pacers
that cannot see each other can still bunch up inside the service's one-second window."""

SLOW_SECONDS: Final = 10.0
"""After a 429, the fleet runs that kind at half rate for this long."""

_GCRA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local live = redis.call('ZCOUNT', KEYS[4], string.format('%.0f', now), '+inf')
local pause = redis.call('PTTL', KEYS[2])
if pause > 0 then return {pause * 1000, live} end
local interval = tonumber(ARGV[1]) * tonumber(redis.call('GET', KEYS[3]) or '1')
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat > now then return {math.ceil(tat - now), live} end
local new = math.max(tat, now) + interval
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil(interval / 1000) + 1000)
return {0, live}
"""
"""KEYS: tat, pause, slow, processes. ARGV: interval (µs). Returns ``{µs to wait (0:
granted), live processes}``."""

_THROTTLE: Final = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
if not redis.call('GET', KEYS[2]) then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
end
return 1
"""
"""KEYS: pause, slow. ARGV: pause (ms), slow factor, slow duration (ms)."""

_TAKE_SLOT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local live = redis.call('ZCOUNT', KEYS[2], string.format('%.0f', now), '+inf')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return {1, live} end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  local ttl = tonumber(ARGV[3])
  redis.call('ZADD', KEYS[1], string.format('%.0f', now + ttl), ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.ceil(ttl / 1000) + 1000)
  return {1, live}
end
return {0, live}
"""
"""KEYS: slots, processes. ARGV: member, capacity, ttl (µs). Returns ``{1 (held) or 0
(full), live processes}``."""

_HEARTBEAT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[2])
local exp = string.format('%.0f', now + ttl)
local pttl = math.ceil(ttl / 1000) + 1000
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now))
redis.call('ZADD', KEYS[2], exp, ARGV[1])
redis.call('PEXPIRE', KEYS[2], pttl)
local lost = 0
for i = 3, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then lost = lost + 1 end
  redis.call('ZADD', KEYS[1], exp, ARGV[i])
end
if #ARGV >= 3 then redis.call('PEXPIRE', KEYS[1], pttl) end
return {redis.call('ZCARD', KEYS[2]), lost}
"""
"""KEYS: slots, processes. ARGV: process id, ttl (µs), held members... Renews this
process and its leases (re-adding any that expired: the tasks are still in flight).
Returns ``{live processes, leases that had expired}``."""


def require_asyncio(what: str) -> None:
    """Raise `SharedStorageError` unless running under asyncio."""
    import sniffio

    try:
        lib = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        lib = None
    if lib != "asyncio":
        raise SharedStorageError(
            f"{what} uses redis-py's asyncio client, which runs under asyncio only "
            f"(this is {lib or 'no event loop'}). Under trio, leave storage_uri unset "
            "(in-process limits, Limits.query_share to split the account) or run the "
            "workers on asyncio."
        )


def _errors() -> tuple[type[BaseException], ...]:
    from redis import exceptions

    return (exceptions.ConnectionError, exceptions.TimeoutError, OSError)


async def connect_redis(uri: str, *, what: str, timeout: float = 2.0) -> Redis:
    """A connected ``redis.asyncio.Redis`` for ``uri``, pinged once.

    Raises:
        SharedStorageError: not under asyncio, or Redis does not answer (the message
            names the URI, password redacted, and what to do).
    """
    require_asyncio(what)
    from redis.asyncio import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client: Redis = Redis.from_url(
        uri,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
        decode_responses=True,
    )
    try:
        await client.ping()
    except _errors() as exc:
        with anyio.CancelScope(shield=True):
            await client.aclose()
        raise SharedStorageError(
            f"{what}: cannot reach Redis at {redact_uri(uri)} ({type(exc).__name__}: {exc}). "
            "Start Redis there, fix storage_uri / WANR2V_STORAGE_URI, or leave it unset "
            "for in-process limits."
        ) from exc
    return client


_DOWN: Final = object()


class _PriorityGate:
    """One holder at a time; the waiter with the lowest priority value goes next (ties:
    first come). The governor's buckets grant in priority order, but under a fleet's
    share a process's callers queue here, and an overdue poll must not wait behind a
    merely due one."""

    def __init__(self) -> None:
        self._busy = False
        self._heap: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @asynccontextmanager
    async def hold(self, priority: float) -> AsyncIterator[None]:
        if self._busy or self._heap:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._heap, (priority, next(self._seq), fut))
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    self._release()  # handed the gate while being cancelled: pass it on
                fut.cancel()
                raise
        else:
            self._busy = True
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._heap:
            _, _, fut = heapq.heappop(self._heap)
            if not fut.done():
                fut.set_result(None)  # the gate passes on, still busy
                return
        self._busy = False


class RedisBudget:
    """A `SharedBudget` in Redis for one account and region.

    Args:
        uri: ``redis://host:port/db``.
        account: the account's key fingerprint (never the key).
        region: the region's base URL (or name): budgets are per account and region.
        lease_ttl: seconds a task-slot lease lives without renewal.
        prefix: the Redis key prefix.
    """

    def __init__(
        self,
        uri: str,
        *,
        account: str,
        region: str,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        prefix: str = "wanr2v",
    ) -> None:
        if lease_ttl <= 0:
            raise ValueError(f"lease_ttl must be > 0 seconds, got {lease_ttl!r}.")
        self.uri = uri
        where = hashlib.sha256(region.encode()).hexdigest()[:8]
        self.prefix = f"{prefix}:{account}:{where}"
        self.lease_ttl = float(lease_ttl)
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._redis: Redis | None = None
        self._scripts: dict[str, Any] = {}
        self._start_lock = asyncio.Lock()
        self._started = False
        self._closed = False
        self._degraded = False
        self._fallbacks = 0
        self._live = 1
        self._held: set[str] = set()
        self._seq = itertools.count()
        self._gates: dict[str, _PriorityGate] = {}
        self._slot_gate = asyncio.Lock()
        self._local_next: dict[str, float] = {}
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._shared_polls = 0

    def __repr__(self) -> str:
        return f"<RedisBudget {redact_uri(self.uri)} {self.prefix} degraded={self._degraded}>"

    # --- keys and plumbing --------------------------------------------------------------

    def key(self, *parts: str) -> str:
        """A Redis key of this account and region."""
        return ":".join((self.prefix, *parts))

    @property
    def slots_key(self) -> str:
        """The sorted set of task-slot leases (member ``{process_id}:{n}``, score expiry µs)."""
        return self.key("slots")

    @property
    def processes_key(self) -> str:
        """The sorted set of live processes (score: expiry in µs of Redis time)."""
        return self.key("processes")

    @property
    def degraded(self) -> bool:
        """Whether Redis was lost and this process runs on its in-process share."""
        return self._degraded

    async def start(self) -> None:
        """Reach Redis and start renewing; a clear error if it cannot be reached."""
        if self._started:
            return
        require_asyncio("storage_uri")
        async with self._start_lock:
            if not self._started:
                await self._connect()

    async def _connect(self) -> None:
        if self._closed:
            raise SharedStorageError("This client's shared budget is closed.")
        redis = await connect_redis(self.uri, what="storage_uri")
        self._redis = redis
        self._scripts = {
            name: redis.register_script(src)
            for name, src in (
                ("gcra", _GCRA),
                ("throttle", _THROTTLE),
                ("take", _TAKE_SLOT),
                ("heartbeat", _HEARTBEAT),
            )
        }
        try:
            await self._renew()
        except _errors() as exc:
            raise SharedStorageError(
                f"storage_uri: Redis at {redact_uri(self.uri)} stopped answering: {exc}"
            ) from exc
        self._started = True
        self._heartbeat_task = asyncio.get_running_loop().create_task(self._heartbeat())

    async def _renew(self) -> None:
        assert self._redis is not None
        live, lost = await self._scripts["heartbeat"](
            keys=[self.slots_key, self.processes_key],
            args=[self.process_id, int(self.lease_ttl * 1e6), *sorted(self._held)],
        )
        self._live = max(1, int(live))
        if lost:
            logger.warning(
                "shared storage: %d task-slot lease(s) of this process had expired "
                "(a stall longer than %.1fs, or Redis restarted); re-registered",
                lost,
                self.lease_ttl,
            )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl / 4)
            try:
                await self._renew()
            except _errors() as exc:
                self._lost(exc)
            except Exception:  # never let the renewer die silently
                logger.exception("shared storage: renewing leases failed")
            else:
                self._found()

    def _lost(self, exc: BaseException) -> None:
        if not self._degraded:
            self._degraded = True
            self._fallbacks += 1
            logger.warning(
                "shared storage: Redis at %s is unreachable (%s: %s); falling back to an "
                "in-process share of 1/%d of the account's limits until it answers again",
                redact_uri(self.uri),
                type(exc).__name__,
                exc,
                self._live,
            )

    def _found(self) -> None:
        if self._degraded:
            self._degraded = False
            logger.warning(
                "shared storage: Redis at %s answers again; sharing the account's limits",
                redact_uri(self.uri),
            )

    async def _try(self, call: Callable[[], Awaitable[T]]) -> T | object:
        """``call()``'s result, or ``_DOWN`` when Redis is unreachable.

        While degraded, nothing waits on Redis here: only the renewer probes it (in the
        background, every ``lease_ttl / 4``), so a host that swallows packets costs
        the callers one timeout, not one per call.
        """
        if self._degraded:
            return _DOWN
        try:
            return await call()
        except _errors() as exc:
            self._lost(exc)
            return _DOWN

    # --- rates --------------------------------------------------------------------------

    async def acquire(self, kind: Kind, rate: float | None, priority: float = 0.0) -> None:
        """Wait for the fleet's next token of ``kind`` (``rate`` per second); this
        process's callers go in ``priority`` order (lowest first)."""
        if rate is None:
            return
        await self.start()
        interval_us = 1e6 / rate
        gate = self._gates.get(kind)
        if gate is None:
            gate = self._gates[kind] = _PriorityGate()
        script = self._scripts["gcra"]
        keys = [
            self.key("rate", kind),
            self.key("pause", kind),
            self.key("slow", kind),
            self.processes_key,
        ]
        async with gate.hold(priority):
            while True:
                answer = await self._try(lambda: script(keys=keys, args=[interval_us]))
                if answer is _DOWN:
                    await self._local_pace(kind, rate)
                    return
                assert isinstance(answer, list)
                wait, self._live = int(answer[0]), max(1, int(answer[1]))
                if wait <= 0:
                    return
                await asyncio.sleep(min(wait / 1e6, 1.0))

    async def _local_pace(self, kind: str, rate: float) -> None:
        """Without Redis: this process's ``1/N`` share of ``rate``."""
        share = FALLBACK_MARGIN * rate / max(1, self._live)
        now = time.monotonic()
        # The first local grant waits about one interval of the share, at a random
        # phase: the fleet may have spent the budget just before Redis went away, and
        # processes that lost Redis at the same instant must not fire in step.
        at = max(now, self._local_next.get(kind, now + random.uniform(0.5, 1.5) / share))
        self._local_next[kind] = at + 1.0 / share
        if at > now:
            await asyncio.sleep(at - now)

    def throttled(self, kind: Kind, retry_after: float | None, rate: float | None) -> None:
        """A 429 of ``kind``: pause the whole fleet's ``kind`` and halve its rate for 10 s."""
        pause = retry_after if retry_after is not None else (1.0 / rate if rate else 1.0)
        pause = min(max(pause, 0.001), 60.0)
        now = time.monotonic()
        self._local_next[kind] = max(self._local_next.get(kind, now), now + pause)
        if not self._started or self._redis is None:
            return
        script = self._scripts["throttle"]
        keys = [self.key("pause", kind), self.key("slow", kind)]
        args = [max(1, int(pause * 1000)), 2, int(SLOW_SECONDS * 1000)]
        self._background_call(lambda: script(keys=keys, args=args))

    # --- shared polls -------------------------------------------------------------------

    async def recent_poll(self, task_id: str, max_age: float) -> Any:
        """Another worker's answer for ``task_id`` younger than ``max_age``, or ``None``
        (then the caller polls, and publishes its answer).

        Single flight: when another worker is polling this task right now (it holds a
        marker for ``max_age``), wait up to ``max_age`` for its answer instead of
        sending a second query.
        """
        redis = self._redis
        if redis is None or self._degraded or max_age <= 0:
            return None
        key, marker = self.key("poll", task_id), self.key("polling", task_id)
        ms = max(1, int(max_age * 1000))
        deadline = time.monotonic() + max_age
        while True:
            text = await self._try(lambda: redis.get(key))
            if text is _DOWN:
                return None
            if isinstance(text, str):
                try:
                    data = json.loads(text)
                except ValueError:
                    return None
                if isinstance(data, dict):
                    self._shared_polls += 1
                    return data
                return None
            mine = await self._try(lambda: redis.set(marker, self.process_id, nx=True, px=ms))
            if mine is _DOWN or mine:
                return None  # nobody is polling it: this worker does
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(min(0.01, max_age / 4))

    def publish_poll(self, task_id: str, data: Any, max_age: float) -> None:
        """Share a query's answer with the fleet for ``max_age`` seconds (background)."""
        redis = self._redis
        if redis is None or self._degraded or max_age <= 0 or not isinstance(data, dict):
            return
        try:
            text = json.dumps(data, separators=(",", ":"))
        except (TypeError, ValueError):
            return
        key, ms = self.key("poll", task_id), max(1, int(max_age * 1000))
        self._background_call(lambda: redis.set(key, text, px=ms))

    def _background_call(self, call: Callable[[], Awaitable[Any]]) -> None:
        async def run() -> None:
            await self._try(call)

        try:
            task = asyncio.get_running_loop().create_task(run())
        except RuntimeError:  # no running loop: nothing to share with
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- task slots ---------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, capacity: int) -> AsyncIterator[None]:
        """Hold one of the fleet's ``capacity`` task slots while in the block."""
        await self.start()
        member = f"{self.process_id}:{next(self._seq)}"
        await self._take(member, capacity)
        try:
            yield
        finally:
            self._held.discard(member)
            redis = self._redis
            if redis is not None and not self._degraded:
                with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                    await self._try(lambda: redis.zrem(self.slots_key, member))

    async def _take(self, member: str, capacity: int) -> None:
        script = self._scripts["take"]
        ttl = int(self.lease_ttl * 1e6)
        delay = 0.005
        async with self._slot_gate:
            while True:
                got = await self._try(
                    lambda: script(
                        keys=[self.slots_key, self.processes_key], args=[member, capacity, ttl]
                    )
                )
                if got is _DOWN:
                    share = max(1, capacity // max(1, self._live))
                    if len(self._held) < share:
                        self._held.add(member)
                        return
                    await asyncio.sleep(0.05)
                    continue
                assert isinstance(got, list)
                self._live = max(1, int(got[1]))
                if int(got[0]):
                    self._held.add(member)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.1)

    # --- life ---------------------------------------------------------------------------

    def statistics(self) -> StorageStatistics:
        """A snapshot: degraded or not, live processes, slots held here, fallbacks."""
        return StorageStatistics(
            backend="redis",
            degraded=self._degraded,
            live_processes=self._live,
            slots_held=len(self._held),
            fallbacks=self._fallbacks,
            shared_polls=self._shared_polls,
        )

    async def aclose(self) -> None:
        """Stop renewing, give back this process's leases, close the connection."""
        if self._closed:
            return
        self._closed = True
        task, self._heartbeat_task = self._heartbeat_task, None
        with anyio.CancelScope(shield=True):
            if task is not None:
                task.cancel()
                with anyio.move_on_after(1.0):
                    await asyncio.gather(task, return_exceptions=True)
            redis, self._redis = self._redis, None
            if redis is not None:
                with anyio.move_on_after(2.0):
                    try:
                        if self._held:
                            await redis.zrem(self.slots_key, *self._held)
                        await redis.zrem(self.processes_key, self.process_id)
                    except _errors():
                        pass
                await redis.aclose()
