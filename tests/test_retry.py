"""One retry policy: the rule of what may be sent again, the backoff, and the client's
``retry_policy`` (and ``with_options(max_retries=...)``) reaching uploads and downloads.

The reach is shown on the emulator's upload and video hosts with injected 503s: a policy
with no retries fails on the first, the default one retries and succeeds, and
``max_retries=3`` survives three in a row but not four."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest

import wanr2v
from wanr2v import AsyncWanClient, RetryPolicy, _retry
from wanr2v._demo import make_png
from wanr2v._exceptions import ConnectError, RequestTimeoutError
from wanr2v._retry import retryable_error, retryable_status
from wanr2v.testing import (
    Emulator,
    EmulatorConfig,
    Endpoint,
    FaultKind,
    FaultRule,
    ManualClock,
    Quotas,
    make_mp4,
)

pytestmark = pytest.mark.anyio

MODEL = "wan2.6-r2v-flash"
KEY = "sk-retry-reach-0123456789"
FAST = RetryPolicy(max_retries=3, initial=0.001, maximum=0.002)
"""Three retries, without the backoff's real waiting."""
HANG_BOUND = 60.0
"""Seconds after which a test is stuck (a bound on hangs, never a timing claim)."""


# --- the rule and the backoff ---------------------------------------------------------------


def test_public_policy_is_the_one_policy_with_its_defaults() -> None:
    """``wanr2v.RetryPolicy`` is the ``_retry`` one; its public fields and defaults hold."""
    assert wanr2v.RetryPolicy is _retry.RetryPolicy
    assert RetryPolicy() == RetryPolicy(
        max_retries=4, initial=0.5, maximum=20.0, max_retry_after=60.0
    )


@pytest.mark.parametrize(
    ("status", "create", "expected"),
    [
        *[(s, False, True) for s in (429, 500, 502, 503, 504)],
        *[(s, False, False) for s in (400, 401, 403, 404, 409, 501, 505)],
        *[(s, True, True) for s in (429, 503)],
        *[(s, True, False) for s in (400, 500, 502, 504)],
    ],
)
def test_which_answers_are_retried(status: int, create: bool, expected: bool) -> None:
    """429 and 500/502/503/504 are retried; a create only on 429 or 503 (nothing made)."""
    assert retryable_status(status, create=create) is expected


def test_a_create_that_may_have_been_sent_is_never_retried() -> None:
    """A broken exchange is retried, except a create that may have reached the service."""
    refused = ConnectError("refused", method="POST", url="u", maybe_sent=False)
    timed_out = RequestTimeoutError("timeout", method="POST", url="u")
    assert timed_out.maybe_sent
    assert retryable_error(refused, create=True)
    assert not retryable_error(timed_out, create=True)
    assert retryable_error(timed_out, create=False)
    assert retryable_error(refused, create=False)


def test_backoff_honours_retry_after_and_its_cap() -> None:
    """Retry-After wins (capped at max_retry_after); else jittered doubling up to maximum."""
    policy = RetryPolicy(initial=1.0, maximum=5.0, max_retry_after=7.0)
    assert policy.backoff(0, 3.0) == 3.0
    assert policy.backoff(0, 100.0) == 7.0
    assert policy.backoff(0, -1.0) == 0.0
    for attempt, bound in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 5.0), (9, 5.0)]:
        delays = [policy.backoff(attempt, None) for _ in range(200)]
        assert all(bound / 2 <= d <= bound for d in delays), (attempt, min(delays), max(delays))


# --- the client's policy reaches the upload and video hosts ----------------------------------


@pytest.fixture
def emu() -> Emulator:
    """An in-process emulator on a manual clock: quotas off, 10 s generation."""
    return Emulator(
        EmulatorConfig(
            clock=ManualClock(start=1_750_000_000.0),
            quotas=Quotas.off(),
            seed=5,
            generation_time=(10.0, 10.0),
        )
    )


@asynccontextmanager
async def client_on(emu: Emulator, **kwargs: Any) -> AsyncIterator[AsyncWanClient]:
    async with (
        httpx.AsyncClient(transport=emu.transport(), timeout=30.0) as http,
        AsyncWanClient(
            api_key=KEY,
            base_url=emu.base_url,
            http_client=http,
            allow_insecure=True,  # nothing leaves the process
            reconcile=False,
            **kwargs,
        ) as client,
    ):
        yield client


