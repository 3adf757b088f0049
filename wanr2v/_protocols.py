"""The narrow interfaces the client's parts depend on, instead of the whole client.

Routing between regions (`wanr2v._routing`), the safe create and its reconciliation
(`wanr2v._create`, `wanr2v._reconcile`) and the batch runner (`wanr2v._batch`) each
name here only what they use; `AsyncWanClient` wires the concrete objects together.
These are structural types (``typing.Protocol``): nothing inherits from them, and
nothing here runs any code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._create import Refused
    from ._events import EventKind
    from ._exceptions import SubmitOutcomeUnknownError
    from ._http import ApiSession
    from ._models import Task, TaskResult, TaskStatus, VideoRequest
    from ._polling import PollPolicy

__all__ = ["BatchTasks", "Emitter", "Lookup", "Routing", "SafeCreate", "Watcher"]


class Routing(Protocol):
    """The sessions of the configured regions (one per base URL) and where a request
    or a task goes."""

    @property
    def regions(self) -> tuple[str, ...]:
        """The configured regions, the default first."""
        ...

    def session_for(self, base_url: str | None) -> ApiSession:
        """The session of the region at ``base_url`` (``None``: the default region)."""
        ...

    def for_region(self, region: str) -> ApiSession:
        """The session of a configured region, by name or base URL."""
        ...

    def region_of(self, base_url: str) -> str:
        """The region name of ``base_url`` (``"custom"`` when it is no known one)."""
        ...

    def eligible(self, request: VideoRequest) -> list[ApiSession]:
        """The regions that can serve ``request``, the default first."""
        ...

    def route(self, request: VideoRequest, region: str | None = None) -> ApiSession:
        """Where ``request`` goes (raises `InvalidRequestError` when nowhere)."""
        ...


class Watcher(Protocol):
    """What the create path and the batch ask of the poll scheduler."""

    @property
    def policy(self) -> PollPolicy: ...

    def register_submission(
        self, task_id: str, base_url: str | None, *, submitted_at: float | None = None
    ) -> None: ...

    def last_status(self, task_id: str) -> TaskStatus | None: ...

    async def wait(self, task_id: str, base_url: str | None = None) -> TaskResult: ...


class Emitter(Protocol):
    """Lifecycle events: a task's batch key, and the events themselves."""

    @property
    def keys(self) -> dict[str, object]: ...

    def emit(self, kind: EventKind, task_id: str, result: TaskResult | None = None) -> None: ...


class Lookup(Protocol):
    """What reconciliation (``find_lost_task``) needs to look a lost task up."""

    @property
    def routing(self) -> Routing: ...

    @property
    def policy(self) -> PollPolicy:
        """The poll policy (its ``time_scale``, ``unknown_grace``, intervals)."""
        ...

    @property
    def reconcile_wait(self) -> float:
        """Seconds to wait for a candidate task to be final (to show its prompt)."""
        ...

    async def query(self, task_id: str, base_url: str | None) -> TaskResult:
        """One query of a task, at the lowest priority."""
        ...

    async def wait_final(self, task_id: str, base_url: str | None) -> TaskResult:
        """Wait (through the shared poll scheduler) until the task is final."""
        ...


class SafeCreate(Protocol):
    """The safe create: prepare a body, send it once, reconcile a lost answer."""

    @property
    def unresolved(self) -> Sequence[SubmitOutcomeUnknownError]:
        """Creates whose outcome stayed unknown (a task may exist for each)."""
        ...

    async def prepare(
        self, request: VideoRequest, *, base_url: str | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]: ...

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
        """The task, or the service's refusal of the create itself (nothing made)."""
        ...

    async def reconcile(
        self,
        body: Mapping[str, Any],
        *,
        sent_at: float,
        error: SubmitOutcomeUnknownError,
        claimed: Callable[[], Any] | None = None,
        base_url: str | None = None,
        key: object = None,
    ) -> Task | None: ...


class BatchTasks(Protocol):
    """The public verbs the batch runner uses on each item's task."""

    async def wait(self, task: Task, *, raise_on_failure: bool = True) -> TaskResult: ...

    async def download(self, task: TaskResult, dest: Path) -> Path: ...

    async def cancel(self, task: Task) -> None: ...
