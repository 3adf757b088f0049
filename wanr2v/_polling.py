"""PollPolicy and the one poll scheduler a client shares between all its waits.

Instead of a sleep loop of its own per ``wait`` (the vendor's way: 1, 2, 4, 8, 8… s
for every task, whatever the queue), every wait registers its task here and the
scheduler decides when each task is queried next:

- a PENDING task is not polled while the client can tell where it is: the service
  runs ``running_slots`` tasks at once and starts the rest first in, first out, so
  when a task of this client is seen to end, the first of its queued tasks took the
  freed slot at that moment (the server's ``end_time``). That task is then scheduled
  as running from then on, without a query; a queued task is otherwise polled only
  around its predicted start (from its place in the queue and the generation times
  seen), after a first check within ``max_interval``: such checks catch a shared
  account (fewer slots: the task is put back in the queue) and a service that runs
  more at once than ``running_slots`` (a task deep in the presumed queue found
  running: the model takes the larger number);
- before any generation time is observed, a running task is first polled a spacing
  (``step`` of the prior's range, divided by ``prior_slack``) after
  ``prior[0] / prior_slack``, then every ``proportional × elapsed`` seconds, never
  closer than that spacing;
- a RUNNING task is polled where its completion is likely, using the generation
  times this client has already observed (server ``end_time - scheduled_time``, free
  of clock skew; a uniform sample of at most 200 of all it has seen, so the range
  follows a change of the service's speed only slowly). While tasks longer than
  those seen are still running (thousands started at once end in order of
  duration), the range is extended by a product-limit (Kaplan-Meier) estimate
  over the tasks still running, read as a uniform spread: a heavily skewed
  distribution makes it too long (sparser polls, more lag) or too short (more
  queries). Polls come evenly across the range (``step`` of it apart, the first a
  step past its start, where almost nothing has ended yet), closing in on its end in
  the tail of a batch, when nothing is queued behind and a late detection delays the
  whole batch (at most ``TAIL_TASKS`` tasks: with thousands running at once, closing
  in on every end would multiply the queries);
- a saturated client (thousands in flight: polls answered late, creates waiting
  behind them) spaces the polls of running tasks at least ``LATE_FACTOR`` times as
  far apart as polls are answered late, instead of filling every request it can
  send with polls that would detect late anyway: the queries per task fall and the
  detection lag stays at about ``(1 + LATE_FACTOR)`` times the lateness (the
  lateness is a moving average, its peaks held for a mean generation time);
- every poll takes a token of the governor's query budget, ordered by due time, so
  an overdue poll goes first and the budget is never exceeded;
- two waits on one task share its polls: the first waiter drives them, the others
  listen; if the driver is cancelled, another waiter takes over.

No background task is needed: the waiting coroutines do the polling, so a client
used without ``async with`` works, and a function that returns has finished all it
started.
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
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
        max_interval: never leave a running task (or one due to start) unqueried
            longer than this (seconds). A task deep in the queue is checked once
            within it, then around its predicted start.
        prior: the generation time range assumed before any is observed (seconds);
            the vendor says 1–5 minutes.
        step: the share of a RUNNING task's remaining completion window between two
            polls (smaller: lower detection lag, more queries).
        proportional: before any generation time is observed, poll a RUNNING task
            every ``proportional × elapsed`` seconds.
        prior_slack: before any generation time is observed, how far the prior may be
            off: polls of a running task are never closer than the spacing
            ``step × (prior[1] - prior[0]) / prior_slack`` (3.75 s by default; 1 s
            for a 2-6 s prior trusted as is); the first comes that spacing after
            ``prior[0] / prior_slack`` (7.5 s after its start by default), then
            proportional polling.
        error_backoff: first pause after a transient poll error (doubles, capped at
            ``max_interval``). Transient errors never end a wait: the task goes on,
            and is billed, on the server.
        time_scale: divide all times by this (for an emulator running faster).
        unknown_grace: a task this client created (or adopted, or found in its journal)
            that answers ``UNKNOWN`` while younger than this (seconds since its create
            was sent) is not final: a service may answer queries of a new task only
            after a lag. It is polled again (at growing intervals, the last poll at
            the end of the grace) and only then ends as UNKNOWN (``TaskNotFoundError``).
            Older tasks, and tasks of unknown age, end at the first UNKNOWN as before.
            0 turns the grace off. The default, 30 s, covers lags of several seconds
            with room to spare, and costs a few extra queries only for a task that
            really is unknown right after its create (a rare, broken case anyway).
    """

    min_interval: float = 0.5
    max_interval: float = 30.0
    prior: tuple[float, float] = (60.0, 300.0)
    step: float = 0.25
    proportional: float = 0.25
    prior_slack: float = 16.0
    error_backoff: float = 1.0
    time_scale: float = 1.0
    unknown_grace: float = 30.0

    def __attrs_post_init__(self) -> None:
        if not 0 < self.min_interval <= self.max_interval:
            raise ValueError(
                "PollPolicy: need 0 < min_interval <= max_interval, got "
                f"{self.min_interval!r}, {self.max_interval!r}."
            )
        if not 0 < self.step <= 1 or not 0 < self.proportional <= 1:
            raise ValueError("PollPolicy: step and proportional must be in (0, 1].")
        if not self.prior_slack >= 1:
            raise ValueError(f"PollPolicy: prior_slack must be >= 1, got {self.prior_slack!r}.")
        if not 0 < self.prior[0] <= self.prior[1]:
            raise ValueError(f"PollPolicy: prior must be (low, high) seconds, got {self.prior}.")
        if self.time_scale <= 0:
            raise ValueError(f"PollPolicy: time_scale must be > 0, got {self.time_scale}.")
        if not self.unknown_grace >= 0:
            raise ValueError(
                f"PollPolicy: unknown_grace must be >= 0 seconds, got {self.unknown_grace!r}."
            )

    def scaled(self, factor: float) -> PollPolicy:
        """This policy for a world ``factor`` times faster (an emulator)."""
        return attrs.evolve(self, time_scale=self.time_scale * factor)