async def finished_task(emu: Emulator) -> str:
    """A SUCCEEDED task made by hand (no client involved), its id."""
    async with httpx.AsyncClient(transport=emu.transport()) as http:
        response = await http.post(
            f"{emu.base_url}/services/aigc/video-generation/video-synthesis",
            json={
                "model": MODEL,
                "input": {
                    "prompt": "character1 dances",
                    "reference_urls": ["https://cdn.example/a.mp4"],
                },
                "parameters": {"duration": 3},
            },
            headers={"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"},
        )
    assert response.status_code == 200, response.text
    emu.advance(60.0)
    return cast(str, response.json()["output"]["task_id"])


def answers(emu: Emulator, host: str) -> dict[int, int]:
    """How many answers of each status the emulator's ``upload`` or ``video`` host gave."""
    return dict(emu.stats().requests.get(host, {}))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def unavailable(endpoint: Endpoint, count: int) -> FaultRule:
    return FaultRule(kind=FaultKind.UNAVAILABLE, endpoint=endpoint, count=count)


async def download_by(client: AsyncWanClient, task_id: str, how: str, folder: Path) -> bytes:
    """The video through one of the client's three ways of getting it."""
    result = await client.fetch(task_id)
    with anyio.fail_after(HANG_BOUND):
        if how == "path":
            path = await client.download(result, folder)
            return path.read_bytes()
        if how == "file":
            sink = io.BytesIO()
            await client.download(result, sink)
            return sink.getvalue()
        async with client.stream_video(result) as chunks:
            return b"".join([chunk async for chunk in chunks])


HOW = ["path", "file", "stream"]


@pytest.mark.parametrize("how", HOW)
async def test_no_retries_fail_on_the_first_503_of_a_download(
    emu: Emulator, tmp_path: Path, how: str
) -> None:
    """``RetryPolicy(max_retries=0)``: one 503 from the video host ends the download."""
    task_id = await finished_task(emu)
    emu.faults.add(unavailable(Endpoint.VIDEO, 1))
    async with client_on(emu, retry_policy=RetryPolicy(max_retries=0)) as client:
        with pytest.raises(wanr2v.DownloadError, match="HTTP 503"):
            await download_by(client, task_id, how, tmp_path)
    assert answers(emu, "video") == {503: 1}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("how", HOW)
async def test_the_default_policy_retries_a_503_of_a_download(
    emu: Emulator, tmp_path: Path, how: str
) -> None:
    """The client's default policy retries the video host's 503 and gets the video."""
    task_id = await finished_task(emu)
    emu.faults.add(unavailable(Endpoint.VIDEO, 1))
    async with client_on(emu) as client:
        assert await download_by(client, task_id, how, tmp_path) == make_mp4(3)
    assert answers(emu, "video") == {503: 1, 200: 1}


@pytest.mark.parametrize(("faults", "survives"), [(3, True), (4, False)])
async def test_max_retries_bounds_a_download(
    emu: Emulator, tmp_path: Path, faults: int, survives: bool
) -> None:
    """``max_retries=3`` survives three 503s in a row from the video host, not four."""
    task_id = await finished_task(emu)
    emu.faults.add(unavailable(Endpoint.VIDEO, faults))
    async with client_on(emu, retry_policy=FAST) as client:
        if survives:
            assert await download_by(client, task_id, "path", tmp_path) == make_mp4(3)
        else:
            with pytest.raises(wanr2v.DownloadError, match="after 4 attempts"):
                await download_by(client, task_id, "path", tmp_path)
    assert answers(emu, "video") == ({503: 3, 200: 1} if survives else {503: 4})


