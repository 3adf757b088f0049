"""Small pieces the client's verbs share: argument checks, a result's typed error,
the statistics record. Pure functions and values: no I/O, no client."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._events import TaskEvent
from ._exceptions import ConfigurationError, TaskCanceledError, TaskFailedError, TaskNotFoundError
from ._limits import GovernorStatistics
from ._models import (
    Task,
    TaskResult,
    TaskStatus,
    TaskSummary,
    VideoRequest,
    check_keywords,
    keyword_names,
)
from ._polling import SchedulerStatistics

if TYPE_CHECKING:
    from ._create import Creator
    from ._limits import Governor
    from ._polling import PollScheduler
    from ._routing import Router

__all__ = [
    "ClientStatistics",
    "REQUEST_FIELDS",
    "TaskLike",
    "build_request",
    "check_client_options",
    "client_statistics",
    "maybe_await",
    "request_verb",
    "the_request",
    "only",
    "raise_for_status",
    "task_ref",
]

TaskLike = Task | TaskResult | TaskSummary | str


@attrs.frozen(kw_only=True)
class ClientStatistics:
    """What a client has sent and seen (for progress displays and benchmarks).

    Attributes:
        requests: API requests sent, by kind (``create``, ``query``, ``list``,
            ``cancel``, ``policy``: the upload policy), retries included.
        statuses: answers received, by HTTP status.
        rate_limited: 429 answers received.
        created: tasks this client created (adopted ones included).
        reconciled: creates whose answer was lost and whose task reconciliation found
            and adopted.
        governor: the default region's pacing (`GovernorStatistics`).
        scheduler: the poll scheduler's counts (`SchedulerStatistics`).
        regions: each configured region's `GovernorStatistics`, by region name.
    """

    requests: Mapping[str, int]
    statuses: Mapping[int, int]
    rate_limited: int
    created: int
    reconciled: int
    governor: GovernorStatistics
    scheduler: SchedulerStatistics
    regions: Mapping[str, GovernorStatistics] = attrs.field(factory=dict)


REQUEST_FIELDS = (
    "model",
    "prompt",
    "reference_urls",
    "negative_prompt",
    "size",
    "duration",
    "shot_type",
    "audio",
    "watermark",
    "seed",
    "prompt_extend",
    "extra_input",
    "extra_parameters",
)
"""The keyword fields of a request (``async_call``, ``call``): `VideoRequest`'s."""


def build_request(
    where: str, request: VideoRequest | None, arguments: Mapping[str, Any]
) -> VideoRequest:
    """``request``, or a `VideoRequest` of the request fields among ``arguments``; not
    both."""
    fields = {name: arguments.get(name) for name in REQUEST_FIELDS}
    given = {k: v for k, v in fields.items() if v is not None}
    if request is not None:
        if given:
            raise TypeError(
                f"{where}: pass either a VideoRequest or keyword fields, not both "
                f"(got extra {', '.join(sorted(given))})."
            )
        if not isinstance(request, VideoRequest):
            raise TypeError(
                f"{where}: request must be a VideoRequest, got {type(request).__name__}."
            )
        return request
    # The required fields go through even when None: the request's own check names the
    # one missing (InvalidRequestError, nothing sent), as VideoRequest(...) does.
    required = {name: fields.get(name) for name in ("model", "prompt", "reference_urls")}
    return VideoRequest(**{**given, **required})


V = TypeVar("V", bound=Callable[..., Coroutine[Any, Any, Any]])


def request_verb(verb: V) -> V:
    """``async_call`` and ``call``: the keyword checks and the `VideoRequest` happen here.

    A misspelt keyword is a ``TypeError`` naming the closest valid one; the request
    fields given as keywords become one `VideoRequest` (or the one passed is checked),
    and ``verb`` runs with it as ``request`` and without the field keywords. Memory:
    this wrapper keeps only the verb's coroutine while it waits (no copy of the
    arguments), and the verb never calls ``locals()``, whose dict CPython 3.11 would
    keep on its frame: at thousands of creates waiting for a connection, about 2 KB
    less per call in flight.
    """
    valid = keyword_names(verb)
    where = verb.__name__

    @functools.wraps(verb)
    async def run(self: Any, request: VideoRequest | None = None, /, **kwargs: Any) -> Any:
        check_keywords(verb.__qualname__, tuple(kwargs), valid)
        fields = {name: kwargs.pop(name) for name in REQUEST_FIELDS if name in kwargs}
        coro = verb(self, build_request(where, request, fields), **kwargs)
        del fields, kwargs, request
        return await coro

    return run  # type: ignore[return-value]


