"""Bounded under hostile servers: every case ends in a typed WanError, soon, in little
memory, and the key shows nowhere.

Each test serves the emulator on 127.0.0.1 with one of its hostile fault kinds
(``FaultKind.ENDLESS_BODY``, ``TRICKLE``, ``ECHO_HEADERS``, ``REPEAT_PAGE``,
``HUGE_ANSWER``) and a client with small timeouts, so each case ends in seconds. The
bounds documented in docs/errors.md scale from these: a deadline of ``timeout``
seconds per exchange, ``max_response_bytes`` per answer, ``max_pages`` per listing.
"""

from __future__ import annotations

import builtins
import logging
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from wanr2v import (
    APIError,
    AsyncWanClient,
    BadRequestError,
    DownloadError,
    InvalidRequestError,
    QuotaExhaustedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    SubmitOutcomeUnknownError,
    TransportError,
    WanError,
)
from wanr2v._http import task_segment
from wanr2v.testing import EmulatorConfig, FaultRule, serve
from wanr2v.testing._client import client_for
from wanr2v.testing._emulator import Emulator

# Stopping mid-body leaves httpx's and httpcore's nested body generators to the garbage
# collector, and trio's finalizer says so with a ResourceWarning (asyncio closes them
# quietly). The connection itself is closed at once; only the warning is ignored here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator:pytest.PytestUnraisableExceptionWarning"
)

SECRET = "sk-hostile-SECRET-9a8b7c6d5e4f3a2b"
PROMPT = "character1 stands in the rain"
REFS = ["https://cdn.example.com/me.mp4"]
MB = 1024 * 1024
MEMORY_BOUND = 200 * MB


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    """One loopback emulator for the module (60x time, tasks of about a second)."""
    config = EmulatorConfig(time_scale=60.0, seed=17, generation_time=(30.0, 60.0))
    with serve(config) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def clean(emu: Emulator) -> Iterator[None]:
    """Every test starts with no faults and no tasks."""
    emu.reset()
    emu.faults.clear()
    yield
    emu.faults.clear()


def hostile_client(emu: Emulator, **kw: object) -> AsyncWanClient:
    """A client with the key SECRET, a 1 s deadline and one retry (tests stay short)."""
    options: dict[str, object] = {"timeout": 1.0, "max_retries": 1, "reconcile_grace": 0.1}
    options.update(kw)
    return client_for(emu, api_key=SECRET, **options)  # type: ignore[arg-type]


class Bounded:
    """Measures one case: wall time and the peak of Python allocations."""

    def __enter__(self) -> Bounded:
        tracemalloc.start()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.started
        _, self.peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()


def files_in(folder: Path) -> list[Path]:
    """The files in ``folder`` (hidden ``.part`` files included)."""
    return sorted(folder.iterdir())


def sent(emu: Emulator, endpoint: str) -> int:
    """Requests the emulator answered (or dropped) at ``endpoint``."""
    return sum(emu.stats().requests.get(endpoint, {}).values())


def assert_no_secret(*texts: object) -> None:
    """The key appears in none of ``texts``."""
    for text in texts:
        assert SECRET not in str(text)


def error_texts(exc: BaseException) -> list[str]:
    """Everything an error shows: str, repr, notes, and the same of its causes."""
    out: list[str] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        out += [str(e), repr(e), *getattr(e, "__notes__", ())]
        out += [str(getattr(e, name, "")) for name in ("message", "code", "request_id")]
        e = e.__cause__ or e.__context__
    return out


@pytest.mark.anyio
async def test_an_endless_answer_stops_at_the_size_cap(emu: Emulator) -> None:
    """A query answered with an endless chunked body: ResponseTooLargeError at the cap,
    in well under a second, with a few MB of memory at most."""
    emu.faults.add(FaultRule(kind="endless_body", endpoint="query"))
    async with hostile_client(emu, max_response_bytes=MB) as client:
        with Bounded() as b, pytest.raises(ResponseTooLargeError) as info:
            await client.fetch("some-task-id")
    assert info.value.limit == MB and isinstance(info.value, TransportError)
    assert b.seconds < 5 and b.peak < MEMORY_BOUND
    assert b.peak < 20 * MB  # the cap holds: not a copy of the stream


