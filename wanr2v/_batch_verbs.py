"""The batch verbs of `AsyncWanClient`: ``run_many``, ``as_completed``, ``resume``.

A mixin: each verb makes a `BatchRunner` through the client's ``_runner`` (which hands
it the narrow parts it needs, ``wanr2v._protocols``) and runs it; the batch's
behaviour is documented in ``wanr2v._batch``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from ._batch import BatchRunner
from ._batch_records import BatchItem, CancelPolicy, Requests

if TYPE_CHECKING:
    from .journal import JournalStore

__all__ = ["BatchVerbs"]


class BatchVerbs:
    """Many tasks at once (mixed into `AsyncWanClient`)."""

    if TYPE_CHECKING:

        def _runner(self, **options: Any) -> BatchRunner: ...

    async def run_many(
        self,
        requests: Requests,
        *,
        journal: JournalStore | None = None,
        download_to: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
        on_cancel: CancelPolicy = "detach",
        spread: bool = False,
        retry_failed: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
        allow_duplicates: bool = False,
    ) -> list[BatchItem]:
        """Run many requests at once under the governor; outcomes in input order.

        ``requests`` is a list (keys are indexes) or a mapping (keys are yours) of
        `VideoRequest` or field dicts. Each outcome holds a result or an error;
        one failure does not cancel the rest unless ``fail_fast``. Never more than
        ``Limits.max_in_flight`` tasks are in flight. With a ``journal``, every
        submission is recorded before its create is sent (see `resume`).

        Args:
            on_cancel: when your scope is cancelled, ``"detach"`` leaves remote tasks
                running; ``"cancel_pending"`` cancels those still PENDING.
            spread: spread the items over every configured region that can serve
                them, least loaded first.
            retry_failed: run again the journal's items that failed without creating a
                task (a missing reference file, a budget stop); a task that failed on
                the service is never re-created.
            name: the file name template of the videos in ``download_to``: ``{key}``,
                ``{task_id}``, ``{model}``; default ``{key}.mp4`` for a mapping of
                requests, ``{task_id}.mp4`` for a list.
            budget_usd: a spending cap: no task is created whose estimated cost would
                take the batch (what the journal's tasks billed or may bill included)
                over it; those items end with `BudgetExceededError`.
            allow_duplicates: with a ``journal``, let one request be recorded (and
                paid) under several keys; by default that raises
                `DuplicateRequestError`, and a changed request
                under a known key raises `JournalConflictError`
                (both before anything is sent).
        """
        runner = self._runner(
            journal=journal,
            download_to=download_to,
            fail_fast=fail_fast,
            on_cancel=on_cancel,
            spread=spread,
            retry_failed=retry_failed,
            name=name,
            budget_usd=budget_usd,
            allow_duplicates=allow_duplicates,
        )
        return await runner.run(requests)

    def as_completed(
        self,
        requests: Requests,
        *,
        journal: JournalStore | None = None,
        download_to: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
        on_cancel: CancelPolicy = "detach",
        spread: bool = False,
        retry_failed: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
        allow_duplicates: bool = False,
    ) -> AbstractAsyncContextManager[AsyncIterator[BatchItem]]:
        """Like `run_many`, yielding each outcome as it completes::

        async with client.as_completed(requests) as results:
            async for item in results:
                print(item.key, item.ok)
        """
        runner = self._runner(
            journal=journal,
            download_to=download_to,
            fail_fast=fail_fast,
            on_cancel=on_cancel,
            spread=spread,
            retry_failed=retry_failed,
            name=name,
            budget_usd=budget_usd,
            allow_duplicates=allow_duplicates,
        )
        return runner.as_completed(requests)

    async def resume(
        self,
        journal: JournalStore,
        *,
        download_to: str | os.PathLike[str] | None = None,
        on_cancel: CancelPolicy = "detach",
        retry_failed: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
    ) -> list[BatchItem]:
        """Finish a journaled batch after a crash: poll the tasks it knows, reconcile
        creates whose answer was lost (never re-sending one that exists), download.

        ``retry_failed``, ``name`` and ``budget_usd`` as for `run_many`; ``name``
        defaults to the template the batch's run recorded in the journal (so a video is
        never saved twice under two names), else ``{task_id}.mp4``.
        """
        runner = self._runner(
            journal=journal,
            download_to=download_to,
            on_cancel=on_cancel,
            retry_failed=retry_failed,
            name=name,
            budget_usd=budget_usd,
        )
        return await runner.resume()
