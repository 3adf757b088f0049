"""Conformance: the vendor's own ``dashscope`` 2.0.2 client completes its flows against the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from wanr2v.testing import Emulator, EmulatorConfig, Quotas, make_mp4, serve

dashscope = pytest.importorskip("dashscope")

KEY = "sk-dashscope-conformance"
VIDEO = "https://cdn.example.com/role.mp4"
IMAGE = "https://cdn.example.com/object.png"


@pytest.fixture(scope="module")
def served() -> Iterator[Emulator]:
    """One loopback emulator for the module: real time, tasks of about a second."""
    config = EmulatorConfig(
        api_keys=[KEY],
        time_scale=1.0,
        seed=2,
        generation_time=(0.6, 1.0),
        quotas=Quotas(running=2),
    )
    with serve(config) as emu:
        yield emu


@pytest.fixture
def emu(served: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator, with dashscope pointed at it (restored after the test)."""
    monkeypatch.setattr(dashscope, "base_http_api_url", served.base_url)
    monkeypatch.setenv("DASHSCOPE_API_KEY", KEY)
    return served


def test_legacy_call_flash_with_reference_urls(emu: Emulator) -> None:
    """VideoSynthesis.call (create + wait) on wan2.6-r2v-flash ends SUCCEEDED with usage."""
    from dashscope import VideoSynthesis

    rsp = VideoSynthesis.call(
        api_key=KEY,
        model="wan2.6-r2v-flash",
        prompt="character1 talks to character2",
        reference_urls=[VIDEO, IMAGE],
        size="1280*720",
        duration=5,
        shot_type="multi",
        audio=True,
    )
    assert rsp.status_code == 200, rsp
    assert rsp.output.task_status == "SUCCEEDED"
    assert rsp.output.video_url.startswith(emu.origin)
    assert rsp.usage.duration == pytest.approx(7.5)
    assert rsp.usage.SR == 720


def test_async_call_fetch_wait(emu: Emulator) -> None:
    """async_call answers PENDING with a task id; fetch sees it; wait ends SUCCEEDED."""
    from dashscope import VideoSynthesis

    created = VideoSynthesis.async_call(
        api_key=KEY, model="wan2.6-r2v", prompt="character1 runs", reference_urls=[VIDEO]
    )
    assert created.status_code == 200, created
    assert created.output.task_status == "PENDING"
    fetched = VideoSynthesis.fetch(created, api_key=KEY)
    assert fetched.output.task_status in ("PENDING", "RUNNING")
    done = VideoSynthesis.wait(created, api_key=KEY)
    assert done.output.task_status == "SUCCEEDED"
    assert done.output.task_id == created.output.task_id


def test_cancel(emu: Emulator) -> None:
    """cancel succeeds on a queued (PENDING) task and is refused once it is not."""
    from dashscope import VideoSynthesis

    ids = [
        VideoSynthesis.async_call(
            api_key=KEY, model="wan2.6-r2v-flash", prompt=f"p{i}", reference_urls=[VIDEO]
        ).output.task_id
        for i in range(3)
    ]
    ok = VideoSynthesis.cancel(ids[2], api_key=KEY)
    assert ok.status_code == 200, ok
    assert VideoSynthesis.fetch(ids[2], api_key=KEY).output.task_status == "CANCELED"
    again = VideoSynthesis.cancel(ids[2], api_key=KEY)
    assert (again.status_code, again.code) == (400, "UnsupportedOperation")


def test_list(emu: Emulator) -> None:
    """list returns the flat page (total, data with status and epoch-ms times)."""
    from dashscope import VideoSynthesis

    VideoSynthesis.async_call(api_key=KEY, model="wan2.6-r2v", prompt="p", reference_urls=[VIDEO])
    page = VideoSynthesis.list(api_key=KEY, page_size=2, model_name="wan2.6-r2v")  # type: ignore[attr-defined]
    assert page.status_code == 200, page
    assert page.output["total"] >= 1
    assert page.output["page_size"] == 2
    row = page.output["data"][0]
    assert row["model_name"] == "wan2.6-r2v"
    assert isinstance(row["gmt_create"], int)


def test_local_file_reference_is_uploaded(emu: Emulator, tmp_path: Path) -> None:
    """A local file goes through getPolicy and the upload host (no key sent there), then resolves."""
    from dashscope import VideoSynthesis

    ref = tmp_path / "role.mp4"
    ref.write_bytes(make_mp4(2))
    before = len(emu.host_requests("upload"))
    rsp = VideoSynthesis.call(
        api_key=KEY, model="wan2.6-r2v-flash", prompt="character1", reference_urls=[f"file://{ref}"]
    )
    assert rsp.status_code == 200, rsp
    assert rsp.output.task_status == "SUCCEEDED"
    assert rsp.usage.input_video_duration == 5
    uploads = emu.host_requests("upload")[before:]
    assert len(uploads) == 1
    assert uploads[0].header("authorization") is None
    assert KEY not in str(uploads[0].headers)


def test_async_client_videos_jobs(emu: Emulator) -> None:
    """dashscope.AsyncClient().videos.jobs create + wait ends SUCCEEDED with a video URL."""

    async def run() -> tuple[str, str | None]:
        async with dashscope.AsyncClient(api_key=KEY, base_url=emu.base_url) as client:
            job = await client.videos.jobs.create(
                model="wan2.6-r2v-flash",
                prompt="character1 jumps",
                extra_input={"reference_urls": [VIDEO]},
                size="1280*720",
                duration=5,
            )
            assert job.status == "PENDING"
            done = await client.videos.jobs.wait(job, poll_interval=0.25)
            return done.status, done.video_url

    status, url = asyncio.run(run())
    assert status == "SUCCEEDED"
    assert url is not None
    assert url.startswith(emu.origin)
