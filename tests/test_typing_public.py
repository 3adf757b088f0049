"""The public API as a type checker sees it (checked by ``mypy --strict`` and pyright).

Most of this file is never run: the ``_uses_*`` coroutines exist to be type-checked.
``assert_type`` pins what each call returns, and each ``# type: ignore[code]`` marks a
misuse the checker must catch: under ``--strict`` (``warn_unused_ignores``) an ignore
that is no longer needed is itself an error, so a loosened signature fails the check.
The few tests at the bottom run, and check the same facts lightly at runtime.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, assert_type

import pytest

import wanr2v
from wanr2v import (
    APIError,
    AsyncWanClient,
    ClientStatistics,
    DownloadError,
    Governor,
    GovernorStatistics,
    InvalidRequestError,
    Limits,
    PollPolicy,
    QuotaExhaustedError,
    RateLimitError,
    RateStatistics,
    RequestTimeoutError,
    ResponseTooLargeError,
    ResultExpiredError,
    RetryPolicy,
    SchedulerStatistics,
    SubmitOutcomeUnknownError,
    Task,
    TaskError,
    TaskEvent,
    TaskFailedError,
    TaskResult,
    TaskStatus,
    TaskSummary,
    TransportError,
    Usage,
    VideoRequest,
    WaitTimeoutError,
    WanError,
    raise_for_status,
)
from wanr2v.journal import JournalStore, SQLiteJournal, SubmissionRecord, SubmissionState

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

REQUEST = VideoRequest(
    model="wan2.6-r2v-flash",
    prompt="character1 waves at character2",
    reference_urls=["https://cdn.example.com/me.mp4", Path("dog.png")],
    size="1280*720",
    duration=5,
)


async def _uses_client() -> None:
    """The verbs: what they take and what they give back."""
    async with AsyncWanClient(
        api_key="sk-typing",
        region="singapore",
        timeout=10.0,
        max_retries=2,
        limits=Limits(max_in_flight=10),
        poll_policy=PollPolicy(max_interval=20.0),
        retry_policy=RetryPolicy(initial=1.0),
    ) as client:
        assert_type(client, AsyncWanClient)
        assert_type(client.region, str)
        assert_type(client.base_url, str)

        task = await client.async_call(REQUEST)
        assert_type(task, Task)
        task2 = await client.async_call(
            model="wan2.6-r2v", prompt="character1 bows", reference_urls=["a.mp4"]
        )
        assert_type(task2.task_id, str)
        assert_type(task2.status, TaskStatus)

        result = await client.fetch(task)
        assert_type(result, TaskResult)
        assert_type(await client.fetch(task.task_id), TaskResult)
        assert_type(await client.wait(task, timeout=60.0), TaskResult)
        assert_type(await client.wait(result, raise_on_failure=False), TaskResult)
        assert_type(await client.call(REQUEST), TaskResult)
        assert_type(result.status.is_final, bool)
        assert_type(result.video_url, str | None)
        assert_type(result.usage, Usage | None)
        assert_type(raise_for_status(result), TaskResult)
        assert_type(await client.download(result, "videos"), Path)
        assert_type(await client.download(task, Path("out") / "a.mp4"), Path)
        assert_type(await client.cancel(task), None)

        rows = client.list_tasks(model="wan2.6-r2v-flash", status=TaskStatus.SUCCEEDED)
        assert_type(rows, AsyncIterator[TaskSummary])
        async for row in rows:
            assert_type(row.status, TaskStatus)

        stats = client.statistics()
        assert_type(stats, ClientStatistics)
        assert_type(stats.governor, GovernorStatistics)
        assert_type(stats.governor.rates["create"], RateStatistics)
        assert_type(stats.scheduler, SchedulerStatistics)
        assert_type(stats.rate_limited, int)

        # Misuse the checker must catch.
        await client.fetch(42)  # type: ignore[arg-type]
        await client.wait(task, timeout="soon")  # type: ignore[arg-type]
        await client.async_call("not a request")  # type: ignore[arg-type]
        await client.download(result, 7)  # type: ignore[call-overload]


async def _uses_batches(client: AsyncWanClient, journal: SQLiteJournal) -> None:
    """run_many / as_completed / resume, with a journal."""
    items = await client.run_many([REQUEST], journal=journal, download_to="videos")
    for item in items:
        assert_type(item.ok, bool)
        assert_type(item.result, TaskResult | None)
        assert_type(item.error, BaseException | None)
        assert_type(item.path, Path | None)
    # A literal mixing requests and field dicts needs its type spelled out (mypy would
    # infer dict[str, object]).
    mixed: dict[str, VideoRequest | Mapping[str, Any]] = {
        "intro": REQUEST,
        "outro": {"model": "wan2.6-r2v", "prompt": "character1 bows", "reference_urls": ["a.mp4"]},
    }
    by_key = await client.run_many(mixed)
    assert_type(by_key[0].key, Any)
    async with client.as_completed([REQUEST], on_cancel="cancel_pending") as results:
        async for item in results:
            assert_type(item.task, Task | None)
    assert_type(await client.resume(journal), list[wanr2v.BatchItem])
    await client.run_many([REQUEST], on_cancel="abandon")  # type: ignore[arg-type]


async def _uses_events(client: AsyncWanClient) -> None:
    """Callbacks and streams of lifecycle events."""

    def on_event(event: TaskEvent) -> None:
        kind: str = event.kind  # a Literal of the event kinds
        assert kind
        assert_type(event.task_id, str)
        assert_type(event.result, TaskResult | None)

    unsubscribe = client.subscribe(on_event)
    assert_type(unsubscribe, Callable[[], None])
    cm = client.event_stream()
    assert_type(cm, AbstractAsyncContextManager["MemoryObjectReceiveStream[TaskEvent]"])
    async with cm as events:
        async for event in events:
            assert_type(event, TaskEvent)

    def takes_nothing() -> None: ...

    client.subscribe(takes_nothing)  # type: ignore[arg-type]


async def _uses_governor() -> None:
    """One governor shared by two clients of one account."""
    governor = Governor(Limits(query_share=0.5))
    async with AsyncWanClient(governor=governor) as a, AsyncWanClient(governor=governor) as b:
        assert a.governor is b.governor
    async with governor.task_slot():
        pass
    assert_type(governor.statistics(), GovernorStatistics)
    Limits(max_in_flight="5")  # type: ignore[arg-type]


async def _uses_journal(path: str) -> None:
    """The journal seam: SQLiteJournal is a JournalStore."""
    async with SQLiteJournal(path, secrets=["sk-typing"]) as journal:
        store: JournalStore = journal
        record = await store.add(SubmissionRecord.new("line-1", REQUEST))
        assert_type(record.state, SubmissionState)
        assert_type(await store.get(record.submission_id), SubmissionRecord | None)
        assert_type(await store.counts(), dict[SubmissionState, int])
        assert_type(await store.known_task_ids(), set[str])


def _uses_errors(exc: Exception) -> None:
    """The error tree's attributes: each one declared, with its type (no ``getattr``)."""
    assert_type(exc.message if isinstance(exc, WanError) else "", str)
    if isinstance(exc, RateLimitError):
        assert_type(exc.retry_after, float | None)
        assert_type(exc.status_code, int)
    if isinstance(exc, QuotaExhaustedError):
        assert isinstance(exc, RateLimitError)
        assert_type(exc.retry_after, float | None)
    if isinstance(exc, APIError):
        assert_type(exc.status_code, int)
        assert_type(exc.code, str | None)
        assert_type(exc.message, str)
        assert_type(exc.request_id, str | None)
        assert_type(exc.task_id, str | None)
    if isinstance(exc, InvalidRequestError):
        assert_type(exc.field, str | None)
    if isinstance(exc, TransportError):
        assert_type(exc.maybe_sent, bool)
        assert_type(exc.method, str | None)
        assert_type(exc.url, str | None)
        assert_type(exc.request_id, str | None)
    if isinstance(exc, RequestTimeoutError):
        assert isinstance(exc, TimeoutError)  # the builtin: ``except TimeoutError`` works
    if isinstance(exc, ResponseTooLargeError):
        assert_type(exc.limit, int)
    if isinstance(exc, SubmitOutcomeUnknownError):
        assert_type(exc.candidates, tuple[str, ...])
        assert_type(exc.fingerprint, str)
        assert_type(exc.submission_id, str | None)
        assert_type(exc.sent_at, float | None)
        assert_type(exc.cause, BaseException | None)
        assert_type(exc.evolve(candidates=["t-1"]), SubmitOutcomeUnknownError)
    if isinstance(exc, WaitTimeoutError):
        assert_type(exc.task_id, str)
        assert_type(exc.last_status, str | None)
    if isinstance(exc, TaskError):
        assert_type(exc.task_id, str)
        assert_type(exc.status, str)
        assert_type(exc.code, str | None)
        assert_type(exc.request_id, str | None)
        assert_type(exc.result, TaskResult | None)
    if isinstance(exc, TaskFailedError):
        assert isinstance(exc, TaskError) and isinstance(exc, WanError)
    if isinstance(exc, (DownloadError, ResultExpiredError)):
        assert_type(exc.task_id, str | None)
    if isinstance(exc, APIError):
        print(exc.candidates)  # type: ignore[attr-defined]  # only an unknown outcome has them


