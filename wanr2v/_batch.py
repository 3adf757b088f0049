"""Many tasks at once: ``run_many``, ``as_completed`` and journaled, resumable batches.

Every item goes through the same steps: record (journal) → upload local files →
create (safe create: reconcile a lost answer, never a blind duplicate) → wait
(through the client's one poll scheduler) → download (optional). Backpressure: an
item takes one of the governor's task slots before its create and keeps it until
its task is final, so no more than ``Limits.max_in_flight`` tasks are ever in
flight. One item's failure is its own outcome; the others go on (unless
``fail_fast``).

When the caller's scope is cancelled, ``on_cancel`` says what becomes of the remote
tasks: ``"detach"`` leaves them running (a journal still knows them: ``resume``
picks them up), ``"cancel_pending"`` cancels those still PENDING (not billed) and
detaches the rest.

With a journal, before anything is added or sent:

* the runner takes the journal's lease when the store has one
  (`LeasedJournal`): a second runner on a live journal gets
  `JournalBusyError` naming the holder; the lease is renewed
  every few seconds and a runner that loses it (or whose file vanishes) stops the
  batch with that error;
* the journal's accounts are checked: tasks made at a base URL with another key (by
  fingerprint), or unfinished tasks at a base URL this client has no key for, raise
  `JournalAccountError`;
* (``run`` / ``as_completed``) a changed request under a journaled key raises
  `JournalConflictError`, and the same request under two keys
  `DuplicateRequestError` unless ``allow_duplicates``.

Each create is claimed compare-and-set right before it goes out (``NEW`` →
``SENDING`` only if still ``NEW``), so even two runners that got past the lease send
each submission once. A definite refusal of a create (an error answer, not a lost
one) is recorded as it is: ``FAILED`` for a request the service will never accept
(400 other than ``Arrearage``, 404), back to ``NEW`` for one refused for the account's
sake (401, 403, 429, 503, ``Arrearage``: nothing was made, a later ``resume`` tries
again) — never ``AMBIGUOUS``, which only a lost answer is.

This module holds the runner; what it returns and refuses (`BatchItem`,
`BatchSummary`, `BudgetExceededError`, ...) is in ``_batch_records``, and its hold on
the journal (lease, heartbeats, accounts) in ``_batch_lease``.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from ._batch_lease import JournalOwnership
from ._batch_records import (
    DEFAULT_KEY_NAME,
    DEFAULT_TASK_NAME,
    BatchItem,
    BudgetExceededError,
    CancelPolicy,
    Requests,
    check_name_template,
    record_cost,
    request_pairs,
    usage_of,
)
from ._exceptions import (
    APIError,
    ArrearageError,
    BadRequestError,
    NotFoundError,
    SubmitOutcomeUnknownError,
    TaskError,
    UnsupportedOperationError,
    WanError,
    collapsing_groups,
)
from ._helpers import raise_for_status
from ._models import Task, TaskResult, TaskStatus, VideoRequest
from ._wire import fingerprint
from .journal import (
    JournalBusyError,
    JournalError,
    JournalStore,
    JournalVanishedError,
    SubmissionRecord,
    SubmissionState,
)
from .journal._base import check_requests, result_to_dict

if TYPE_CHECKING:
    from ._http import ApiSession
    from ._protocols import BatchTasks, Emitter, Routing, SafeCreate, Watcher

__all__ = ["BatchRunner"]

logger = logging.getLogger("wanr2v")

NAME_META = "name"
"""Journal meta key: the file-name template of the batch's videos (resume uses it too)."""


