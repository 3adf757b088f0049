"""The batch's records and the small pure pieces around them, apart from the runner.

What a batch gives back (`BatchItem` per item, `BatchSummary` for the lot, `summarize`)
and what it refuses (`BudgetExceededError`); what it takes (`Requests`, `request_pairs`)
and how its videos are named (`check_name_template`, the default templates); what a
journal record billed or may bill (`usage_of`, `record_cost`). Nothing here runs a
task or holds state: the runner (``_batch``), the blocking client (``_sync``), the CLI
and the demo all use these without the runner.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from ._exceptions import WanError
from ._models import Task, TaskResult, Usage, VideoRequest
from ._wire import journal_structure
from .journal import SubmissionRecord, SubmissionState

__all__ = [
    "DEFAULT_KEY_NAME",
    "DEFAULT_TASK_NAME",
    "BatchItem",
    "BatchSummary",
    "BudgetExceededError",
    "CancelPolicy",
    "Requests",
    "check_name_template",
    "record_cost",
    "request_pairs",
    "summarize",
    "usage_of",
]

CancelPolicy = Literal["detach", "cancel_pending"]
"""What a cancelled batch does with its remote tasks: ``"detach"`` leaves them running,
``"cancel_pending"`` cancels those still PENDING (not billed) and detaches the rest."""

DEFAULT_KEY_NAME = "{key}.mp4"
"""The file name of a batch item's video when the batch has keys of its own (a mapping)."""
DEFAULT_TASK_NAME = "{task_id}.mp4"
"""The file name of a batch item's video otherwise (a list: its keys are indexes)."""
NAME_FIELDS = ("key", "task_id", "model")
"""The fields a name template may use."""


class BudgetExceededError(WanError):
    """A batch item was not created: its estimated cost would take the batch over
    ``budget_usd``. Nothing was sent for it; run it again with a larger budget
    (``retry_failed=True`` / ``--retry-failed`` picks it up from a journal).

    Attributes:
        budget_usd: the batch's budget.
        committed_usd: what the batch had billed or committed when the item came up
            (tasks already made, earlier runs of the journal included).
        estimated_usd: the item's estimated cost (an upper estimate at list prices).
    """

    budget_usd: float
    committed_usd: float
    estimated_usd: float

    def __init__(
        self, message: str, *, budget_usd: float, committed_usd: float, estimated_usd: float
    ) -> None:
        super().__init__(message)
        self.budget_usd = budget_usd
        self.committed_usd = committed_usd
        self.estimated_usd = estimated_usd


def check_name_template(name: str) -> str:
    """A file-name template for batch videos, checked: ``{key}``, ``{task_id}`` or
    ``{model}`` fields, one of ``{key}`` / ``{task_id}`` (names must differ), ending in
    ``.mp4`` or ``.mov``, no folders.

    Raises:
        ValueError: saying what to change.
    """
    import string

    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(name) if f is not None}
    except ValueError as exc:
        raise ValueError(f"name template {name!r}: {exc}.") from None
    unknown = sorted(fields - set(NAME_FIELDS))
    if unknown:
        raise ValueError(
            f"name template {name!r}: unknown field(s) {', '.join(unknown)}; "
            "use {key}, {task_id} or {model}."
        )
    if not fields & {"key", "task_id"}:
        raise ValueError(
            f"name template {name!r} gives every video the same name; put {{key}} or "
            "{task_id} in it."
        )
    if "/" in name or os.sep in name:
        raise ValueError(f"name template {name!r}: a file name, not a path (use the folder).")
    if not name.lower().endswith((".mp4", ".mov")):
        raise ValueError(f"name template {name!r}: end it with .mp4 (a video file name).")
    return name


@attrs.frozen(kw_only=True)
class BatchItem:
    """The outcome of one batch item: a result or an error, never both.

    Attributes:
        key: the item's key (its index, or the mapping key / batch_key given).
        request: the request.
        task: the created task, when one was created (or adopted).
        result: the final result (any final status) when the task got that far.
        error: the error that ended the item (``TaskFailedError`` for a FAILED task).
        path: where the video was saved, when downloading.
        earlier: the item was finished by an earlier run of the journal (nothing was
            done for it in this one).
    """

    key: Any
    request: VideoRequest | None
    task: Task | None = None
    result: TaskResult | None = None
    error: BaseException | None = None
    path: Path | None = None
    earlier: bool = False

    @property
    def billed_usd(self) -> float:
        """What the service billed for this item's task: its ``usage`` at list prices
        (the estimate when usage is missing); 0 when no task succeeded (failed tasks
        are free)."""
        if self.result is None or not self.result.succeeded or self.request is None:
            return 0.0
        billed = self.request.billed_cost_usd(self.result.usage)
        return billed if billed is not None else self.request.estimated_cost_usd()

    @property
    def ok(self) -> bool:
        """The task SUCCEEDED and nothing failed after (the download, when asked for)."""
        return self.error is None and self.result is not None and self.result.succeeded