def the_request(request: VideoRequest | None) -> VideoRequest:
    """Inside a `request_verb`: the request it built (never ``None`` there)."""
    if not isinstance(request, VideoRequest):
        raise TypeError(f"expected the VideoRequest request_verb builds, got {request!r}.")
    return request


def check_client_options(
    *,
    time_scale: float = 1.0,
    timeout: float | None = None,
    max_retries: int | None = None,
    max_response_bytes: int = 1024,
    max_video_bytes: int | None = None,
    reconcile_settle: float = 0.0,
) -> None:
    """Raise `ConfigurationError` for a client option out of its range (``None``: not
    given)."""
    if not (isinstance(time_scale, (int, float)) and time_scale > 0):
        raise ConfigurationError(f"time_scale must be > 0, got {time_scale!r}.")
    if timeout is not None and not timeout > 0:
        raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}.")
    if max_retries is not None and max_retries < 0:
        raise ConfigurationError(f"max_retries must be >= 0, got {max_retries!r}.")
    if max_response_bytes < 1024:
        raise ConfigurationError(f"max_response_bytes must be >= 1024, got {max_response_bytes!r}.")
    if max_video_bytes is not None and max_video_bytes < 1:
        raise ConfigurationError(f"max_video_bytes must be >= 1, got {max_video_bytes!r}.")
    if not reconcile_settle >= 0:
        raise ConfigurationError(
            f"reconcile_settle must be >= 0 seconds, got {reconcile_settle!r}."
        )


def client_statistics(
    routing: Router, create: Creator, governor: Governor, scheduler: PollScheduler
) -> ClientStatistics:
    """A client's `ClientStatistics`, from its parts."""
    requests, statuses, limited = routing.counts()
    return ClientStatistics(
        requests=requests,
        statuses=statuses,
        rate_limited=limited,
        created=create.created,
        reconciled=create.reconciled,
        governor=governor.statistics(),
        scheduler=scheduler.statistics(),
        regions=routing.governor_statistics(),
    )


def task_ref(task: TaskLike) -> tuple[str, str | None]:
    """A task's id and the base URL it lives at (``None``: unknown)."""
    if isinstance(task, str):
        if not task.strip():
            raise ValueError("task id is empty.")
        return task.strip(), None
    if isinstance(task, (Task, TaskResult)):
        return task.task_id, task.base_url
    if isinstance(task, TaskSummary):
        return task.task_id, None
    raise TypeError(f"expected a task id, Task or TaskResult, got {type(task).__name__}.")


def raise_for_status(result: TaskResult) -> TaskResult:
    """Return a SUCCEEDED (or unfinished) result; raise the typed error of a bad end."""
    common: dict[str, Any] = {
        "task_id": result.task_id,
        "request_id": result.request_id,
        "result": result,
    }
    if result.status is TaskStatus.FAILED:
        raise TaskFailedError(
            f"Task {result.task_id} FAILED: {result.code or 'no code'}: "
            f"{result.message or 'no message'}",
            status="FAILED",
            code=result.code,
            **common,
        )
    if result.status is TaskStatus.CANCELED:
        raise TaskCanceledError(f"Task {result.task_id} was CANCELED.", status="CANCELED", **common)
    if result.status is TaskStatus.UNKNOWN:
        raise TaskNotFoundError(
            f"Task {result.task_id} is UNKNOWN to the service: it never existed in this "
            "region, or it expired (task ids live 24 h).",
            status="UNKNOWN",
            **common,
        )
    return result


def only(task_id: str, callback: Callable[[TaskEvent], object]) -> Callable[[TaskEvent], object]:
    """``callback`` for the events of ``task_id`` only."""

    def deliver(event: TaskEvent) -> object:
        return callback(event) if event.task_id == task_id else None

    return deliver


async def maybe_await(value: Any) -> Any:
    """``value``, awaited first when it is awaitable."""
    if hasattr(value, "__await__"):
        return await value
    return value
