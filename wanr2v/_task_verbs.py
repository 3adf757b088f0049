"""The task verbs of `AsyncWanClient`: ``task``, ``fetch``, ``wait``, ``cancel``,
``list_tasks``, ``subscribe``, ``event_stream`` (and the scheduler's poll).

A mixin: it holds the verbs, the client holds the parts. What it uses of the client
is declared below (the routing between regions, the poll scheduler, the default base
URL and the event hub), nothing else. Every request goes to the region the task lives
in; ``wait`` shares the client's one poll scheduler.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING

import anyio

from . import _config, _listing
from ._exceptions import WaitTimeoutError
from ._helpers import TaskLike, only, raise_for_status, task_ref
from ._http import task_segment
from ._models import Task, TaskResult, TaskStatus, TaskSummary
from ._wire import parse_result

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from ._events import EventHub, TaskEvent
    from ._polling import PollScheduler, Watch
    from ._routing import Router

__all__ = ["TaskVerbs"]


class TaskVerbs:
    """Query, wait for, cancel and list tasks (mixed into `AsyncWanClient`)."""

    _routing: Router
    _scheduler: PollScheduler
    _base_url: str
    _events: EventHub

    def task(self, task_id: str, *, region: str | None = None) -> Task:
        """A handle for a task id known from elsewhere (a log, a database).

        A task id lives only in the region that created it, and the id alone does not
        say which: the handle assumes ``region`` if given, else this client's default
        region (``handle.region`` says which), and every call on it goes there.
        """
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError("task_id must be a non-empty string.")
        routing = self._routing
        session = routing.for_region(region) if region is not None else routing.default
        return Task(
            task_id=task_id.strip(),
            status=TaskStatus.UNRECOGNIZED,
            base_url=session.base_url,
            region=routing.name_of(session),
        )

    async def fetch(self, task: TaskLike) -> TaskResult:
        """Query a task once (``GET /tasks/{id}``), where it lives.

        A task id alone is assumed to live at this client's ``base_url``.
        """
        task_id, base = task_ref(task)
        result = await self._fetch(task_id, base, priority=-math.inf)
        self._scheduler.observe(result)
        return result

    async def _fetch(
        self, task_id: str, base_url: str | None, *, priority: float, max_retries: int | None = None
    ) -> TaskResult:
        session = self._routing.session_for(base_url)
        _, data = await session.request(
            "query",
            "GET",
            f"{_config.PATH_TASKS}/{task_segment(task_id)}",
            priority=priority,
            task_id=task_id,
            max_retries=max_retries,
        )
        return parse_result(data, task_id=task_id, base_url=session.base_url)

    async def _query(self, task_id: str, base_url: str | None) -> TaskResult:
        return await self._fetch(task_id, base_url, priority=-math.inf)

    async def _poll(self, watch: Watch, priority: float) -> TaskResult:
        session = self._routing.session_for(watch.base_url)
        shared = session.governor.shared
        if shared is None:
            return await self._fetch(
                watch.task_id, watch.base_url, priority=priority, max_retries=0
            )
        # A fleet shares its polls: an answer another worker got less than min_interval
        # ago (the scheduler's own floor between two polls of a task) is used as is.
        fresh = self._scheduler.policy.min_interval / self._scheduler.policy.time_scale
        data = await shared.recent_poll(watch.task_id, fresh)
        if data is None:
            _, data = await session.request(
                "query",
                "GET",
                f"{_config.PATH_TASKS}/{watch.task_id}",
                priority=priority,
                task_id=watch.task_id,
                max_retries=0,
            )
            shared.publish_poll(watch.task_id, data, fresh)
        return parse_result(data, task_id=watch.task_id, base_url=session.base_url)

    async def wait(
        self,
        task: TaskLike,
        *,
        timeout: float | None = None,
        raise_on_failure: bool = True,
        on_event: Callable[[TaskEvent], object] | None = None,
    ) -> TaskResult:
        """Poll until the task is final (through the shared scheduler); return on SUCCEEDED.

        Deadlines belong to the caller: ``with anyio.fail_after(600): await
        client.wait(t)``. ``timeout=`` is a convenience that raises
        `WaitTimeoutError` (the task goes on, on the server).

        Raises:
            TaskFailedError: FAILED (``code`` and ``message`` say why).
            TaskCanceledError: CANCELED.
            TaskNotFoundError: UNKNOWN (never existed here, or expired after 24 h).

        ``on_event`` is called (synchronously, from the poll scheduler) with each of
        this task's `TaskEvent` s while the wait lasts: a request handler
        streams its own task's states without subscribing to the whole client.
        """
        task_id, base = task_ref(task)
        if base is None and isinstance(task, str):
            base = self._base_url
        if on_event is not None:
            unsubscribe = self.subscribe(only(task_id, on_event))
            try:
                return await self.wait(task, timeout=timeout, raise_on_failure=raise_on_failure)
            finally:
                unsubscribe()
        with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
            result = await self._scheduler.wait(task_id, base)
        if scope.cancelled_caught:
            raise WaitTimeoutError(
                f"Task {task_id} was not final after {timeout}s; it goes on on the server.",
                task_id=task_id,
            )
        return raise_for_status(result) if raise_on_failure else result

    async def cancel(self, task: TaskLike) -> None:
        """Cancel a task; the service allows it only while PENDING.

        Raises:
            UnsupportedOperationError: the task is no longer PENDING.
        """
        task_id, base = task_ref(task)
        await self._routing.session_for(base).request(
            "cancel",
            "POST",
            f"{_config.PATH_TASKS}/{task_segment(task_id)}/cancel",
            task_id=task_id,
        )

    def list_tasks(
        self,
        *,
        task_id: str | None = None,
        model: str | None = None,
        status: str | TaskStatus | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 100,
        max_items: int | None = None,
        base_url: str | None = None,
        max_pages: int = _listing.DEFAULT_MAX_LIST_PAGES,
    ) -> AsyncIterator[TaskSummary]:
        """Iterate over every page of the task list (default: the last 24 h)::

            async for row in client.list_tasks(model="wan2.6-r2v-flash"):
                print(row.task_id, row.status)

        Arguments are checked at once; pages are fetched as you iterate.

        Args:
            task_id: only this task.
            model: only tasks of this model (the service's ``model_name`` filter).
            status: only tasks in this status.
            start_time: the window's start; with ``end_time`` a window of at most
                24 h (naive values mean UTC). Default: the last 24 h.
            end_time: the window's end (naive values mean UTC).
            page_size: tasks per page the service is asked for.
            max_items: stop after this many tasks (all of them when ``None``).
            base_url: list this region's tasks (a configured region's base URL);
                the default region's when ``None``.
            max_pages: pages to fetch at most. A listing that would need more, or a
                page the service repeats, raises `APIError`
                (``code="MalformedResponse"``): a listing cut short must never pass
                for a complete one (reconciliation relies on it).
        """
        params = _listing.list_params(
            task_id=task_id,
            model=model,
            status=status,
            start_time=start_time,
            end_time=end_time,
            page_size=page_size,
            max_pages=max_pages,
        )
        return _listing.pages(self._routing, base_url, params, max_items, max_pages)

    def subscribe(self, callback: Callable[[TaskEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every lifecycle event; returns an unsubscribe function."""
        return self._events.subscribe(callback)

    def event_stream(
        self, buffer: float = math.inf
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[TaskEvent]]:
        """``async with client.event_stream() as events: async for ev in events: ...``"""
        return self._events.stream(buffer)