class BatchRunner:
    """Runs items through the client, optionally journaled and downloading.

    Made by the client's ``run_many``, ``as_completed`` and ``resume``; it uses only
    the narrow parts it is given (``wanr2v._protocols``), never the client itself.

    Args:
        tasks: waits for, downloads and cancels a task (the client's public verbs).
        routing: the sessions per region (an item's governor is its region's).
        create: the safe create (prepare, send once, reconcile a lost answer).
        scheduler: the poll scheduler shared by all items.
        events: lifecycle events (a task's batch key goes there).
        journal: a `JournalStore`; every submission is recorded
            before its create is sent, so a crashed batch resumes without paying twice.
        download_to: a folder to save each video into as soon as it succeeds.
        fail_fast: cancel the rest at the first error.
        on_cancel: what becomes of remote tasks when the caller's scope is cancelled.
        spread: spread items over every configured region that can serve them, least
            loaded first (each region has its own quotas); otherwise each item goes to
            the client's default region, or the first one that can serve it.
        retry_failed: run again the journal's items that failed without creating a
            task (a missing reference file, a refused upload, a budget stop): they start
            over as new. Items whose task failed on the service are not re-created.
        name: the videos' file name template (``{key}``, ``{task_id}``, ``{model}``);
            default ``{key}.mp4`` for a mapping of requests, ``{task_id}.mp4`` otherwise.
        budget_usd: create no task whose estimated cost would take the batch over this
            many USD, counting what the journal's tasks already billed or may bill
            (resumes too); such items end with `BudgetExceededError`.
        allow_duplicates: let one request be journaled under several keys (several
            paid takes of it); refused by default.
    """

    def __init__(
        self,
        tasks: BatchTasks,
        *,
        routing: Routing,
        create: SafeCreate,
        scheduler: Watcher,
        events: Emitter,
        journal: JournalStore | None = None,
        download_to: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
        on_cancel: CancelPolicy = "detach",
        spread: bool = False,
        retry_failed: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
        allow_duplicates: bool = False,
    ) -> None:
        if on_cancel not in ("detach", "cancel_pending"):
            raise ValueError(f"on_cancel must be 'detach' or 'cancel_pending', got {on_cancel!r}.")
        if budget_usd is not None and not (budget_usd >= 0 and math.isfinite(budget_usd)):
            raise ValueError(f"budget_usd must be a finite number >= 0, got {budget_usd!r}.")
        self.retry_failed = retry_failed
        self.name = check_name_template(name) if name is not None else None
        self.budget_usd = budget_usd
        self._committed = 0.0
        self._budget_lock = anyio.Lock()
        self.tasks = tasks
        self.routing = routing
        self.create = create
        self.scheduler = scheduler
        self.events = events
        self.journal = journal
        self.download_to: Path | None = Path(download_to) if download_to is not None else None
        self.fail_fast = fail_fast
        self.on_cancel = on_cancel
        self.spread = spread
        self.allow_duplicates = allow_duplicates
        self._workers: anyio.CancelScope | None = None
        self._outer: anyio.CancelScope | None = None
        self._unresolved_at_start = len(create.unresolved)
        self._live: dict[str, Task] = {}
        self._ownership = JournalOwnership(journal, routing)
        self._fatal: JournalError | None = None
        self._settled: set[str] = set()

    # --- entry points ---------------------------------------------------------------

    async def run(self, requests: Requests) -> list[BatchItem]:
        """Run every request; return the outcomes in input order."""
        self._default_name(requests)
        pairs = request_pairs(requests)
        order = {key: i for i, (key, _) in enumerate(pairs)}
        out: list[BatchItem] = []
        async with self._as_completed(pairs) as results:
            async for item in results:
                out.append(item)
        out.sort(key=lambda it: order.get(it.key, math.inf))
        return out

    def as_completed(
        self, requests: Requests
    ) -> AbstractAsyncContextManager[AsyncIterator[BatchItem]]:
        """``async with runner.as_completed(reqs) as results: async for item in results``."""
        self._default_name(requests)
        return self._as_completed(request_pairs(requests))

    def _default_name(self, requests: Requests) -> None:
        if self.name is None:
            self.name = DEFAULT_KEY_NAME if isinstance(requests, Mapping) else DEFAULT_TASK_NAME

    def _file_name(self, key: Any, task: Task, request: VideoRequest) -> str:
        from ._hosts import safe_join

        name = (self.name or DEFAULT_TASK_NAME).format(
            key=key, task_id=task.task_id, model=request.model
        )
        assert self.download_to is not None
        return safe_join(self.download_to, name).name

    @asynccontextmanager
    async def _as_completed(
        self, pairs: list[tuple[Any, VideoRequest]]
    ) -> AsyncIterator[AsyncIterator[BatchItem]]:
        jobs: list[tuple[Any, VideoRequest | None, SubmissionRecord | None]]
        async with self._ownership.owning():
            if self.journal is not None:
                # The money rule, before anything is added or sent.
                await check_requests(
                    self.journal,
                    {str(key): req for key, req in pairs},
                    allow_duplicates=self.allow_duplicates,
                )
                if self.download_to is not None and self.name is not None:
                    # What resume names the videos (a run's name wins over an older one).
                    await self.journal.set_meta(NAME_META, self.name)
                jobs = []
                for key, req in pairs:
                    rec = await self.journal.add(SubmissionRecord.new(str(key), req))
                    rec = await self._maybe_retry(rec)
                    jobs.append((key, req, rec))
                    await self._ownership.beat_if_due()  # a long batch file takes a while to record
            else:
                jobs = [(key, req, None) for key, req in pairs]
            await self._count_committed()
            async with self._running(jobs) as stream:
                yield stream

    async def resume(self) -> list[BatchItem]:
        """Finish every unfinished submission of the journal (after a crash, kill -9
        included): poll known tasks, reconcile ambiguous creates, download results."""
        if self.journal is None:
            raise ValueError("resume needs a journal.")
        out: list[BatchItem] = []
        async with self._ownership.owning():
            if self.name is None:  # the videos keep the names the run gave them
                known = await self.journal.get_meta(NAME_META)
                self.name = known if isinstance(known, str) else DEFAULT_TASK_NAME
            records = [await self._maybe_retry(r) for r in await self.journal.list()]
            await self._count_committed()
            jobs: list[tuple[Any, VideoRequest | None, SubmissionRecord | None]] = [
                (r.batch_key, None, r) for r in records
            ]
            async with self._running(jobs) as results:
                async for item in results:
                    out.append(item)
        order = {r.batch_key: i for i, r in enumerate(records)}
        out.sort(key=lambda it: order.get(it.key, math.inf))
        if self.download_to is not None:
            # Partial downloads of this journal's tasks left by a killed run: this run
            # has finished its own downloads, so any left now are leftovers.
            names = set()
            for r in records:
                if r.task_id:
                    names.add(f"{r.task_id}.mp4")
                    with suppress(KeyError, IndexError, ValueError):
                        names.add(
                            (self.name or DEFAULT_TASK_NAME).format(
                                key=r.batch_key, task_id=r.task_id, model=r.model or ""
                            )
                        )
            await anyio.to_thread.run_sync(_remove_parts, self.download_to, names)
        return out

    # --- retries and budget ---------------------------------------------------------

    async def _maybe_retry(self, rec: SubmissionRecord) -> SubmissionRecord:
        """With ``retry_failed``, a record that FAILED without a task starts over as NEW."""
        if not (self.retry_failed and self.journal is not None):
            return rec
        if rec.state is not SubmissionState.FAILED or rec.task_id is not None:
            return rec
        logger.info("batch item %r: failed earlier without a task; trying again", rec.batch_key)
        return await self.journal.update(
            rec.submission_id,
            expect_state=SubmissionState.FAILED,
            state=SubmissionState.NEW,
            body=None,
            fingerprint=None,
            status=None,
            error_type=None,
            error_code=None,
            error_message=None,
        )

    async def _count_committed(self) -> None:
        """What the journal's tasks billed (usage) or may still bill (estimates)."""
        if self.budget_usd is None or self.journal is None:
            return
        total = 0.0
        for rec in await self.journal.list():
            total += record_cost(rec)
        self._committed = total

    async def _reserve(self, key: Any, req: VideoRequest) -> float:
        """Take the item's estimated cost from the budget, or raise BudgetExceededError."""
        if self.budget_usd is None:
            return 0.0
        estimate = req.estimated_cost_usd()
        async with self._budget_lock:
            if self._committed + estimate > self.budget_usd + 1e-9:
                raise BudgetExceededError(
                    f"Item {key!r} was not created: its estimated {estimate:.2f} USD would take "
                    f"the batch to {self._committed + estimate:.2f} USD, over the budget of "
                    f"{self.budget_usd:.2f} USD ({self._committed:.2f} USD billed or "
                    "committed). Raise the budget and retry the failed items.",
                    budget_usd=self.budget_usd,
                    committed_usd=round(self._committed, 4),
                    estimated_usd=estimate,
                )
            self._committed += estimate
        return estimate

    def _settle(self, reserved: float, billed: float) -> None:
        """Replace an item's reservation by what its task billed (0 for a failed task)."""
        if self.budget_usd is not None:
            self._committed += billed - reserved

    # --- machinery ------------------------------------------------------------------

    @asynccontextmanager
    async def _running(
        self, jobs: list[tuple[Any, VideoRequest | None, SubmissionRecord | None]]
    ) -> AsyncIterator[AsyncIterator[BatchItem]]:
        send, receive = anyio.create_memory_object_stream[BatchItem](math.inf)

        async def produce() -> None:
            async with send, anyio.create_task_group() as tg:
                self._workers = tg.cancel_scope
                for key, req, rec in jobs:
                    if rec is not None and rec.is_terminal:
                        await send.send(self._from_record(key, rec))
                        continue
                    tg.start_soon(self._one, key, req, rec, send.clone())

        try:
            # Several failures at once (a journal that cannot be written, ...) reach the
            # caller as the first meaningful one, the others in its notes: no group.
            with collapsing_groups():
                async with anyio.create_task_group() as outer:
                    self._outer = outer.cancel_scope
                    outer.start_soon(produce)
                    if self._ownership.leased:
                        outer.start_soon(self._ownership.keep_lease, self._stop)
                    try:
                        async with receive:
                            yield receive
                    finally:
                        outer.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._cleanup()
        if self._fatal is not None:
            raise self._fatal

    def _stop(self, exc: JournalError) -> None:
        """A journal failure no item survives: stop everything, raise ``exc`` at the end."""
        if self._fatal is None:
            self._fatal = exc
            logger.error("batch stopped, nothing more is sent: %s", exc)
        if self._outer is not None:
            self._outer.cancel()

    async def _cleanup(self) -> None:
        unresolved = len(self.create.unresolved) - self._unresolved_at_start
        if unresolved > 0:
            logger.warning(
                "%d create(s) had an unknown outcome when the batch stopped: a task may exist "
                "for each that no cancel policy can reach%s",
                unresolved,
                "; `resume` on the journal finds them" if self.journal is not None else "",
            )
        if self.on_cancel != "cancel_pending" or not self._live:
            return
        pending = [
            t
            for t in self._live.values()
            if self.scheduler.last_status(t.task_id) is not TaskStatus.RUNNING
        ]
        if not pending:
            return
        logger.info("batch cancelled: cancelling %d PENDING task(s)", len(pending))
        with anyio.move_on_after(30):
            async with anyio.create_task_group() as tg:
                for task in pending:
                    tg.start_soon(self._cancel_quietly, task)

    async def _cancel_quietly(self, task: Task) -> None:
        try:
            await self.tasks.cancel(task)
            if self.journal is not None:
                rec = await self.journal.get_by_task_id(task.task_id)
                if rec is not None:
                    await self.journal.update(
                        rec.submission_id,
                        state=SubmissionState.FAILED,
                        status="CANCELED",
                        error_type="TaskCanceledError",
                        error_message="canceled when the batch was cancelled",
                    )
        except UnsupportedOperationError:
            pass  # already running: it goes on, detached
        except WanError as exc:
            logger.warning("could not cancel %s: %s", task.task_id, exc)

    def _from_record(self, key: Any, rec: SubmissionRecord) -> BatchItem:
        """The outcome of a submission a previous run finished."""
        err: BaseException | None = None
        if rec.state is SubmissionState.FAILED:
            why = rec.error_message or "no message"
            kind = f"{rec.error_type}: " if rec.error_type else ""
            hint = (
                " It made no task: retry_failed=True (wanr2v run --retry-failed) runs it again."
                if rec.task_id is None
                else ""
            )
            err = WanError(f"failed in an earlier run ({kind}{why}).{hint}")
        result = None
        if rec.task_id and rec.status:
            result = TaskResult(
                task_id=rec.task_id,
                status=TaskStatus.parse(rec.status),
                raw_status=rec.status,
                video_url=rec.video_url,
                base_url=rec.base_url,
                code=rec.error_code,
                usage=usage_of(rec),
            )
        try:
            request: VideoRequest | None = rec.video_request()
        except (WanError, TypeError):
            request = None
        return BatchItem(
            key=key,
            request=request,
            task=Task(task_id=rec.task_id, base_url=rec.base_url) if rec.task_id else None,
            result=result,
            error=err,
            path=Path(rec.download_path) if rec.download_path else None,
            earlier=True,
        )

    async def _one(
        self,
        key: Any,
        req: VideoRequest | None,
        rec: SubmissionRecord | None,
        send: Any,
    ) -> None:
        async with send:
            item = await self._process(key, req, rec)
            await send.send(item)
            if self.fail_fast and item.error is not None and self._workers is not None:
                logger.info("fail_fast: item %r failed; cancelling the rest", key)
                self._workers.cancel()

    async def _process(
        self, key: Any, req: VideoRequest | None, rec: SubmissionRecord | None
    ) -> BatchItem:
        task: Task | None = None
        result: TaskResult | None = None
        try:
            if rec is not None and req is None:
                req = rec.video_request()
            assert req is not None
            session = self._session_for_item(req, rec)
            async with session.governor.task_slot():
                task = await self._ensure_task(key, req, rec, session.base_url)
                self._live[task.task_id] = task
                self.events.keys[task.task_id] = key
                result = await self.tasks.wait(task, raise_on_failure=False)
            # Final: no longer ours to cancel. (On cancellation the task stays in
            # ``_live`` so that the cancel policy can act on it.)
            self._live.pop(task.task_id, None)
            self._settle_result(req, result)
            await self._record_result(rec, result)
            raise_for_status(result)
            path = None
            if self.download_to is not None:
                target = self.download_to / self._file_name(key, task, req)
                path = await self.tasks.download(result, target)
                await self._record(rec, state=SubmissionState.DOWNLOADED, download_path=str(path))
            return BatchItem(key=key, request=req, task=task, result=result, path=path)
        except Exception as exc:  # one item's failure is its own outcome
            if task is not None:
                self._live.pop(task.task_id, None)
            if isinstance(exc, (JournalBusyError, JournalVanishedError)):
                self._stop(exc)  # no item may go on: each would write (or send) blind
            elif not isinstance(exc, WanError):
                logger.exception("batch item %r failed unexpectedly", key)
            await self._record_error(rec, exc, task)
            return BatchItem(key=key, request=req, task=task, result=result, error=exc)

    def _settle_result(self, req: VideoRequest, result: TaskResult) -> None:
        if self.budget_usd is None:
            return
        estimate = req.estimated_cost_usd()
        billed = 0.0
        if result.succeeded:
            cost = req.billed_cost_usd(result.usage)
            billed = cost if cost is not None else estimate
        self._settle(estimate, billed)

    def _session_for_item(self, req: VideoRequest, rec: SubmissionRecord | None) -> ApiSession:
        """Where an item's task lives or goes (least loaded capable region with spread)."""
        routing = self.routing
        if rec is not None and rec.base_url:
            return routing.session_for(rec.base_url)
        if not self.spread:
            return routing.route(req)
        eligible = routing.eligible(req)
        if not eligible:
            return routing.route(req)  # raises the clear refusal

        def load(s: ApiSession) -> float:
            st = s.governor.statistics()
            cap = st.max_in_flight or s.governor.limits.running_slots
            return (st.tasks_in_flight + st.tasks_waiting) / cap

        return min(eligible, key=load)

    async def _ensure_task(
        self, key: Any, req: VideoRequest, rec: SubmissionRecord | None, base_url: str
    ) -> Task:
        """The item's task: the journal's, a reconciled one, or a new create."""
        expect = [SubmissionState.NEW]
        if rec is not None:
            rec = await self._refresh(rec)
            if rec.task_id:
                self.scheduler.register_submission(
                    rec.task_id, rec.base_url, submitted_at=rec.sent_at
                )
                return Task(
                    task_id=rec.task_id,
                    base_url=rec.base_url,
                    region=rec.region,
                    model=rec.model,
                    submitted_at=rec.sent_at,
                    fingerprint=rec.fingerprint,
                )
            # The state the claim below expects: NEW, or AMBIGUOUS when reconciliation
            # just proved that the earlier create made nothing.
            expect = [rec.state]
            if rec.state.needs_reconciliation and rec.body is not None:
                found = await self._reconcile_record(rec)
                if found is not None:
                    return found
                # Provably no task: the estimate counted for it at the start is free again.
                self._settle(req.estimated_cost_usd() if self.budget_usd is not None else 0, 0)
                expect = [SubmissionState.AMBIGUOUS]
        return await self._create(key, req, rec, base_url, expect)

    async def _create(
        self,
        key: Any,
        req: VideoRequest,
        rec: SubmissionRecord | None,
        base_url: str,
        expect: list[SubmissionState],
    ) -> Task:
        create = self.create
        if rec is not None and rec.body is not None:
            body: Mapping[str, Any] = rec.body
            headers = _headers_for(body)
        else:
            body, headers = await create.prepare(req, base_url=base_url)
        sid = rec.submission_id if rec is not None else None
        attempts = [rec.attempts if rec is not None else 0]

        async def on_sent(sent_at: float) -> None:
            if rec is None or self.journal is None:
                return
            await self._ownership.bind(base_url)
            # The claim: compare-and-set, so of two runners only one sends. Raised
            # here, a conflict stops this create before it goes out.
            attempts[0] += 1
            await self.journal.update(
                rec.submission_id,
                expect_state=expect[0],
                state=SubmissionState.SENDING,
                body=dict(body),
                fingerprint=fingerprint(body),
                sent_at=sent_at,
                base_url=base_url,
                region=self.routing.region_of(base_url),
                attempts=attempts[0],
            )
            expect[0] = SubmissionState.SENDING  # a retry of a refused send is ours too

        claimed = self.journal.known_task_ids if self.journal is not None else None
        # Local work (checks, uploads) is done and free: only now does the item take its
        # estimate from the budget, so an item failing locally never holds any.
        reserved = await self._reserve(key, req)
        unresolved = len(create.unresolved)
        try:
            outcome = await create.attempt(
                body,
                headers=headers,
                submission_id=sid,
                claimed=claimed,
                on_sent=on_sent,
                base_url=base_url,
                key=key,
            )
        except (SubmitOutcomeUnknownError, APIError):
            # A task may exist: a lost answer, or an error of a lookup while reconciling
            # (never the create's own answer, which comes back as a refusal below). Its
            # estimate stays committed; the record stays SENDING, resume reconciles it.
            raise
        except Exception:
            if len(create.unresolved) == unresolved:
                self._settle(reserved, 0.0)  # provably nothing was made
            raise
        if not isinstance(outcome, Task):
            # The service's error *answer* to the create itself (a typed outcome of the
            # create path, never guessed from the exception): nothing was made.
            self._settle(reserved, 0.0)
            if rec is not None:
                await self._record_refusal(rec, outcome.error)
            raise outcome.error
        task = outcome
        self._live[task.task_id] = task  # before any await: a cancel policy must see it
        with anyio.CancelScope(shield=True):  # what is known is recorded, even when cancelled
            await self._record(
                rec,
                state=SubmissionState.CREATED,
                task_id=task.task_id,
                base_url=task.base_url,
                region=task.region,
                status=task.status.value,
            )
        return task

    async def _reconcile_record(self, rec: SubmissionRecord) -> Task | None:
        """A create sent before a crash, answer unknown: find its task or prove none."""
        assert rec.body is not None
        error = SubmitOutcomeUnknownError(
            f"Submission {rec.submission_id} (key {rec.batch_key}) was sent before the "
            "process stopped; its outcome is unknown.",
            fingerprint=rec.fingerprint or fingerprint(rec.body),
            submission_id=rec.submission_id,
            sent_at=rec.sent_at,
        )
        await self._record(rec, state=SubmissionState.AMBIGUOUS)
        claimed = self.journal.known_task_ids if self.journal is not None else None
        task = await self.create.reconcile(
            rec.body,
            sent_at=rec.sent_at or time.time(),
            error=error,
            claimed=claimed,
            base_url=rec.base_url,
        )
        if task is not None:
            await self._record(
                rec,
                state=SubmissionState.CREATED,
                task_id=task.task_id,
                base_url=task.base_url,
                region=task.region,
            )
        return task

    async def _refresh(self, rec: SubmissionRecord) -> SubmissionRecord:
        if self.journal is None:
            return rec
        fresh = await self.journal.get(rec.submission_id)
        return fresh or rec

    async def _record(self, rec: SubmissionRecord | None, **changes: Any) -> None:
        if rec is None or self.journal is None:
            return
        await self.journal.update(rec.submission_id, **changes)

    async def _record_result(self, rec: SubmissionRecord | None, result: TaskResult) -> None:
        if rec is None or self.journal is None:
            return
        state = SubmissionState.SUCCEEDED if result.succeeded else SubmissionState.FAILED
        changes: dict[str, Any] = {
            "state": state,
            "status": result.status.value,
            "result": result_to_dict(result),
        }
        if result.video_url:
            changes["video_url"] = result.video_url
        if not result.succeeded:
            changes.update(
                error_type=f"Task{result.status.value.title()}",
                error_code=result.code,
                error_message=result.message,
            )
        await self.journal.update(rec.submission_id, **changes)

    async def _record_refusal(self, rec: SubmissionRecord, exc: APIError) -> None:
        """A create the service refused: final when the request is at fault, else NEW."""
        assert self.journal is not None
        final = isinstance(exc, (BadRequestError, NotFoundError)) and not isinstance(
            exc, ArrearageError
        )
        changes: dict[str, Any] = {
            "state": SubmissionState.FAILED if final else SubmissionState.NEW,
            "error_type": type(exc).__name__,
            "error_code": exc.code,
            "error_message": str(exc)[:2000],
        }
        if not final:  # nothing was made: the next try prepares (and uploads) afresh
            changes.update(body=None, fingerprint=None, sent_at=None, base_url=None, region=None)
        with anyio.CancelScope(shield=True):
            await self.journal.update(
                rec.submission_id, expect_state=SubmissionState.SENDING, **changes
            )
        self._settled.add(rec.submission_id)

    async def _record_error(
        self, rec: SubmissionRecord | None, exc: Exception, task: Task | None
    ) -> None:
        if rec is None or self.journal is None or rec.submission_id in self._settled:
            return
        if isinstance(exc, JournalError):
            # The journal refused (a lost claim, a lost lease, a mismatch) or is gone:
            # the record is not this runner's to change, or cannot be changed.
            return
        fresh = await self._refresh(rec)
        S = SubmissionState
        if isinstance(exc, SubmitOutcomeUnknownError) or fresh.state is S.SENDING:
            state = S.AMBIGUOUS  # resume reconciles it again
        elif isinstance(exc, TaskError):
            state = S.FAILED
        elif fresh.state is S.SUCCEEDED:
            state = S.SUCCEEDED  # e.g. the download failed: resume downloads again
        elif fresh.task_id:
            state = S.CREATED  # the task goes on: resume polls it
        else:
            state = S.FAILED
        with anyio.CancelScope(shield=True):
            await self.journal.update(
                rec.submission_id,
                state=state,
                error_type=type(exc).__name__,
                error_code=getattr(exc, "code", None),
                error_message=str(exc)[:2000],
            )


def _remove_parts(folder: Path, names: Iterable[str]) -> None:
    """Remove the temporary ``.{name}.….part`` files of the videos ``names`` in ``folder``."""
    for name in names:
        for part in folder.glob(f".{glob.escape(name)}.*.part"):
            with suppress(OSError):
                part.unlink()


def _headers_for(body: Mapping[str, Any]) -> dict[str, str]:
    inp = body.get("input")
    refs = inp.get("reference_urls", []) if isinstance(inp, Mapping) else []
    if any(isinstance(r, str) and r.startswith("oss://") for r in refs):
        return {"X-DashScope-OssResourceResolve": "enable"}
    return {}