@attrs.frozen(kw_only=True)
class SchedulerStatistics:
    """A snapshot of the client's poll scheduler (``statistics().scheduler``).

    Attributes:
        watched: tasks it follows now.
        pending: of those, last seen PENDING.
        running: of those, last seen RUNNING.
        polls: queries answered so far.
        shared_waits: waits that joined another wait on the same task (no query of
            their own).
        transient_errors: polls that failed and were tried again (the wait went on).
        observed_durations: generation times it holds (``end_time`` less
            ``scheduled_time``; a uniform sample of at most 200 of all it has seen),
            which place the polls of running tasks.
        duration_range: where generation times likely fall, local seconds, from
            those observed; ``None`` before the first.
        inferred_starts: queued tasks scheduled as running from a finished task's
            end, without a query.
    """

    watched: int
    pending: int
    running: int
    polls: int
    shared_waits: int
    transient_errors: int
    observed_durations: int
    duration_range: tuple[float, float] | None
    inferred_starts: int = 0


TAIL_TASKS: Final = 10
"""At most this many open tasks count as the tail of a batch (polled more densely)."""
SWEEP_EVERY: Final = 1000
"""Registrations between two sweeps of never-waited watches."""
SAMPLE_MAX: Final = 200
"""Generation times kept: a uniform sample of all seen beyond this many."""
CENSOR_MIN: Final = 5
"""Observed generation times needed before the still running tasks widen the range."""
LATE_FACTOR: Final = 1.5
"""A RUNNING task's polls are at least this many times the client's lateness apart."""
LATE_WEIGHT: Final = 0.01
"""The weight of each poll's lateness in the client's moving average (~100 polls)."""
TASK_TTL_S: Final = 24 * 3600.0
"""A task id lives 24 h; a watch nobody waits on is forgotten after that."""

QueryFn = Callable[["Watch", float], Awaitable[TaskResult]]
"""``(watch, priority) -> result``: one query of a task, at a priority (its due time)."""

_EVENT_NAMES: Final = {
    TaskStatus.PENDING: "queued",
    TaskStatus.RUNNING: "running",
    TaskStatus.SUCCEEDED: "succeeded",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELED: "canceled",
    TaskStatus.UNKNOWN: "unknown",
}