def _uses_requests() -> None:
    """VideoRequest's fields are typed (attrs)."""
    assert_type(REQUEST.duration, int | None)
    assert_type(REQUEST.estimated_cost_usd(), float)
    VideoRequest(model="wan2.6-r2v", prompt="p", reference_urls=["a.mp4"], duration="5")  # type: ignore[arg-type]
    VideoRequest(prompt="p", reference_urls=["a.mp4"])  # type: ignore[call-arg]


def _uses_testing() -> None:
    """The emulator's public surface."""
    from wanr2v.testing import (
        Emulator,
        EmulatorConfig,
        EmulatorStats,
        Endpoint,
        FaultKind,
        FaultRule,
        Quotas,
        serve,
    )

    config = EmulatorConfig(api_keys=["sk-a"], quotas=Quotas(running=2), time_scale=60.0)
    with serve(config) as emulator:
        assert_type(emulator, Emulator)
        assert_type(emulator.base_url, str)
        assert_type(
            emulator.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.QUERY)), int
        )
        stats = emulator.stats()
        assert_type(stats, EmulatorStats)
        assert_type(stats.duplicate_creates, int)
        assert_type(stats.requests, Mapping[str, Mapping[int, int]])


# --- what runs ------------------------------------------------------------------------


def test_public_names_are_importable() -> None:
    """Every name in ``wanr2v.__all__`` exists and says it is ``wanr2v``'s."""
    for name in wanr2v.__all__:
        obj = getattr(wanr2v, name)
        if isinstance(obj, type):
            assert obj.__module__ == "wanr2v", name