@attrs.frozen(kw_only=True)
class BatchSummary:
    """Counts and cost of a finished batch (what ``wanr2v run`` prints at the end).

    Make one from the items ``run_many`` or ``resume`` returned::

        items = await client.run_many(requests, journal=journal)
        summary = BatchSummary.of(items)
        print(summary.succeeded, "of", summary.total, f"${summary.estimated_cost_usd}")

    Attributes:
        total: the batch's items, earlier runs' included.
        succeeded: items whose task SUCCEEDED with nothing failing after (`BatchItem.ok`).
        failed: every other item (a failed task, a refused create, a failed download...).
        downloaded: items whose video was saved.
        wall_seconds: how long the run took.
        estimated_cost_usd: what the service billed for the tasks that succeeded in this
            run (their usage at list prices), downloaded or not; earlier runs' items
            are not counted.
        earlier: items finished by an earlier run of the journal (nothing done for them
            now).
    """

    total: int
    succeeded: int
    failed: int
    downloaded: int
    wall_seconds: float
    estimated_cost_usd: float
    earlier: int = 0

    @classmethod
    def of(cls, items: Iterable[BatchItem], wall_seconds: float = 0.0) -> BatchSummary:
        """The summary of a batch's items (``wall_seconds``: how long the run took, if
        you timed it)."""
        return summarize(items, wall_seconds)


def summarize(items: Iterable[BatchItem], wall_seconds: float) -> BatchSummary:
    """Counts and the cost of a batch's outcomes: what the service billed for this
    run's succeeded tasks (a task whose download failed was billed too)."""
    items = list(items)
    cost = sum(it.billed_usd for it in items if not it.earlier)
    return BatchSummary(
        total=len(items),
        succeeded=sum(it.ok for it in items),
        failed=sum(not it.ok for it in items),
        downloaded=sum(it.path is not None for it in items),
        wall_seconds=wall_seconds,
        estimated_cost_usd=round(cost, 4),
        earlier=sum(it.earlier for it in items),
    )


Requests = (
    Iterable[VideoRequest | Mapping[str, Any]] | Mapping[Any, VideoRequest | Mapping[str, Any]]
)
"""A batch's requests: a list (keys are indexes) or a mapping of keys to requests, each
a `VideoRequest` or its fields."""


def request_pairs(requests: Requests) -> list[tuple[Any, VideoRequest]]:
    """``(key, request)`` of each of a batch's requests, in order, fields made requests."""
    pairs: Iterable[tuple[Any, Any]]
    pairs = requests.items() if isinstance(requests, Mapping) else enumerate(requests)
    out = []
    for key, req in pairs:
        out.append((key, req if isinstance(req, VideoRequest) else VideoRequest(**req)))
    return out


def usage_of(rec: SubmissionRecord) -> Usage | None:
    """The usage a journal record stored with its result (``None``: none, or damaged)."""
    data = (rec.result or {}).get("usage")
    if not isinstance(data, Mapping):
        return None
    try:
        return journal_structure(data, Usage)  # _wire: the journal's stored shape
    except Exception:  # a damaged record's usage: unknown, as if none was stored
        return None


def record_cost(rec: SubmissionRecord) -> float:
    """What one journal record billed or may still bill, for a budget."""
    S = SubmissionState
    if rec.state is S.NEW or (rec.state is S.FAILED and rec.task_id is None):
        return 0.0
    try:
        req = rec.video_request()
    except (WanError, TypeError):
        return 0.0
    if rec.state is S.FAILED:
        return 0.0  # failed tasks are free
    if rec.state in (S.SUCCEEDED, S.DOWNLOADED):
        billed = req.billed_cost_usd(usage_of(rec))
        return billed if billed is not None else req.estimated_cost_usd()
    return req.estimated_cost_usd()  # a task made, or maybe made: it may bill