class Watch:
    """The scheduler's record of one task being waited on."""

    # Thousands may be in flight: slots, and events only when someone waits on them.
    __slots__ = (
        "_changed",
        "anchored",
        "base_url",
        "driving",
        "error",
        "final",
        "lagging",
        "last",
        "last_pending_poll",
        "last_poll",
        "late",
        "open",
        "polls",
        "registered",
        "seq",
        "start_inferred",
        "started_local",
        "status",
        "submitted_local",
        "submitted_wall",
        "task_id",
        "waiters",
        "wake",
    )

    def __init__(self, task_id: str, base_url: str | None, seq: int, now: float) -> None:
        self.task_id = task_id
        self.base_url = base_url
        self.seq = seq
        self.registered = now
        self.status: TaskStatus = TaskStatus.PENDING
        self.last: TaskResult | None = None
        self.started_local: float | None = None
        self.last_poll: float | None = None
        # Seconds its last answer came after the poll was due (the client was busy).
        self.late = 0.0
        self.last_pending_poll: float | None = None
        self.polls = 0
        self.waiters = 0
        self.driving = False
        self.final: TaskResult | None = None
        self.error: BaseException | None = None
        self._changed: anyio.Event | None = None
        self.submitted_local: float = now
        # Wall-clock time its create was sent (the age that ``unknown_grace`` judges);
        # ``None``: unknown (a task id from elsewhere): its first UNKNOWN is final.
        self.submitted_wall: float | None = None
        # Its last answer was an UNKNOWN within ``unknown_grace``: polled again.
        self.lagging = False
        # Registered at its create (so ``submitted_local`` anchors the server's clock).
        self.anchored = False
        # ``started_local`` comes from a finished task's end, not from this task's answer.
        self.start_inferred = False
        # Counted in this client's FIFO queue (not final, no error).
        self.open = True
        # Set to wake a queued task's driver when its start becomes known.
        self.wake: anyio.Event | None = None

    @property
    def changed(self) -> anyio.Event:
        """Set at the next change (made on demand: most tasks have a single waiter)."""
        if self._changed is None:
            self._changed = anyio.Event()
        return self._changed

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class PollScheduler:
    """Schedules the queries of every task a client waits on.

    Args:
        query: performs one query (the client routes it to the task's own region).
        policy: the `PollPolicy`.
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
        self.policy: PollPolicy = policy or PollPolicy()
        self.running_slots = running_slots
        # The slots the service really runs for this client: more than configured when
        # a task deep in the presumed queue is found running (quotas off, a raised
        # quota); the queue model then follows the evidence.
        self._slots = running_slots
        self._on_status = on_status
        self._watches: dict[str, Watch] = {}
        self._seq = 0
        # Sequence numbers of the open watches, sorted: a queue position is one bisect.
        self._open: list[int] = []
        # Watches that may still be queued, lowest sequence first (stale entries skipped).
        self._queued: list[tuple[int, Watch]] = []
        self._inferred = 0
        # Queued watches whose start was inferred and not yet confirmed by an answer.
        self._unconfirmed: list[Watch] = []
        # server time ≈ offset + time_scale × local monotonic time (None: not yet known).
        self._offset: float | None = None
        self._durations: list[float] = []
        self._range_cache: tuple[float, float] | None = None
        self._learned = 0
        self._estimate_at = 0  # the range is estimated again at this many observations
        self._rng = random.Random(0)  # the reservoir's draws (deterministic)
        self._polls = 0
        self._shared = 0
        self._errors = 0
        # How late polls are answered (see ``_lateness``): the moving average, its
        # held level, and when that was set.
        self._late = 0.0
        self._late_level = 0.0
        self._late_at = 0.0

    # --- public -------------------------------------------------------------------------

    def register_submission(
        self, task_id: str, base_url: str | None, *, submitted_at: float | None = None
    ) -> None:
        """Note a task at the moment it is created (its place in the FIFO queue).

        ``submitted_at``: the wall-clock time its create was sent, when that was earlier
        (a journal's record); default now. It dates the task for ``unknown_grace``.
        """
        w = self._watch(task_id, base_url)
        if w.last is None:
            w.anchored = True
        if w.submitted_wall is None:
            w.submitted_wall = submitted_at if submitted_at is not None else time.time()
        if w.seq % SWEEP_EVERY == 0:
            self._sweep(anyio.current_time())

    def _sweep(self, now: float) -> None:
        """Forget tasks created but never waited on once their ids have expired (24 h)."""
        horizon = TASK_TTL_S / self.policy.time_scale
        for tid, w in list(self._watches.items()):
            if w.waiters == 0 and now - w.registered > horizon:
                self._close(w)
                del self._watches[tid]

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
            if w.waiters == 0:
                # Final, or abandoned (every waiter cancelled): forget it. An abandoned
                # task may still run on the service, but nobody polls it any more, so
                # its place in the FIFO model would only go stale.
                self._close(w)
                if self._watches.get(task_id) is w:
                    del self._watches[task_id]

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
            inferred_starts=self._inferred,
        )

    # --- internals ----------------------------------------------------------------------

    def _watch(self, task_id: str, base_url: str | None) -> Watch:
        w = self._watches.get(task_id)
        if w is None:
            self._seq += 1
            w = Watch(task_id, base_url, self._seq, anyio.current_time())
            self._watches[task_id] = w
            self._open.append(w.seq)  # sequence numbers only grow: stays sorted
            heapq.heappush(self._queued, (w.seq, w))
        elif base_url and not w.base_url:
            w.base_url = base_url
        return w

    async def _drive(self, w: Watch) -> None:
        backoff = self.policy.error_backoff / self.policy.time_scale
        while w.final is None and w.error is None:
            now = anyio.current_time()
            due = now + self._next_delay(w, now)
            if w.status is TaskStatus.PENDING and (
                w.start_inferred
                or (w.started_local is None and self._queue_position(w) >= self._slots)
            ):
                # Queued: sleep until the planned poll, or until a task ahead ends and
                # this one's start becomes known or moves (then plan again).
                w.wake = wake = anyio.Event()
                with anyio.move_on_after(due - now):
                    await wake.wait()
                w.wake = None
                if wake.is_set():
                    continue
            else:
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
                self._close(w)
                logger.warning("waiting for %s: giving up: %s", w.task_id, exc)
                return
            backoff = self.policy.error_backoff / self.policy.time_scale
            self._polls += 1
            w.polls += 1
            now = anyio.current_time()
            w.late = max(0.0, now - due)
            self._note_late(w.late, now)
            self._apply(w, result, now)

    def _note_late(self, late: float, now: float) -> None:
        """Fold one answer's lateness into the client's (see ``_lateness``)."""
        self._late += LATE_WEIGHT * (late - self._late)
        self._late_level = max(self._late, self._lateness(now))
        self._late_at = now

    def _lateness(self, now: float) -> float:
        """How late the client answers polls (local seconds): a moving average over the
        last ~100 polls, its peaks held and decaying over a mean generation time. A
        saturated client polls in waves (the tasks created together while few polls
        were due are due together), so a task planned between two waves is planned
        with the last wave's lateness."""
        return self._late_level * math.exp(-(now - self._late_at) / self._mean_duration())

    def _unknown_grace_left(self, w: Watch) -> float:
        """Local seconds left of ``unknown_grace`` for ``w`` (<= 0: none, or unknown age)."""
        if w.submitted_wall is None or self.policy.unknown_grace <= 0:
            return 0.0
        age = time.time() - w.submitted_wall
        return self.policy.unknown_grace / self.policy.time_scale - age

    def _apply(self, w: Watch, result: TaskResult, now: float) -> None:
        if result.status is TaskStatus.UNKNOWN and self._unknown_grace_left(w) > 0:
            # Young enough to be lagging: not final yet (the next poll is planned in
            # ``_next_delay``); the lifecycle sees nothing.
            w.lagging = True
            w.last_poll = now
            w.notify()
            return
        w.lagging = False
        previous = w.status if w.last is not None else None
        w.last = result
        w.last_poll = now
        status = result.status
        if status is TaskStatus.UNRECOGNIZED:
            status = w.status
        if w.anchored and previous is None and result.submit_time is not None:
            # The create left at most ``now - submitted_local`` before this answer's
            # submit_time was stamped: the smallest such gap is the best anchor.
            offset = result.submit_time.timestamp() - self.policy.time_scale * w.submitted_local
            if self._offset is None or offset > self._offset:
                self._offset = offset
        if status is TaskStatus.PENDING:
            w.last_pending_poll = now
            if w.start_inferred:
                # The prediction was wrong (a shared account?): queued again.
                w.started_local, w.start_inferred = None, False
                heapq.heappush(self._queued, (w.seq, w))
        if (
            status in (TaskStatus.RUNNING, *_terminal())
            and w.started_local is None
            and result.scheduled_time is not None
            and w.open
        ):
            self._check_slots(w)
        if status in (TaskStatus.RUNNING, *_terminal()) and (
            w.started_local is None or (w.start_inferred and result.scheduled_time is not None)
        ):
            w.started_local = self._estimate_start(w, result, now)
            w.start_inferred = False
        w.status = status
        if result.status.is_final and w.final is None:
            w.final = result
            self._close(w)
            if status is TaskStatus.SUCCEEDED:
                self._learn(result)
            if status is not TaskStatus.UNKNOWN:
                self._advance_queue(self._server_to_local(result.end_time, now))
        if (previous is not status or previous is None) and self._on_status is not None:
            try:
                self._on_status(result, previous)
            except Exception:  # a listener must not break the wait
                logger.exception("lifecycle listener failed for %s", w.task_id)
        w.notify()

    def _check_slots(self, w: Watch) -> None:
        """``w`` was presumed queued and has started: if it was so deep in the queue
        that late detections ahead of it cannot explain that (twice the slots), the
        service runs more at once than assumed. Believe it, and plan again."""
        k = self._queue_position(w)
        if k < 2 * self._slots:
            return
        self._slots = k + 1
        logger.info("the service runs at least %d tasks at once; planning with that", k + 1)
        for _, u in self._queued:
            if u.wake is not None:
                u.wake.set()

    def _close(self, w: Watch) -> None:
        """Take a final (or failed) watch out of the FIFO queue."""
        if w.open:
            w.open = False
            i = bisect.bisect_left(self._open, w.seq)
            if i < len(self._open) and self._open[i] == w.seq:
                del self._open[i]

    def _server_to_local(self, t: datetime | None, now: float) -> float:
        """A server timestamp on the local monotonic clock (never later than ``now``)."""
        if t is None or self._offset is None:
            return now
        return min(now, (t.timestamp() - self._offset) / self.policy.time_scale)

    def _advance_queue(self, freed_at: float) -> None:
        """A task of this client ended at ``freed_at``: the queued tasks that now hold a
        slot (FIFO) started then. Schedule them as running and wake their drivers."""
        slots = self._slots
        queued = self._queued
        started: list[Watch] = []
        while queued:
            w = queued[0][1]
            if not w.open or w.started_local is not None or w.status is not TaskStatus.PENDING:
                heapq.heappop(queued)
                continue
            if bisect.bisect_left(self._open, w.seq) >= slots:
                break
            heapq.heappop(queued)
            w.start_inferred = True
            self._inferred += 1
            started.append(w)
        if not started:
            return
        # Ends are seen out of order (each after its own detection lag): the earliest
        # freed slots went to the earliest queued tasks, so deal the start times out
        # again in queue order among the starts not yet confirmed.
        pending = [
            u
            for u in self._unconfirmed
            if u.open and u.start_inferred and u.started_local is not None
        ]
        times = sorted([u.started_local for u in pending if u.started_local is not None])
        times += [freed_at] * len(started)
        times.sort()
        group = sorted(pending + started, key=lambda u: u.seq)
        for u, t in zip(group, times, strict=True):
            if u.started_local != t:
                u.started_local = t
                if u.wake is not None:
                    u.wake.set()
        self._unconfirmed = group

    def _estimate_start(self, w: Watch, r: TaskResult, now: float) -> float:
        """Local monotonic time the task started, skew-free where the server says."""
        if r.scheduled_time is not None and self._offset is not None:
            return self._server_to_local(r.scheduled_time, now)
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
        if d <= 0:
            return
        d /= self.policy.time_scale
        self._learned += 1
        n = self._learned
        ds = self._durations
        # A uniform sample of every generation time seen (reservoir sampling), not the
        # latest ones: tasks started together end in order of duration, so a window of
        # the latest would hold only the longest so far and shrink the range to a sliver.
        if len(ds) < SAMPLE_MAX:
            ds.append(d)
        else:
            j = self._rng.randrange(n)
            if j < SAMPLE_MAX:
                ds[j] = d
        if n >= self._estimate_at:
            # Again after each eighth more (a scan of the watches: ~50 times for 2,000).
            self._estimate_at = n + max(1, n // 8)
            self._range_cache = self._estimate_range()

    def _censored_end(self, lo: float) -> float | None:
        """Where the range ends, judged with the tasks still running (Kaplan-Meier).

        The generation times seen are those short enough to have ended already: with
        thousands started at once, after 2.5 s only the tasks of 2-2.5 s have ended, and
        a range of those alone would bring every poll of the others ``min_interval``
        apart until the batch ends. A task last seen running after ``c`` seconds says
        its time is longer than ``c``; with those, the product-limit estimate gives the
        share ``F`` of all generation times up to the last ``t`` it can judge (at least
        ``CENSOR_MIN`` tasks still at risk), and spread evenly from ``lo`` (as for a
        uniform) the range ends at ``lo + (t - lo) / F``. ``None``: nothing to add.
        """
        running = TaskStatus.RUNNING
        seen = [
            w.last_poll - w.started_local
            for w in self._watches.values()
            if w.status is running
            and w.open
            and w.started_local is not None
            and w.last_poll is not None
        ]
        if not seen:
            return None
        ds = self._durations
        weight = self._learned / len(ds)  # each sampled time stands for this many
        events = sorted([(d, 0) for d in ds] + [(c, 1) for c in seen])  # ended first on ties
        at_risk = float(self._learned + len(seen))
        survival = 1.0
        last: tuple[float, float] | None = None
        for t, censored in events:
            if at_risk < CENSOR_MIN:
                break
            if censored:
                at_risk -= 1
            else:
                survival *= 1 - weight / at_risk
                at_risk -= weight
                last = (t, 1 - survival)
        if last is None or last[0] <= lo or last[1] <= 0:
            return None
        return lo + (last[0] - lo) / last[1]

    def _range(self) -> tuple[float, float] | None:
        """Where generation times likely fall (local seconds), from those observed."""
        return self._range_cache

    def _estimate_range(self) -> tuple[float, float] | None:
        ds = self._durations
        n = len(ds)
        if not n:
            return None
        lo, hi = min(ds), max(ds)
        if n == 1:
            return lo * 0.5, hi * 2.0
        # n draws of a range [a, b] leave about (b - a) / (n + 1) beyond each extreme:
        # widen by the spread over n - 1 (unbiased for a uniform), and never less than
        # 5 % of the longest, as the distribution need not be uniform.
        margin = max((hi - lo) / (n - 1), 0.05 * hi)
        top = hi + margin
        if self._learned >= CENSOR_MIN:
            end = self._censored_end(lo)
            if end is not None:
                top = max(top, end)
        return max(0.0, lo - margin), top

    def _mean_duration(self) -> float:
        rng = self._range()
        if rng is None:
            p = self.policy
            return (p.prior[0] + p.prior[1]) / 2 / p.time_scale
        return (rng[0] + rng[1]) / 2

    def _queue_position(self, w: Watch) -> int:
        """How many of this client's unfinished tasks were created before ``w``."""
        return bisect.bisect_left(self._open, w.seq)

    def _next_delay(self, w: Watch, now: float) -> float:
        p = self.policy
        lo_i, hi_i = p.min_interval / p.time_scale, p.max_interval / p.time_scale
        since = now - w.last_poll if w.last_poll is not None else math.inf

        def clamp(delay: float) -> float:
            # Never sooner than min_interval after the last poll, never later than max.
            earliest = max(0.0, lo_i - since)
            return min(max(delay, earliest), hi_i)

        if w.lagging:
            # Answered UNKNOWN while young: again at growing intervals (the task's age,
            # at least min_interval), the last one when the grace is over.
            left = max(self._unknown_grace_left(w), 0.0)
            age = now - w.submitted_local
            return max(lo_i - since, min(max(age, lo_i), left), 0.0)

        slots = self._slots
        # Nothing queued behind the running tasks: a late detection now delays the end
        # of the whole batch, not only this task's result, so poll more densely. Only
        # for a few tasks: with thousands running at once (quotas raised or off), the
        # batch's end is one task's, and closing in on every task's end would multiply
        # the queries of all of them.
        tail = len(self._open) <= min(slots, TAIL_TASKS)
        # A busy client answers late: space the polls at least as far apart (below).
        late = max(w.late, self._lateness(now))
        if w.status is TaskStatus.RUNNING or w.started_local is not None:
            start = w.started_local if w.started_local is not None else now
            return clamp(self._running_delay(now - start, tail, late))
        # PENDING: predict the start from the FIFO place among this client's tasks.
        k = self._queue_position(w)
        if k < slots:
            # It should be running already (or start at once): treat it as running
            # since it was registered.
            return clamp(self._running_delay(now - w.registered, tail, late))
        # Queued: the end of a task ahead will tell when this one starts (see
        # ``_advance_queue``), without a query. Until then: a first check within
        # ``max_interval`` (is the queue model right? see ``_check_slots``), then
        # checks around its predicted start, which a deep place in the queue puts far
        # off (each check that finds it still queued plans the next from its new
        # place, so they thin out geometrically).
        wait = (k - slots + 1) / slots * self._mean_duration()
        rng = self._range()
        first_done = rng[0] if rng else p.prior[0] / p.time_scale
        delay = 0.8 * wait + min(first_done, wait)
        if w.last is None:
            delay = min(delay, hi_i)
        return max(delay, lo_i - since, 0.0)

    def _running_delay(self, elapsed: float, tail: bool = False, late: float = 0.0) -> float:
        """Seconds until the next poll of a task running for ``elapsed`` seconds.

        Within the likely range, polls are evenly spaced (``step`` × the range: the
        detection lag is at most that), the first one a spacing past the range's start
        (a poll at its start would find almost nothing ended); in the ``tail`` of a
        batch they close in on the range's end (``step`` × what remains of it).

        ``late``: how late the client answers polls now. When it is saturated
        (thousands in flight, every request it can send taken), the polls are spaced
        at least ``LATE_FACTOR × late`` apart: a poll answered late detects late
        anyway, and each one spared is a request for a create waiting behind the polls
        (they go first), so the queries per task fall instead of filling the client.
        The detection lag is then at most about ``(1 + LATE_FACTOR) × late``.
        """
        p = self.policy
        rng = self._range()
        if rng is None:
            # Nothing observed yet: trust the prior only within ``prior_slack``, then
            # bound the detection lag to a share of the time already spent.
            # Never closer than ``step`` of the prior's range (shrunk by the same slack):
            # with a trusted prior the polls spread over it as over an observed range.
            first = p.prior[0] / p.time_scale / p.prior_slack
            spread = p.step * (p.prior[1] - p.prior[0]) / p.time_scale / p.prior_slack
            return max(first + spread - elapsed, p.proportional * elapsed, spread)
        lo, hi = rng
        spacing = p.step * (hi - lo)
        if not tail:
            spacing = max(spacing, LATE_FACTOR * late)
        if lo + spacing - elapsed > p.min_interval / p.time_scale:
            return lo + spacing - elapsed
        # (A poll just short of ``lo + spacing`` counts as the one there.)
        if elapsed >= hi:
            # Longer than any seen: fall back to proportional polling.
            return p.proportional * elapsed
        if tail:
            return p.step * (hi - elapsed) + 1e-3
        return spacing


def _terminal() -> tuple[TaskStatus, ...]:
    return (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED)


def event_name(status: TaskStatus) -> str:
    """The lifecycle event name for a status (``queued``, ``running``, ``succeeded`` …)."""
    return _EVENT_NAMES.get(status, "updated")