async def test_with_options_max_retries_reaches_downloads(emu: Emulator, tmp_path: Path) -> None:
    """``with_options(max_retries=0)`` fails on the first 503; the client itself, sharing
    the same downloader, still retries by its own policy."""
    task_id = await finished_task(emu)
    async with client_on(emu, retry_policy=FAST) as client:
        emu.faults.add(unavailable(Endpoint.VIDEO, 1))
        with pytest.raises(wanr2v.DownloadError, match="HTTP 503"):
            await download_by(client.with_options(max_retries=0), task_id, "path", tmp_path)
        emu.faults.add(unavailable(Endpoint.VIDEO, 1))
        assert await download_by(client, task_id, "path", tmp_path) == make_mp4(3)
    assert answers(emu, "video") == {503: 2, 200: 1}


async def test_a_download_waits_as_retry_after_says(emu: Emulator, tmp_path: Path) -> None:
    """A 429 with Retry-After from the video host is waited out as it says, not by the
    backoff (here 500-1000 s: the hang bound would trip)."""
    task_id = await finished_task(emu)
    emu.faults.add(
        FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.VIDEO, count=2, retry_after=0.01)
    )
    slow = RetryPolicy(max_retries=2, initial=1000.0, maximum=1000.0)
    async with client_on(emu, retry_policy=slow) as client:
        assert await download_by(client, task_id, "path", tmp_path) == make_mp4(3)
    assert answers(emu, "video") == {429: 2, 200: 1}


def picture(folder: Path) -> Path:
    path = folder / "face.png"
    path.write_bytes(make_png(240, 240, lambda x, y: (x, y, 0)))
    return path


async def upload(client: AsyncWanClient, path: Path) -> str:
    with anyio.fail_after(HANG_BOUND):
        return await client.upload(path, model=MODEL)


async def test_no_retries_fail_on_the_first_503_of_an_upload(emu: Emulator, tmp_path: Path) -> None:
    """``RetryPolicy(max_retries=0)``: one 503 from the upload host ends the upload."""
    emu.faults.add(unavailable(Endpoint.UPLOAD, 1))
    async with client_on(emu, retry_policy=RetryPolicy(max_retries=0)) as client:
        with pytest.raises(wanr2v.ServiceUnavailableError, match="upload host"):
            await upload(client, picture(tmp_path))
    assert answers(emu, "upload") == {503: 1}


async def test_the_default_policy_retries_a_503_of_an_upload(emu: Emulator, tmp_path: Path) -> None:
    """The client's default policy retries the upload host's 503; the file gets its key."""
    emu.faults.add(unavailable(Endpoint.UPLOAD, 1))
    async with client_on(emu) as client:
        url = await upload(client, picture(tmp_path))
    assert url.startswith("oss://")
    assert answers(emu, "upload") == {503: 1, 200: 1}


@pytest.mark.parametrize(("faults", "survives"), [(3, True), (4, False)])
async def test_max_retries_bounds_an_upload(
    emu: Emulator, tmp_path: Path, faults: int, survives: bool
) -> None:
    """``max_retries=3`` survives three 503s in a row from the upload host, not four."""
    emu.faults.add(unavailable(Endpoint.UPLOAD, faults))
    async with client_on(emu, retry_policy=FAST) as client:
        if survives:
            assert (await upload(client, picture(tmp_path))).startswith("oss://")
        else:
            with pytest.raises(wanr2v.ServiceUnavailableError):
                await upload(client, picture(tmp_path))
    assert answers(emu, "upload") == ({503: 3, 200: 1} if survives else {503: 4})


async def test_with_options_max_retries_reaches_uploads(emu: Emulator, tmp_path: Path) -> None:
    """``with_options(max_retries=0)`` fails on the upload host's first 503; the client
    itself, sharing the uploader (its cache and counters), still retries."""
    async with client_on(emu, retry_policy=FAST) as client:
        emu.faults.add(unavailable(Endpoint.UPLOAD, 1))
        with pytest.raises(wanr2v.ServiceUnavailableError):
            await upload(client.with_options(max_retries=0), picture(tmp_path))
        emu.faults.add(unavailable(Endpoint.UPLOAD, 1))
        assert (await upload(client, picture(tmp_path))).startswith("oss://")
        assert (await upload(client.with_options(max_retries=0), picture(tmp_path))).startswith(
            "oss://"
        )  # the shared cache answers: no third post
    assert answers(emu, "upload") == {503: 2, 200: 1}
