"""What the emulator tells about itself: frozen, thread-safe snapshots."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["Answer", "EmulatorStats", "HostRequest", "TaskRecord"]


@attrs.frozen
class Answer:
    """An HTTP answer: status, body (a dict is sent as JSON), extra headers."""

    status: int
    body: Any = None
    headers: tuple[tuple[str, str], ...] = ()
    media_type: str = "application/json"


@attrs.frozen(kw_only=True)
class EmulatorStats:
    """Counters of one emulator since it started (or was reset).

    Attributes:
        requests: Answers given, by endpoint (``create``, ``query``, ``list``,
            ``cancel``, ``policy``, ``upload``, ``video``, ``other``) then HTTP status.
            A dropped connection counts under status 0.
        total_requests: Sum of ``requests``.
        throttled: 429 answers issued (quotas and injected faults).
        tasks_created: Tasks created (every create that answered 200, or was
            committed before a dropped connection).
        duplicate_creates: Creates whose model, input and parameters equal an
            earlier create's (canonical JSON): money a client wasted.
        tasks_by_status: Tasks by their status now.
        faults_injected: Injected faults, by kind.
        emulator_time: The emulator clock when the snapshot was taken.
    """

    requests: Mapping[str, Mapping[int, int]]
    total_requests: int
    throttled: int
    tasks_created: int
    duplicate_creates: int
    tasks_by_status: Mapping[str, int]
    faults_injected: Mapping[str, int]
    emulator_time: float

    def count(self, endpoint: str, status: int | None = None) -> int:
        """Return the answers given at ``endpoint`` (with ``status``, if given)."""
        by_status = self.requests.get(endpoint, {})
        if status is None:
            return sum(by_status.values())
        return by_status.get(status, 0)


@attrs.frozen(kw_only=True)
class TaskRecord:
    """The life of one task, in emulator seconds since the epoch.

    Attributes:
        task_id: The task id.
        region: The region that holds it.
        account: The account that created it.
        model: The model name.
        submit_time: When the create was accepted.
        scheduled_time: When it started running (``None``: not yet, or never).
        end_time: When it ended or is due to end (``None``: still queued).
        generation_time: Emulator seconds of generation drawn for it.
        status: Its status now.
        final_status: Its final status once reached, else ``None``.
        code: Error code of a FAILED task.
        message: Error message of a FAILED task.
        first_final_query: Emulator time a query first saw it final.
        first_final_query_monotonic: ``time.monotonic()`` at that query.
        duplicate: Whether its create repeated an earlier create.
    """

    task_id: str
    region: str
    account: str
    model: str
    submit_time: float
    scheduled_time: float | None
    end_time: float | None
    generation_time: float
    status: str
    final_status: str | None
    code: str | None
    message: str | None
    first_final_query: float | None
    first_final_query_monotonic: float | None
    duplicate: bool


@attrs.frozen(kw_only=True)
class HostRequest:
    """One request seen by the upload host or the video host.

    Attributes:
        host: ``"upload"`` or ``"video"``.
        method: The HTTP method.
        path: The path, without the query string.
        headers: The request headers, names in lower case, in arrival order.
        emulator_time: When it arrived.
    """

    host: str
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    emulator_time: float

    def header(self, name: str) -> str | None:
        """Return the first value of header ``name`` (case-insensitive), or ``None``."""
        lowered = name.lower()
        for key, value in self.headers:
            if key == lowered:
                return value
        return None