def test_misuse_also_fails_at_runtime() -> None:
    """What the checker catches statically is refused at runtime too, before sending."""
    with pytest.raises(InvalidRequestError) as info:
        VideoRequest(model="wan2.6-r2v", prompt="p", reference_urls=["a.mp4"], duration=30)
    assert info.value.field == "parameters.duration"
    with pytest.raises(ValueError):
        Limits(max_in_flight=0)


def test_sqlite_journal_satisfies_the_protocol() -> None:
    """SQLiteJournal is a runtime-checkable JournalStore."""
    journal = SQLiteJournal(":memory:")
    assert isinstance(journal, JournalStore)


def test_client_types_at_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client built from the environment has the documented attribute types."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-typing-0123456789")
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL", raising=False)
    monkeypatch.delenv("DASHSCOPE_REGION", raising=False)
    client = AsyncWanClient()
    assert isinstance(client.region, str) and isinstance(client.base_url, str)
    assert "0123456789" not in repr(client)
    assert isinstance(client.statistics(), ClientStatistics)
    with contextlib.suppress(Exception):
        os.fspath(REQUEST.reference_urls[1])
    assert isinstance(SubmitOutcomeUnknownError("x", fingerprint="f"), WanError)


def test_errors_are_built_whole() -> None:
    """Every documented attribute is set by the constructor (none patched on later);
    RequestTimeoutError is the builtin TimeoutError; the old name only warns."""
    timeout = RequestTimeoutError("slow", method="GET", url="https://x/api/v1/tasks/t")
    assert isinstance(timeout, TimeoutError) and isinstance(timeout, TransportError)
    assert (timeout.maybe_sent, timeout.method, timeout.request_id) == (True, "GET", None)
    unknown = SubmitOutcomeUnknownError("lost", fingerprint="f", candidates=["a"])
    richer = unknown.evolve(candidates=["a", "b"], detail="Two candidates.")
    assert unknown.candidates == ("a",) and richer.candidates == ("a", "b")
    assert richer.message == "lost Two candidates." and richer is not unknown
    assert "TimeoutError" not in wanr2v.__all__
    with pytest.warns(DeprecationWarning, match="RequestTimeoutError"):
        assert wanr2v.TimeoutError is RequestTimeoutError
