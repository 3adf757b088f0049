"""The safe create: a paid request sent once, its lost answer reconciled, never a blind
duplicate.

``prepare`` turns a `VideoRequest` into the wire body (local files uploaded first, to
the temporary storage of the region the create goes to). ``attempt`` sends it:

- the exchange is shielded: once a create went out it is seen through to its answer
  (bounded by the request timeout) even if the caller is cancelled meanwhile, so no
  paid task can exist that nobody knows;
- it is re-sent only when the service provably made nothing (no connection, or a 429 /
  503 answer, retried by the API session);
- an error answer to the create itself (400, 401, 403, 404, 429, 503 once retries are
  spent) is returned as `Refused`: the service made nothing. That is a typed outcome,
  not guessed from the exception afterwards: an error raised while reconciling (a
  failed list or query) is never mistaken for it;
- a lost answer (after the request may have arrived) or a 500 / 502 / 504 (which may
  hide a made task) is reconciled (`wanr2v._reconcile.find_lost_task`): a match is
  adopted; when the service provably has no such task the body is sent once more (at
  most ``MAX_CREATE_ROUNDS`` sends); otherwise `SubmitOutcomeUnknownError`.

A create whose outcome stayed unknown (reconciliation failed, or was cancelled) is
kept in ``unresolved``: a task may exist for it that this process does not know.
Concurrent reconciliations look up in parallel but adopt one at a time, so two lost
creates never adopt one task.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import attrs

from . import _config
from ._exceptions import (
    APIError,
    ServerError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TransportError,
    WanError,
)
from ._helpers import maybe_await
from ._models import Task, TaskResult, VideoRequest
from ._reconcile import find_lost_task
from ._wire import fingerprint, parse_created, request_body

if TYPE_CHECKING:
    from ._hosts import LocalFiles
    from ._polling import PollPolicy
    from ._protocols import Emitter, Routing, Watcher
    from ._upload import Uploader

__all__ = ["MAX_CREATE_ROUNDS", "Creator", "Refused"]

logger = logging.getLogger("wanr2v")

MAX_CREATE_ROUNDS = 3
"""Sends of one submission whose earlier outcome was proven empty by reconciliation."""


@attrs.frozen
class Refused:
    """The service's error answer to a create itself: no task was made."""

    error: APIError


