"""The account governor: one place that paces everything a client sends.

The service counts per account, region and model: 5 creates/s, 20 queries/s, 20
lists/s, 20 cancels/s, 100 upload policies/s, 5 tasks processed at once. The
`Governor` keeps a client (or several clients of one account in a process,
sharing one governor) under those limits, so that a batch fired at once meets no
429 storm:

- a token bucket per kind of call, granting tokens in priority order (a poll that
  is overdue goes before one that is merely due);
- additive-increase / multiplicative-decrease: a 429 that comes anyway halves that
  kind's rate (and pauses it for ``Retry-After``), which then recovers linearly;
- a cap on HTTP requests in flight, at or below the connection pool's size, so that
  thousands of waiting requests never queue inside httpcore's pool (its bookkeeping
  grows with waiters × connections: ``shared/field-notes.md``). Its slots are granted
  in priority order: every query, list, cancel and policy request before any create,
  then by priority value (a poll's due time), then first come. A poll that is due
  thus never waits behind a burst of creates (10,000 fired at once), so detection lag
  stays low; creates still go whenever no poll is waiting. A free slot is taken at
  once, without a checkpoint or an allocation beyond the context manager;
- a cap on tasks in flight (created, not yet final), for ``call`` and the batch API.

Everything here uses anyio, so it runs under asyncio and trio alike.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, Literal

import anyio
import attrs

if TYPE_CHECKING:
    from ._storage import SharedBudget

__all__ = ["Governor", "GovernorStatistics", "Limits", "RateStatistics", "check_pool"]

logger = logging.getLogger("wanr2v")

Kind = Literal["create", "query", "list", "cancel", "policy"]
KINDS: Final[tuple[Kind, ...]] = ("create", "query", "list", "cancel", "policy")

SAFETY: Final = 0.92
"""Fraction of each documented rate the governor uses: arrival jitter on the network
can bunch requests that left evenly spaced, and a 429 costs more than 8 % of a rate."""


@attrs.frozen(kw_only=True)
class Limits:
    """The account's limits as this client should respect them.

    Rates are per second of real time; ``None`` turns a limit off. For an emulator
    running faster than real time, ``Limits().scaled(100)`` divides every period by 100.

    Args:
        creates_per_second: task creation (service: 5/s).
        queries_per_second: task queries (service: 20/s); list and cancel have their own
            budgets of the same size, as the service counts them apart.
        query_share: the share of the query, list and cancel budgets this client may use
            (e.g. 0.5 when two processes share the account).
        policy_per_second: upload policies (service: 100/s).
        max_in_flight: tasks created and not yet final, for ``call`` and the batch API.
            The service runs 5 at once and queues the rest as PENDING, so a deeper queue
            keeps its slots busy; set 5 when the account answers 429 instead of queueing.
        running_slots: tasks the service processes at once (service: 5); the poll
            scheduler uses it to predict when a queued task starts.
        max_connections: HTTP requests in flight at once (and the pool's size).
    """

    creates_per_second: float | None = 5.0
    queries_per_second: float | None = 20.0
    query_share: float = 1.0
    policy_per_second: float | None = 100.0
    max_in_flight: int | None = 50
    running_slots: int = 5
    max_connections: int = 20

    def __attrs_post_init__(self) -> None:
        for name in ("creates_per_second", "queries_per_second", "policy_per_second"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"Limits.{name} must be > 0 or None, got {value!r}.")
        if not 0 < self.query_share <= 1:
            raise ValueError(f"Limits.query_share must be in (0, 1], got {self.query_share!r}.")
        if self.max_in_flight is not None and self.max_in_flight < 1:
            raise ValueError(
                f"Limits.max_in_flight must be >= 1 or None, got {self.max_in_flight}."
            )
        if self.max_connections < 1:
            raise ValueError(f"Limits.max_connections must be >= 1, got {self.max_connections}.")
        if self.running_slots < 1:
            raise ValueError(f"Limits.running_slots must be >= 1, got {self.running_slots}.")

    def scaled(self, factor: float) -> Limits:
        """These limits for a world running ``factor`` times faster (an emulator)."""

        def s(v: float | None) -> float | None:
            return None if v is None else v * factor

        return attrs.evolve(
            self,
            creates_per_second=s(self.creates_per_second),
            queries_per_second=s(self.queries_per_second),
            policy_per_second=s(self.policy_per_second),
        )

    @classmethod
    def unlimited(cls, *, max_connections: int = 20) -> Limits:
        """No rate limits (quotas off), HTTP concurrency still bounded.

        A small pool is faster: httpcore pays for every pooled connection on every
        request (about 1.2 ms of CPU per request with 4 connections, 17.5 ms with 100,
        measured on loopback by ``bench/bench_overhead.py``).
        """
        return cls(
            creates_per_second=None,
            queries_per_second=None,
            policy_per_second=None,
            max_in_flight=None,
            running_slots=1_000_000,
            max_connections=max_connections,
        )

    def rate_for(self, kind: Kind) -> float | None:
        """The configured rate for one kind of call (``query_share`` applied to query,
        list and cancel), or ``None`` when that kind is not limited."""
        if kind == "create":
            return self.creates_per_second
        if kind == "policy":
            return self.policy_per_second
        q = self.queries_per_second
        return None if q is None else q * self.query_share


@attrs.frozen(kw_only=True)
class RateStatistics:
    """One kind's bucket: its configured and current rate and what went through it.

    Attributes:
        configured_rate: the rate it paces at, requests per second (a little under the
            account's quota); ``None``: unlimited.
        current_rate: the rate now: lower than ``configured_rate`` after a 429, which
            halves it, until it has recovered; ``None``: unlimited.
        granted: requests let through.
        waiting: requests waiting for a token now.
        throttled: 429 answers of this kind that came anyway.
        paused_for: seconds left of the pause a 429's ``Retry-After`` set (0: none).
    """

    configured_rate: float | None
    current_rate: float | None
    granted: int
    waiting: int
    throttled: int
    paused_for: float


@attrs.frozen(kw_only=True)
class GovernorStatistics:
    """A snapshot of a `Governor`.

    Attributes:
        rates: each kind's bucket (``"create"``, ``"query"``, ``"list"``, ``"cancel"``,
            ``"policy"``).
        http_in_flight: HTTP requests being sent or answered now.
        http_waiting: HTTP requests waiting for a slot.
        max_connections: the cap on HTTP requests in flight.
        tasks_in_flight: task slots held (tasks created, or being created, and not final).
        tasks_waiting: batch items waiting for a task slot before their create.
        max_in_flight: the cap on tasks in flight (``Limits.max_in_flight``).
        throttled_total: 429 answers of every kind.
    """

    rates: dict[str, RateStatistics]
    http_in_flight: int
    http_waiting: int
    max_connections: int
    tasks_in_flight: int
    tasks_waiting: int
    max_in_flight: int | None
    throttled_total: int


CREATE_RANK: Final = 1
"""HTTP slot rank of a create; every other kind of call has rank 0 (served first)."""


class _Grant:
    """One waiter for an HTTP slot, ordered by ``key``: ``(rank, priority, arrival)``.

    On asyncio it waits on a bare future (about 100 bytes, against some 600 for an
    ``anyio.Event`` with its asyncio ``Event`` and deque: thousands of creates may
    wait at once); elsewhere on an ``anyio.Event``.
    """

    __slots__ = ("_event", "_future", "key", "state")

    def __init__(self, key: tuple[int, float, int]) -> None:
        self.key = key
        self.state = 0  # 0: waiting, 1: granted, 2: abandoned
        self._future: asyncio.Future[None] | None = None
        self._event: anyio.Event | None = None
        try:
            self._future = asyncio.get_running_loop().create_future()
        except RuntimeError:  # trio: no asyncio loop runs
            self._event = anyio.Event()

    async def wait(self) -> None:
        if self._future is not None:
            await self._future
        else:
            assert self._event is not None
            await self._event.wait()

    def wake(self) -> bool:
        """Hand the slot over; ``False`` when the waiter is already being cancelled."""
        if self._future is not None:
            if self._future.done():
                return False
            self._future.set_result(None)
        else:
            assert self._event is not None
            self._event.set()
        return True

    def __lt__(self, other: _Grant) -> bool:
        return self.key < other.key


class _PrioritySlots:
    """``n`` slots granted lowest ``(rank, priority, arrival)`` first.

    Uncontended, `acquire` takes a free slot synchronously (like anyio's
    ``Semaphore(fast_acquire=True)``); a slot freed while others wait is handed to the
    most urgent waiter directly, so a newcomer can never overtake it.
    """

    __slots__ = ("_heap", "_seq", "free", "total")
    total: int
    free: int
    _heap: list[_Grant]
    _seq: int

    def __init__(self, n: int) -> None:
        self.total = n
        self.free = n
        self._heap = []
        self._seq = 0

    @property
    def waiting(self) -> int:
        return sum(1 for g in self._heap if g.state == 0)

    async def acquire(self, rank: int, priority: float) -> None:
        if self.free > 0:
            self.free -= 1
            return
        self._seq += 1
        grant = _Grant((rank, priority, self._seq))
        heapq.heappush(self._heap, grant)
        try:
            await grant.wait()
        except BaseException:
            if grant.state == 1:  # granted as we were cancelled: pass it on
                self.release()
            else:
                grant.state = 2  # skipped when it reaches the head
            raise

    def release(self) -> None:
        heap = self._heap
        while heap:
            grant = heapq.heappop(heap)
            if grant.state == 0:
                if grant.wake():
                    grant.state = 1
                    return
                grant.state = 2
        self.free += 1


class _TaskSlot:
    """``async with governor.task_slot():`` one task from create to a final status.

    A small class, not a generator context manager: one is held per task in flight for
    the task's whole life (two nested generators cost ~0.6 KB each at 10,000 in flight).
    """

    __slots__ = ("_gov", "_shared")

    def __init__(self, governor: Governor) -> None:
        self._gov = governor
        self._shared: AbstractAsyncContextManager[None] | None = None

    async def __aenter__(self) -> None:
        gov = self._gov
        if gov._tasks is not None:
            gov._tasks_waiting += 1
            try:
                await gov._tasks.acquire()
            finally:
                gov._tasks_waiting -= 1
        gov._tasks_held += 1
        if gov.shared is not None and gov.limits.max_in_flight is not None:
            lease = gov.shared.slot(gov.limits.max_in_flight)
            try:
                await lease.__aenter__()
            except BaseException:
                self._release()
                raise
            self._shared = lease

    async def __aexit__(self, *exc_info: Any) -> None:
        lease, self._shared = self._shared, None
        try:
            if lease is not None:
                await lease.__aexit__(*exc_info)
        finally:
            self._release()

    def _release(self) -> None:
        gov = self._gov
        gov._tasks_held -= 1
        if gov._tasks is not None:
            gov._tasks.release()


class _HttpSlot:
    """``async with governor.http_slot(kind, priority):`` one exchange."""

    __slots__ = ("_priority", "_rank", "_slots")

    def __init__(self, slots: _PrioritySlots, rank: int, priority: float) -> None:
        self._slots = slots
        self._rank = rank
        self._priority = priority

    async def __aenter__(self) -> None:
        await self._slots.acquire(self._rank, self._priority)

    async def __aexit__(self, *exc_info: object) -> None:
        self._slots.release()


def _now() -> float:
    """The event loop's clock, or the monotonic clock outside any loop."""
    try:
        return anyio.current_time()
    except RuntimeError:  # NoEventLoopError: e.g. statistics() from sync code
        return time.monotonic()


class _Bucket:
    """A token bucket granting in priority order, with AIMD on 429."""

    RECOVERY_SECONDS: Final = 10.0
    """A halved rate climbs back to its configured value over about this long."""

    def __init__(self, rate: float | None, clock: Callable[[], float]) -> None:
        self.base = rate
        self.rate = rate
        self.clock = clock
        self.capacity = 1.0
        self.tokens = 1.0
        self.updated: float | None = None  # set at first use: no event loop needed to build
        self.paused_until = 0.0
        self.last_decrease = -math.inf
        self.granted = 0
        self.throttled = 0
        self._heap: list[tuple[float, int, anyio.Event]] = []
        self._cancelled: set[int] = set()
        self._seq = itertools.count()

    def _refill(self, now: float) -> None:
        if self.base is None or self.rate is None:
            return
        if self.updated is None:
            self.updated = now
        if self.rate < self.base:
            # Additive increase: linear recovery since the last decrease.
            elapsed = now - max(self.last_decrease, self.updated)
            self.rate = min(self.base, self.rate + self.base * elapsed / self.RECOVERY_SECONDS)
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def _head(self) -> tuple[float, int, anyio.Event] | None:
        while self._heap and self._heap[0][1] in self._cancelled:
            self._cancelled.discard(heapq.heappop(self._heap)[1])
        return self._heap[0] if self._heap else None

    async def acquire(self, priority: float) -> None:
        if self.base is None:
            self.granted += 1
            return
        seq = next(self._seq)
        event = anyio.Event()
        heapq.heappush(self._heap, (priority, seq, event))
        try:
            while True:
                head = self._head()
                if head is not None and head[1] == seq:
                    now = self.clock()
                    self._refill(now)
                    wait = max(0.0, self.paused_until - now)
                    if self.tokens < 1.0 - 1e-9:  # float dust must not spin the loop
                        assert self.rate is not None
                        wait = max(wait, (1.0 - self.tokens) / self.rate)
                    if wait <= 1e-9:
                        self.tokens -= 1.0
                        self.granted += 1
                        heapq.heappop(self._heap)
                        nxt = self._head()
                        if nxt is not None:
                            nxt[2].set()
                        return
                    # The head sleeps; a more urgent newcomer wakes it to take over.
                    with anyio.move_on_after(wait):
                        await event.wait()
                    event = self._renew(seq, priority, event)
                else:
                    await event.wait()
                    event = self._renew(seq, priority, event)
        except BaseException:
            self._cancelled.add(seq)
            head = self._head()
            if head is not None:
                head[2].set()
            raise

    def _renew(self, seq: int, priority: float, event: anyio.Event) -> anyio.Event:
        if not event.is_set():
            return event
        # Replace a spent event in place (same priority and sequence number).
        for i, (p, s, _) in enumerate(self._heap):
            if s == seq:
                fresh = anyio.Event()
                self._heap[i] = (p, s, fresh)
                return fresh
        return anyio.Event()

    def notify_newcomer(self, priority: float) -> None:
        head = self._head()
        if head is not None and priority < head[0]:
            head[2].set()

    def throttle(self, retry_after: float | None) -> None:
        """Multiplicative decrease after a 429 (at most once a second)."""
        self.throttled += 1
        if self.base is None or self.rate is None:
            return
        now = self.clock()
        self._refill(now)
        if now - self.last_decrease >= 1.0:
            self.rate = max(self.base * 0.1, self.rate * 0.5)
            self.last_decrease = now
            self.tokens = min(self.tokens, 0.0)
        pause = retry_after if retry_after is not None else 1.0 / self.rate
        self.paused_until = max(self.paused_until, now + min(pause, 60.0))

    def statistics(self) -> RateStatistics:
        now = self.clock()
        self._refill(now)
        return RateStatistics(
            configured_rate=self.base,
            current_rate=self.rate,
            granted=self.granted,
            waiting=sum(1 for e in self._heap if e[1] not in self._cancelled),
            throttled=self.throttled,
            paused_for=max(0.0, self.paused_until - now),
        )


def _safe(rate: float | None) -> float | None:
    return None if rate is None else rate * SAFETY


class Governor:
    """Paces creates, queries, lists, cancels and upload policies for one account.

    Share one governor between clients of the same account in a process by passing
    it to each client (``AsyncWanClient(governor=g)``): they then split its budgets.

    Args:
        limits: the `Limits` to respect.
        clock: a monotonic clock in seconds (tests inject a virtual one); defaults to
            ``anyio.current_time``.
    """

    def __init__(
        self, limits: Limits | None = None, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.limits: Limits = limits or Limits()
        self._clock = clock or _now
        self._buckets = {k: _Bucket(_safe(self.limits.rate_for(k)), self._clock) for k in KINDS}
        self._http = _PrioritySlots(self.limits.max_connections)
        n = self.limits.max_in_flight
        self._tasks = anyio.Semaphore(n) if n is not None else None
        self._tasks_held = 0
        self._tasks_waiting = 0
        self.shared: SharedBudget | None = None
        """A budget shared with other processes of the account (``storage_uri``): each
        grant here is then also a grant of the fleet's, in this governor's order."""

    async def acquire(self, kind: Kind, *, priority: float = 0.0) -> None:
        """Wait for a token of ``kind``; lower ``priority`` values are served first."""
        bucket = self._buckets[kind]
        bucket.notify_newcomer(priority)
        await bucket.acquire(priority)
        if self.shared is not None:
            await self.shared.acquire(kind, bucket.base, priority)

    def throttled(self, kind: Kind, retry_after: float | None = None) -> None:
        """Report a 429 for ``kind``: that kind slows down, then recovers gradually."""
        bucket = self._buckets[kind]
        bucket.throttle(retry_after)
        if self.shared is not None:
            self.shared.throttled(kind, retry_after, bucket.base)
        logger.info(
            "throttled (%s): rate now %.2f/s, paused %.2fs",
            kind,
            bucket.rate or 0.0,
            max(0.0, bucket.paused_until - self._clock()),
        )

    def http_slot(self, kind: Kind = "query", priority: float = 0.0) -> _HttpSlot:
        """Hold one of ``max_connections`` HTTP slots for one exchange (``async with``).

        Waiters are served every non-create first, then by ``priority`` (lower first),
        then in arrival order.
        """
        return _HttpSlot(self._http, CREATE_RANK if kind == "create" else 0, priority)

    def task_slot(self) -> AbstractAsyncContextManager[None]:
        """Hold one of ``max_in_flight`` task slots from create to a final status (and,
        with a shared budget, one of the fleet's ``max_in_flight`` leases)."""
        return _TaskSlot(self)

    def statistics(self) -> GovernorStatistics:
        """A frozen snapshot: rates, waiters, HTTP and task slots, 429s seen."""
        rates: dict[str, RateStatistics] = {k: b.statistics() for k, b in self._buckets.items()}
        http = self._http
        return GovernorStatistics(
            rates=rates,
            http_in_flight=http.total - http.free,
            http_waiting=http.waiting,
            max_connections=self.limits.max_connections,
            tasks_in_flight=self._tasks_held,
            tasks_waiting=self._tasks_waiting,
            max_in_flight=self.limits.max_in_flight,
            throttled_total=sum(r.throttled for r in rates.values()),
        )


def pool_size(http: object) -> int | None:
    """The connection pool size of an ``httpx.AsyncClient`` when it can be told:
    ``AioHttpClient.max_connections``, or httpx's default transport's pool."""
    size = getattr(http, "max_connections", None)
    if isinstance(size, int):
        return size
    pool = getattr(getattr(http, "_transport", None), "_pool", None)
    size = getattr(pool, "_max_connections", None)
    return size if isinstance(size, int) else None


def check_pool(http: object, limits: Limits) -> None:
    """Warn when a user's http client pools fewer connections than the governor lets
    requests fly at once: the surplus would wait inside the pool, where httpcore's
    bookkeeping grows with every waiter."""
    size = pool_size(http)
    if size is not None and size < limits.max_connections:
        warnings.warn(
            f"http_client's pool holds {size} connections, fewer than "
            f"Limits.max_connections={limits.max_connections}: the surplus requests would "
            f"wait inside the pool. Pass limits with max_connections={size}, or a larger pool.",
            RuntimeWarning,
            stacklevel=3,
        )