@pytest.mark.anyio
async def test_a_huge_answer_is_refused_from_its_content_length(emu: Emulator) -> None:
    """A 100 MB JSON answer is refused before its body is read (Content-Length says it)."""
    emu.faults.add(FaultRule(kind="huge_answer", endpoint="query", size=100_000_000))
    async with hostile_client(emu) as client:
        with Bounded() as b, pytest.raises(ResponseTooLargeError) as info:
            await client.fetch("some-task-id")
    assert "100000000" in str(info.value)
    assert b.seconds < 5 and b.peak < 20 * MB


@pytest.mark.anyio
async def test_a_trickled_answer_ends_at_the_deadline(emu: Emulator) -> None:
    """One byte every 0.3 s never trips a read timeout; the exchange deadline (1 s) does:
    RequestTimeoutError, which is also the builtin TimeoutError, after every retry."""
    emu.faults.add(FaultRule(kind="trickle", endpoint="query", delay=0.3))
    async with hostile_client(emu, max_retries=1) as client:
        with Bounded() as b, pytest.raises(RequestTimeoutError) as info:
            await client.fetch("some-task-id")
    assert isinstance(info.value, builtins.TimeoutError) and info.value.maybe_sent
    assert 1.5 <= b.seconds < 2 * 1.0 + 2.5  # two attempts of 1 s, plus a backoff
    assert emu.faults.fired()["trickle"] == 2


@pytest.mark.anyio
async def test_a_trickled_create_is_awaited_at_most_the_deadline_then_reconciled(
    emu: Emulator,
) -> None:
    """The create is carried out but its answer trickles: after the 1 s deadline the
    outcome is unknown, reconciliation finds the task, and nothing is sent twice."""
    emu.faults.add(FaultRule(kind="trickle", endpoint="create", count=1, delay=0.5))
    async with hostile_client(emu) as client:
        with Bounded() as b:
            task = await client.async_call(
                model="wan2.6-r2v-flash", prompt=PROMPT, reference_urls=REFS
            )
    stats = emu.stats()
    assert stats.tasks_created == 1 and stats.duplicate_creates == 0
    assert task.task_id == emu.task_records()[0].task_id
    assert b.seconds < 5


@pytest.mark.anyio
async def test_a_cancelled_trickled_create_returns_within_the_deadline(emu: Emulator) -> None:
    """A caller's move_on_after during a shielded create waits at most the deadline;
    the create whose outcome is unknown is kept in ``client.unresolved``."""
    emu.faults.add(FaultRule(kind="trickle", endpoint="create", count=1, delay=1.0))
    async with hostile_client(emu, timeout=1.5) as client:
        started = time.monotonic()
        with anyio.move_on_after(0.2):
            await client.async_call(model="wan2.6-r2v-flash", prompt=PROMPT, reference_urls=REFS)
        waited = time.monotonic() - started
    assert waited < 1.5 + 1.0
    assert len(client.unresolved) == 1
    assert emu.stats().tasks_created == 1


