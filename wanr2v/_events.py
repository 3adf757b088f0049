"""Lifecycle events per task, as callbacks or an async iterator.

A progress bar subscribes once and needs no polling of its own: the poll scheduler
already knows every status change.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Literal

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._models import TaskResult

__all__ = ["EventHub", "TaskEvent"]

logger = logging.getLogger("wanr2v")

EventKind = Literal[
    "created", "queued", "running", "succeeded", "failed", "canceled", "unknown", "updated"
]


@attrs.frozen(kw_only=True)
class TaskEvent:
    """One change in a task's life.

    Attributes:
        kind: ``created`` (the create answered), then ``queued``, ``running`` and one
            final kind: ``succeeded``, ``failed``, ``canceled`` or ``unknown``.
        task_id: the task.
        at: UNIX time the client saw it.
        result: the query result that showed it (``None`` for ``created``).
        key: the batch item's key, when the task belongs to a batch.
    """

    kind: EventKind
    task_id: str
    at: float
    result: TaskResult | None = None
    key: object = None


class EventHub:
    """Fans events out to callbacks and to subscribed streams (never blocking)."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[TaskEvent], object]] = []
        self._streams: list[MemoryObjectSendStream[TaskEvent]] = []
        self.dropped: int = 0
        self.keys: dict[str, object] = {}

    def subscribe(self, callback: Callable[[TaskEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns a function that unsubscribes."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    @asynccontextmanager
    async def stream(
        self, buffer: float = math.inf
    ) -> AsyncIterator[MemoryObjectReceiveStream[TaskEvent]]:
        """An async iterator of events for the duration of the ``async with`` block."""
        send, receive = anyio.create_memory_object_stream[TaskEvent](buffer)
        self._streams.append(send)
        try:
            async with receive:
                yield receive
        finally:
            self._streams.remove(send)
            send.close()

    def emit(self, kind: EventKind, task_id: str, result: TaskResult | None = None) -> None:
        """Deliver one event to every callback and stream; a full stream drops it."""
        if not self._callbacks and not self._streams:
            return
        event = TaskEvent(
            kind=kind, task_id=task_id, at=time.time(), result=result, key=self.keys.get(task_id)
        )
        for cb in list(self._callbacks):
            try:
                cb(event)
            except Exception:
                logger.exception("event callback failed")
        for s in list(self._streams):
            try:
                s.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped += 1
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
