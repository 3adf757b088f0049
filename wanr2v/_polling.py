"""PollPolicy and the one poll scheduler a client shares between all its waits.

Instead of a sleep loop of its own per ``wait`` (the vendor's way: 1, 2, 4, 8, 8… s
for every task, whatever the queue), every wait registers its task here and the
scheduler decides when each task is queried next:

- a PENDING task is polled around the time it is predicted to start, from its place
  in this client's FIFO queue and the number of slots the account runs at once;
  one deep in the queue is polled rarely (at most every ``max_interval``);
- a RUNNING task is polled more densely where its completion is likely, using the
  generation times this client has already observed (server ``end_time -
  scheduled_time``, free of clock skew), and a broad proportional schedule before
  there are any;
- every poll takes a token of the governor's query budget, ordered by due time, so
  an overdue poll goes first and the budget is never exceeded;
- two waits on one task share its polls: the first waiter drives them, the others
  listen; if the driver is cancelled, another waiter takes over.

No background task is needed: the waiting coroutines do the polling, so a client
used without ``async with`` works, and a function that returns has finished all it
started.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Final

import anyio
import attrs

from ._exceptions import APIError, RateLimitError, ServerError, TransportError
from ._models import TaskResult, TaskStatus

__all__ = ["PollPolicy", "PollScheduler", "SchedulerStatistics"]

logger = logging.getLogger("wanr2v")


@attrs.frozen(kw_only=True)
class PollPolicy:
    """How the poll scheduler spaces queries.

    Args:
        min_interval: never query one task more often than this (seconds).
        max_interval: never leave a task unqueried longer than this (seconds).
        prior: the generation time range assumed before any is observed (seconds);
            the vendor says 1–5 minutes.
        step: the share of a RUNNING task's remaining completion window between two
            polls (smaller: lower detection lag, more queries).
        proportional: before any generation time is observed, poll a RUNNING task
            every ``proportional × elapsed`` seconds.
        error_backoff: first pause after a transient poll error (doubles, capped at
            ``max_interval``). Transient errors never end a wait: the task goes on,
            and is billed, on the server.
        time_scale: divide all times by this (for an emulator running faster).
    """

    min_interval: float = 0.5
    max_interval: float = 30.0
    prior: tuple[float, float] = (60.0, 300.0)
    step: float = 0.25
    proportional: float = 0.25
    error_backoff: float = 1.0
    time_scale: float = 1.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError(
                "PollPolicy: need 0 < min_interval <= max_interval, got "
                f"{self.min_interval!r}, {self.max_interval!r}."
            )
        if not 0 < self.step <= 1 or not 0 < self.proportional <= 1:
            raise ValueError("PollPolicy: step and proportional must be in (0, 1].")
        if not 0 < self.prior[0] <= self.prior[1]:
            raise ValueError(f"PollPolicy: prior must be (low, high) seconds, got {self.prior}.")
        if self.time_scale <= 0:
            raise ValueError(f"PollPolicy: time_scale must be > 0, got {self.time_scale}.")

    def scaled(self, factor: float) -> PollPolicy:
        """This policy for a world ``factor`` times faster (an emulator)."""
        return attrs.evolve(self, time_scale=self.time_scale * factor)


@attrs.frozen(kw_only=True)
class SchedulerStatistics:
    """A snapshot of a :class:`PollScheduler`."""

    watched: int
    pending: int
    running: int
    polls: int
    shared_waits: int
    transient_errors: int
    observed_durations: int
    duration_range: tuple[float, float] | None


QueryFn = Callable[["Watch", float], Awaitable[TaskResult]]
"""``(watch, priority) -> result``: one query of a task, at a priority (its due time)."""

_FINAL_EVENT_STATUSES: Final = {
    TaskStatus.PENDING: "queued",
    TaskStatus.RUNNING: "running",
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELED: "canceled",
    TaskStatus.UNKNOWN: "unknown",
}


class Watch:
    """The scheduler's record of one task being waited on."""

    def __init__(self, task_id: str, base_url: str | None, seq: int, now: float) -> None:
        self.task_id = task_id
        self.base_url = base_url
        self.seq = seq
        self.registered = now
        self.status: TaskStatus = TaskStatus.PENDING
        self.last: TaskResult | None = None
        self.started_local: float | None = None
        self.last_poll: float | None = None
        self.last_pending_poll: float | None = None
        self.polls = 0
        self.waiters = 0
        self.driving = False
        self.final: TaskResult | None = None
        self.error: BaseException | None = None
        self.changed = anyio.Event()
        self.submitted_local: float = now

    def notify(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class PollScheduler:
    """Schedules the queries of every task a client waits on.

    Args:
        query: performs one query (the client routes it to the task's own region).
        policy: the :class:`PollPolicy`.
        running_slots: tasks the account runs at once (to predict queue starts).
        on_status: called with each result whose status changed (lifecycle events).
    """

    def __init__(
        self,
        query: QueryFn,
        policy: PollPolicy | None = None,
        *,
        running_slots: int = 5,
        on_status: Callable[[TaskResult, TaskStatus | None], None] | None = None,
    ) -> None:
        self._query = query
        self.policy = policy or PollPolicy()
        self.running_slots = running_slots
        self._on_status = on_status
        self._watches: dict[str, Watch] = {}
        self._seq = 0
        self._durations: list[float] = []
        self._polls = 0
        self._shared = 0
        self._errors = 0

    # --- public -------------------------------------------------------------------------

    def register_submission(self, task_id: str, base_url: str | None) -> None:
        """Note a task at the moment it is created (its place in the FIFO queue)."""
        self._watch(task_id, base_url)

    def observe(self, result: TaskResult) -> None:
        """Feed a result fetched elsewhere (``fetch``) into the scheduler's knowledge."""
        w = self._watches.get(result.task_id)
        if w is not None:
            self._apply(w, result, anyio.current_time())

    async def wait(self, task_id: str, base_url: str | None = None) -> TaskResult:
        """Poll until ``task_id`` is final and return its last result (any final status).

        Raises:
            APIError: a non-transient error answer (e.g. 401), which polling cannot fix.
        """
        w = self._watch(task_id, base_url)
        w.waiters += 1
        if w.waiters > 1:
            self._shared += 1
        try:
            while w.final is None and w.error is None:
                if not w.driving:
                    w.driving = True
                    try:
                        await self._drive(w)
                    finally:
                        w.driving = False
                        w.notify()
                else:
                    await w.changed.wait()
            if w.error is not None:
                raise w.error
            assert w.final is not None
            return w.final
        finally:
            w.waiters -= 1
            if w.waiters == 0 and (w.final is not None or w.error is not None):
                self._watches.pop(task_id, None)

    def last_status(self, task_id: str) -> TaskStatus | None:
        """The last status seen for a watched task (``None`` when not watched)."""
        w = self._watches.get(task_id)
        return w.status if w is not None else None

    def statistics(self) -> SchedulerStatistics:
        ws = self._watches.values()
        return SchedulerStatistics(
            watched=len(self._watches),
            pending=sum(w.status is TaskStatus.PENDING for w in ws),
            running=sum(w.status is TaskStatus.RUNNING for w in ws),
            polls=self._polls,
            shared_waits=self._shared,
            transient_errors=self._errors,
            observed_durations=len(self._durations),
            duration_range=self._range(),
        )

    # --- internals ----------------------------------------------------------------------

    def _watch(self, task_id: str, base_url: str | None) -> Watch:
        w = self._watches.get(task_id)
        if w is None:
            self._seq += 1
            w = Watch(task_id, base_url, self._seq, anyio.current_time())
            self._watches[task_id] = w
        elif base_url and not w.base_url:
            w.base_url = base_url
        return w

    async def _drive(self, w: Watch) -> None:
        backoff = self.policy.error_backoff / self.policy.time_scale
        while w.final is None and w.error is None:
            now = anyio.current_time()
            due = now + self._next_delay(w, now)
            await anyio.sleep_until(due)
            try:
                result = await self._query(w, due)
            except (TransportError, ServerError, RateLimitError) as exc:
                # The task goes on (and is billed) on the server: never end the wait here.
                self._errors += 1
                logger.info("poll of %s failed (%s); again in %.2fs", w.task_id, exc, backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, self.policy.max_interval / self.policy.time_scale)
                continue
            except APIError as exc:
                w.error = exc
                logger.warning("waiting for %s: giving up: %s", w.task_id, exc)
                return
            backoff = self.policy.error_backoff / self.policy.time_scale
            self._polls += 1
            w.polls += 1
            self._apply(w, result, anyio.current_time())

    def _apply(self, w: Watch, result: TaskResult, now: float) -> None:
        previous = w.status if w.last is not None else None
        w.last = result
        w.last_poll = now
        status = result.status
        if status is TaskStatus.UNRECOGNIZED:
            status = w.status
        if status is TaskStatus.PENDING:
            w.last_pending_poll = now
        if w.started_local is None and status in (TaskStatus.RUNNING, *_terminal()):
            w.started_local = self._estimate_start(w, result, now)
        w.status = status
        if result.status.is_final and w.final is None:
            w.final = result
            if status is TaskStatus.SUCCEEDED:
                self._learn(result)
        if (previous is not status or previous is None) and self._on_status is not None:
            try:
                self._on_status(result, previous)
            except Exception:  # a listener must not break the wait
                logger.exception("lifecycle listener failed for %s", w.task_id)
        w.notify()

    def _estimate_start(self, w: Watch, r: TaskResult, now: float) -> float:
        """Local monotonic time the task started, skew-free where the server says."""
        if r.scheduled_time is not None and r.submit_time is not None:
            queued = (r.scheduled_time - r.submit_time).total_seconds() / self.policy.time_scale
            if queued >= 0:
                return min(now, w.submitted_local + queued)
        if w.last_pending_poll is not None:
            return (w.last_pending_poll + now) / 2
        return w.submitted_local

    def _learn(self, r: TaskResult) -> None:
        if r.end_time is None or r.scheduled_time is None:
            return
        d = (r.end_time - r.scheduled_time).total_seconds()
        if d > 0:
            self._durations.append(d / self.policy.time_scale)
            if len(self._durations) > 200:
                del self._durations[:100]

    def _range(self) -> tuple[float, float] | None:
        ds = self._durations
        if not ds:
            return None
        lo, hi = min(ds), max(ds)
        if len(ds) == 1:
            return lo * 0.5, hi * 2.0
        spread = max(hi - lo, 0.1 * hi)
        return max(0.0, lo - 0.25 * spread), hi + 0.25 * spread

    def _mean_duration(self) -> float:
        rng = self._range()
        if rng is None:
            p = self.policy
            return (p.prior[0] + p.prior[1]) / 2 / p.time_scale
        return (rng[0] + rng[1]) / 2

    def _queue_position(self, w: Watch) -> int:
        """How many of this client's unfinished tasks were created before ``w``."""
        return sum(1 for o in self._watches.values() if o.seq < w.seq and o.final is None)

    def _next_delay(self, w: Watch, now: float) -> float:
        p = self.policy
        lo_i, hi_i = p.min_interval / p.time_scale, p.max_interval / p.time_scale
        since = now - w.last_poll if w.last_poll is not None else math.inf

        def clamp(delay: float) -> float:
            # Never sooner than min_interval after the last poll, never later than max.
            earliest = max(0.0, lo_i - since)
            return min(max(delay, earliest), hi_i)

        if w.status is TaskStatus.RUNNING or w.started_local is not None:
            start = w.started_local if w.started_local is not None else now
            return clamp(self._running_delay(now - start))
        # PENDING: predict the start from the FIFO place among this client's tasks.
        k = self._queue_position(w)
        slots = self.running_slots
        if k < slots:
            # It should be running already (or start at once): treat it as running
            # since it was registered.
            return clamp(self._running_delay(now - w.registered))
        wait = (k - slots + 1) / slots * self._mean_duration()
        rng = self._range()
        first_done = rng[0] if rng else p.prior[0] / p.time_scale
        return clamp(0.8 * wait + min(first_done, wait))

    def _running_delay(self, elapsed: float) -> float:
        """Seconds until the next poll of a task running for ``elapsed`` seconds."""
        p = self.policy
        rng = self._range()
        if rng is None:
            return p.proportional * max(elapsed, p.min_interval / p.time_scale)
        lo, hi = rng
        if elapsed < lo:
            return lo - elapsed
        if elapsed >= hi:
            # Longer than any seen: fall back to proportional polling.
            return p.proportional * elapsed
        return p.step * (hi - elapsed) + 1e-3


def _terminal() -> tuple[TaskStatus, ...]:
    return (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED)


def event_name(status: TaskStatus) -> str:
    """The lifecycle event name for a status (``queued``, ``running``, ``succeeded`` …)."""
    return _FINAL_EVENT_STATUSES.get(status, "updated")