@pytest.mark.anyio
async def test_an_echoed_key_appears_in_no_error_and_no_log(
    emu: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 whose message echoes the request's headers: a BadRequestError whose text,
    notes and log lines hold no key (the rest of the echo is kept)."""
    emu.faults.add(FaultRule(kind="echo_headers", endpoint="create"))
    caplog.set_level(logging.DEBUG, logger="wanr2v")
    async with hostile_client(emu) as client:
        with pytest.raises(BadRequestError) as info:
            await client.async_call(model="wan2.6-r2v-flash", prompt=PROMPT, reference_urls=REFS)
    assert "user-agent" in info.value.message.lower()  # the echo is there, scrubbed
    assert "Bearer ***" in info.value.message
    assert_no_secret(*error_texts(info.value), caplog.text)


@pytest.mark.anyio
async def test_a_key_echoed_in_a_200_is_never_passed_on(emu: Emulator) -> None:
    """A 200 whose body echoes the headers (not a task): the malformed-answer error
    quotes the body, with the key replaced."""
    emu.faults.add(FaultRule(kind="echo_headers", endpoint="query", status=200))
    async with hostile_client(emu) as client:
        with pytest.raises(APIError) as info:
            await client.fetch("some-task-id")
    assert info.value.code == "MalformedResponse" and "authorization" in str(info.value).lower()
    assert_no_secret(*error_texts(info.value))


@pytest.mark.anyio
async def test_an_echoed_key_reaches_no_journal_byte(emu: Emulator, tmp_path: Path) -> None:
    """A journaled batch whose creates are answered with the echo: every item fails with
    a typed error and the journal files hold no byte of the key."""
    from wanr2v.journal import SQLiteJournal

    emu.faults.add(FaultRule(kind="echo_headers", endpoint="create"))
    db = tmp_path / "batch.db"
    journal = await SQLiteJournal.open(db, secrets=[SECRET])
    async with hostile_client(emu) as client, journal:
        items = await client.run_many(
            [
                {"model": "wan2.6-r2v-flash", "prompt": f"{PROMPT} {i}", "reference_urls": REFS}
                for i in range(3)
            ],
            journal=journal,
        )
    assert all(isinstance(it.error, BadRequestError) for it in items) and len(items) == 3
    for path in files_in(tmp_path):
        assert SECRET.encode() not in path.read_bytes()


@pytest.mark.anyio
async def test_a_lost_create_and_a_repeating_list_end_in_an_unknown_outcome(
    emu: Emulator,
) -> None:
    """The create's answer is lost and the task list repeats one full page forever:
    reconciliation stops at the repeat (two list pages), nothing is sent again, and the
    caller gets SubmitOutcomeUnknownError."""
    emu.faults.add(FaultRule(kind="drop_after_commit", endpoint="create", count=1))
    emu.faults.add(FaultRule(kind="repeat_page", endpoint="list"))
    async with hostile_client(emu) as client:
        with Bounded() as b, pytest.raises(SubmitOutcomeUnknownError) as info:
            await client.async_call(model="wan2.6-r2v-flash", prompt=PROMPT, reference_urls=REFS)
    assert "repeated" in info.value.message
    assert isinstance(info.value.__cause__, APIError)
    stats = emu.stats()
    assert stats.tasks_created == 1 and sent(emu, "list") <= 4
    assert b.seconds < 5 and b.peak < 20 * MB


@pytest.mark.anyio
async def test_a_listing_is_bounded_in_pages(emu: Emulator) -> None:
    """``max_pages`` bounds a listing; a longer one raises instead of passing for whole."""
    async with hostile_client(emu) as client:
        for i in range(3):
            await client.async_call(model="wan2.6-r2v-flash", prompt=f"p{i}", reference_urls=REFS)
        rows = [r async for r in client.list_tasks(page_size=1, max_pages=3)]
        assert len(rows) == 3
        with pytest.raises(APIError, match="max_pages=2"):
            _ = [r async for r in client.list_tasks(page_size=1, max_pages=2)]


@pytest.mark.anyio
async def test_an_endless_video_stops_at_the_video_cap_and_leaves_no_file(
    emu: Emulator, tmp_path: Path
) -> None:
    """The video host sends an endless body: DownloadError at ``max_video_bytes``, and
    neither the video nor a ``.part`` file is left."""
    async with hostile_client(emu, max_video_bytes=2 * MB) as client:
        result = await client.call(model="wan2.6-r2v-flash", prompt=PROMPT, reference_urls=REFS)
        emu.faults.add(FaultRule(kind="endless_body", endpoint="video"))
        with Bounded() as b, pytest.raises(DownloadError, match="max_video_bytes"):
            await client.download(result, tmp_path)
    assert files_in(tmp_path) == []
    assert b.seconds < 5 and b.peak < 50 * MB


@pytest.mark.anyio
async def test_a_quota_429_that_does_not_clear_is_not_retried(emu: Emulator) -> None:
    """429 "Free allocated quota exceeded" is raised at once as QuotaExhaustedError (one
    create sent); an ordinary 429 is still retried."""
    emu.faults.add(
        FaultRule(
            kind="throttle",
            endpoint="create",
            count=3,
            code="Throttling.AllocationQuota",
            message="Free allocated quota exceeded.",
        )
    )
    async with hostile_client(emu, max_retries=2) as client:
        with pytest.raises(QuotaExhaustedError) as info:
            await client.async_call(model="wan2.6-r2v-flash", prompt=PROMPT, reference_urls=REFS)
        assert isinstance(info.value, RateLimitError)
        assert client.statistics().requests["create"] == 1
        emu.faults.clear()
        emu.faults.add(FaultRule(kind="throttle", endpoint="create", count=1, retry_after=0.1))
        await client.async_call(model="wan2.6-r2v-flash", prompt=PROMPT, reference_urls=REFS)
        assert client.statistics().requests["create"] == 3


def test_task_ids_are_one_escaped_path_segment() -> None:
    """A task id cannot climb out of ``tasks/``: ``/`` is escaped, ``..`` refused."""
    assert task_segment("0385dc79-5ff8-4d82-bcb6-7b1f1a2c3d4e") == (
        "0385dc79-5ff8-4d82-bcb6-7b1f1a2c3d4e"
    )
    assert task_segment("../uploads?action=getPolicy") == "..%2Fuploads%3Faction%3DgetPolicy"
    for bad in ("..", ".", "", "a\nb", "x" * 300):
        with pytest.raises(InvalidRequestError):
            task_segment(bad)


@pytest.mark.anyio
async def test_a_crafted_task_id_reaches_no_other_path(emu: Emulator) -> None:
    """``fetch("../uploads?...")`` stays under ``tasks/``: the upload policy route is
    never reached (the service sees one odd task path and refuses it)."""
    async with hostile_client(emu, max_retries=0) as client:
        with pytest.raises(WanError):
            await client.fetch("../uploads?action=getPolicy&model=wan2.6-r2v-flash")
        with pytest.raises(InvalidRequestError):
            await client.fetch("..")
    assert sent(emu, "policy") == 0


def test_a_group_collapses_to_its_first_meaningful_error() -> None:
    """KeyboardInterrupt first, then an unknown outcome (money), then any WanError, then
    anything else; the others become notes; a group of cancellations stays a group."""
    from wanr2v._exceptions import collapse_group

    unknown = SubmitOutcomeUnknownError("maybe paid", fingerprint="f")
    other = BadRequestError("bad", status_code=400)
    plain = ValueError("plain")
    group = BaseExceptionGroup("g", [plain, ExceptionGroup("inner", [other, unknown])])
    chosen = collapse_group(group)
    assert chosen is unknown
    assert unknown.__notes__ == ["also: ValueError: plain", "also: BadRequestError: HTTP 400: bad"]
    interrupt = KeyboardInterrupt()
    assert collapse_group(BaseExceptionGroup("g", [ValueError("x"), interrupt])) is interrupt
    cancelled = BaseExceptionGroup("g", [GeneratorExit()])
    assert collapse_group(cancelled) is cancelled


def test_the_emulator_serves_a_huge_answer_as_asked(emu: Emulator) -> None:
    """HUGE_ANSWER (set through the admin route's JSON) sends exactly ``size`` bytes of
    JSON with their Content-Length."""
    import httpx

    admin = emu.base_url.replace("/api/v1", "/_emulator/faults")
    rule = {"kind": "huge_answer", "endpoint": "query", "size": 5000, "count": 1}
    assert httpx.post(admin, json=rule).status_code == 200
    answer = httpx.get(f"{emu.base_url}/tasks/t-1", headers={"Authorization": f"Bearer {SECRET}"})
    assert answer.status_code == 200 and answer.headers["content-length"] == "5000"
    assert len(answer.content) == 5000 and answer.json()["pad"].startswith("aaa")


@pytest.mark.anyio
async def test_in_process_a_hostile_kind_drops_the_connection(emu: Emulator) -> None:
    """Without a socket there is nothing to misbehave on: the request fails as a drop."""
    emu.faults.add(FaultRule(kind="endless_body", endpoint="query", count=1))
    async with client_for(emu, api_key=SECRET, in_process=True, max_retries=0) as client:
        with pytest.raises(TransportError):
            await client.fetch("t-1")