class Creator:
    """Prepares, sends and reconciles creates (see the module's docstring).

    Args:
        routing: the sessions per region.
        scheduler: the poll scheduler (a created task is registered there).
        events: the lifecycle events (``created``, a task's batch key).
        query: one query of a task at the lowest priority (reconciliation's lookups).
        uploader_for: the uploader of the region at a base URL.
        local_files: which local paths may be uploaded.
        enabled: reconcile a lost answer (else raise `SubmitOutcomeUnknownError` at once).
        grace: seconds to let a lost create land before the lookup.
        wait: seconds to wait for a candidate task to show its prompt.
        settle: service seconds after a lost answer before an empty list proves absence.
    """

    def __init__(
        self,
        *,
        routing: Routing,
        scheduler: Watcher,
        events: Emitter,
        query: Callable[[str, str | None], Awaitable[TaskResult]],
        uploader_for: Callable[[str | None], Uploader],
        local_files: LocalFiles,
        enabled: bool = True,
        grace: float = 2.0,
        wait: float = 900.0,
        settle: float = 15.0,
    ) -> None:
        self.routing = routing
        self._scheduler = scheduler
        self._events = events
        self._query = query
        self._uploader_for = uploader_for
        self.local_files = local_files
        self.enabled = enabled
        self.grace = grace
        self.reconcile_wait = wait
        self.settle = settle
        self._claimed: set[str] = set()
        self._unresolved: list[SubmitOutcomeUnknownError] = []
        self._lock = anyio.Lock()
        self.created = 0
        self.reconciled = 0

    def rebind(
        self,
        routing: Routing,
        query: Callable[[str, str | None], Awaitable[TaskResult]],
        uploader_for: Callable[[str | None], Uploader],
    ) -> Creator:
        """A copy sending through ``routing`` that shares the claims, the unresolved
        creates and the adoption lock with this one (``with_options``)."""
        other = copy.copy(self)
        other.routing, other._query, other._uploader_for = routing, query, uploader_for
        return other

    @property
    def unresolved(self) -> list[SubmitOutcomeUnknownError]:
        """Creates whose outcome stayed unknown: each may have made a task."""
        return self._unresolved

    # --- Lookup (what reconciliation needs) ---------------------------------------------

    @property
    def policy(self) -> PollPolicy:
        return self._scheduler.policy

    async def query(self, task_id: str, base_url: str | None) -> TaskResult:
        return await self._query(task_id, base_url)

    async def wait_final(self, task_id: str, base_url: str | None) -> TaskResult:
        return await self._scheduler.wait(task_id, base_url)

    # --- create -------------------------------------------------------------------------

    async def prepare(
        self, request: VideoRequest, *, base_url: str | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The wire body and extra headers for ``request`` (local files uploaded first,
        to the temporary storage of the region at ``base_url``)."""
        headers: dict[str, str] = {}
        refs: list[str] | None = None
        if request.local_references:
            from ._hosts import check_local_files

            await check_local_files(request, self.local_files)
            refs, uses_oss = await self._uploader_for(base_url).resolve(request)
        else:
            refs = [os.fspath(r) for r in request.reference_urls]
            uses_oss = any(r.startswith("oss://") for r in refs)
        if uses_oss:
            headers["X-DashScope-OssResourceResolve"] = "enable"
        return request_body(request, refs), headers

    async def submit(
        self,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        submission_id: str | None = None,
        claimed: Callable[[], Any] | None = None,
        on_sent: Callable[[float], Any] | None = None,
        base_url: str | None = None,
        key: object = None,
    ) -> Task:
        """`attempt`, raising a refusal's error."""
        outcome = await self.attempt(
            body,
            headers=headers,
            submission_id=submission_id,
            claimed=claimed,
            on_sent=on_sent,
            base_url=base_url,
            key=key,
        )
        if isinstance(outcome, Refused):
            raise outcome.error
        return outcome

    async def attempt(
        self,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        submission_id: str | None = None,
        claimed: Callable[[], Any] | None = None,
        on_sent: Callable[[float], Any] | None = None,
        base_url: str | None = None,
        key: object = None,
    ) -> Task | Refused:
        """Send a prepared create body with the safe-create rule.

        Returns the task, or `Refused` with the service's error answer to the create
        itself (nothing was made). Raises anything else: `SubmitOutcomeUnknownError`
        (a task may exist), a `TransportError` that reached nothing, or an error of a
        lookup while reconciling.

        Args:
            claimed: returns task ids already owned by other submissions (the journal's),
                excluded when reconciling.
            on_sent: awaited with the UNIX time just before each send goes out, after the
                governor's pacing (journals record the create as sent there).
            key: a batch item's key, carried by the task's lifecycle events.
        """
        session = self.routing.session_for(base_url)
        fp = fingerprint(body)
        sid = submission_id or uuid.uuid4().hex
        model = str(body.get("model"))
        last: SubmitOutcomeUnknownError | None = None
        for _round in range(MAX_CREATE_ROUNDS):
            sent = [time.time()]

            async def before_send(sent: list[float] = sent) -> None:
                sent[0] = time.time()
                if on_sent is not None:
                    await maybe_await(on_sent(sent[0]))

            try:
                # A create that went out is seen through to its answer even if the
                # caller is cancelled meanwhile: otherwise a paid task could exist that
                # nobody knows (and a cancel policy could not reach). The exchange is
                # bounded by the request timeout; the cancellation lands right after.
                _, data = await session.request(
                    "create",
                    "POST",
                    _config.PATH_CREATE,
                    json=body if type(body) is dict else dict(body),  # no copy per waiting create
                    headers=headers,
                    priority=anyio.current_time(),
                    before_send=before_send,
                    shield_exchange=True,
                )
            except (TransportError, ServerError) as exc:
                if isinstance(exc, TransportError) and not exc.maybe_sent:
                    raise  # nothing reached the service (already retried)
                if isinstance(exc, ServiceUnavailableError):
                    return Refused(exc)  # a 503: nothing was made (already retried)
                unknown: WanError = exc  # a lost answer, or a 500/502/504
            except APIError as exc:
                return Refused(exc)  # the service answered the create with a refusal
            else:
                try:
                    task = parse_created(
                        data,
                        base_url=session.base_url,
                        region=self.routing.region_of(session.base_url),
                        model=model,
                        submitted_at=sent[0],
                        fp=fp,
                    )
                except APIError as exc:  # a 200 we cannot read: a task was made, id unknown
                    unknown = exc
                else:
                    self._adopt(task, key)
                    return task
            # The task may or may not exist: look it up before anything else.
            last = SubmitOutcomeUnknownError(
                f"The create for submission {sid} was sent but its outcome is unknown "
                f"({unknown}); a task may exist. It was not re-sent blindly.",
                fingerprint=fp,
                submission_id=sid,
                sent_at=sent[0],
                cause=unknown,
            )
            if not self.enabled:
                raise last from unknown
            try:
                found = await self.reconcile(
                    body,
                    sent_at=sent[0],
                    error=last,
                    claimed=claimed,
                    base_url=session.base_url,
                    key=key,
                )
            except BaseException as exc:
                # Cancelled (or failed) while looking: a task may exist that this client
                # does not know. Kept for the caller (see ``unresolved``).
                self._unresolved.append(exc if isinstance(exc, SubmitOutcomeUnknownError) else last)
                raise
            if found is not None:
                return found
            logger.info("submission %s: the service has no such task; sending again", sid)
        raise SubmitOutcomeUnknownError(
            f"Submission {sid}: the create's outcome was unknown {MAX_CREATE_ROUNDS} times and "
            "each time the service provably had no task; giving up without sending again.",
            fingerprint=fp,
            submission_id=sid,
            cause=last,
        )

    def _adopt(self, task: Task, key: object = None) -> None:
        if key is not None:
            self._events.keys[task.task_id] = key
        self._claimed.add(task.task_id)
        self.created += 1
        self._scheduler.register_submission(task.task_id, task.base_url)
        self._events.emit("created", task.task_id)

    async def reconcile(
        self,
        body: Mapping[str, Any],
        *,
        sent_at: float,
        error: SubmitOutcomeUnknownError,
        claimed: Callable[[], Any] | None = None,
        base_url: str | None = None,
        key: object = None,
    ) -> Task | None:
        """Find the task a lost create made; ``None`` when provably none exists.

        Lists the account's tasks of the model since the create was sent, skips those
        already claimed by this client or ``claimed()``, fetches the rest and matches
        every signal the service echoes (model, creation time, prompt after the
        service's normalization, size and duration). No task is proof only from a
        listing sent ``settle`` after this call (see ``wanr2v._reconcile``).

        Raises:
            SubmitOutcomeUnknownError: with ``candidates`` when no single task matches
                and the absence cannot be proven.
        """
        # Lookups run in parallel (a candidate may take minutes to show its prompt);
        # only the claim is serialized, so two lost creates never adopt one task.
        settle_until = time.time() + self.settle / self.policy.time_scale
        await anyio.sleep(self.grace)
        for _ in range(3):
            extra = set(await maybe_await(claimed())) if claimed is not None else set()
            task = await find_lost_task(
                self,
                body,
                sent_at=sent_at,
                error=error,
                claimed=self._claimed | extra,
                base_url=base_url,
                settle_until=settle_until,
            )
            async with self._lock:
                if task is None:
                    return None
                if task.task_id not in self._claimed:
                    self.reconciled += 1
                    self._adopt(task, key)
                    return task
            # Claimed meanwhile by another reconciliation: look again without it.
        raise error
