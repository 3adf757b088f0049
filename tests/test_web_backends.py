"""Web backends, safely: ``local_files`` decides whether a request may make the server
upload its own files, and ``on_event=`` streams one call's states to its handler."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from wanr2v import (
    AsyncWanClient,
    ConfigurationError,
    InvalidRequestError,
    Limits,
    PollPolicy,
    TaskEvent,
)
from wanr2v.testing import Emulator, EmulatorConfig, make_mp4, serve

pytestmark = pytest.mark.anyio

KEY = "sk-web-backend-0123456789"
SCALE = 50.0


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with serve(EmulatorConfig(time_scale=SCALE, generation_time=(2.0, 4.0), seed=9)) as emu:
        yield emu


def client(emu: Emulator, **kw: object) -> AsyncWanClient:
    return AsyncWanClient(
        api_key=KEY,
        base_url=emu.base_url,
        limits=Limits().scaled(SCALE),
        poll_policy=PollPolicy().scaled(SCALE),
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    path = tmp_path / "media" / "me.mp4"
    path.parent.mkdir()
    path.write_bytes(make_mp4(3.0))
    return path


async def test_local_files_false_refuses_a_path_before_anything_is_sent(
    emulator: Emulator, clip: Path
) -> None:
    """A local path with local_files=False: InvalidRequestError naming the reference,
    and the service saw nothing at all (no upload policy, no create)."""
    async with client(emulator, local_files=False) as c:
        for ref in (str(clip), f"file://{clip}", clip):
            with pytest.raises(InvalidRequestError, match="local_files=False") as info:
                await c.async_call(
                    model="wan2.6-r2v-flash",
                    prompt="character1 waves",
                    reference_urls=["https://cdn.example.com/ok.png", ref],
                )
            assert info.value.field == "input.reference_urls[1]"
        with pytest.raises(InvalidRequestError):
            await c.call(model="wan2.6-r2v-flash", prompt="x", reference_urls=[str(clip)])
    assert emulator.stats().total_requests == 0


async def test_local_files_folders_allow_inside_and_refuse_outside(
    emulator: Emulator, clip: Path, tmp_path: Path
) -> None:
    """With allowed folders, a file inside is uploaded; one outside, or a symbolic link
    inside that points outside, is refused before anything is sent."""
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(make_mp4(3.0))
    link = clip.parent / "link.mp4"
    os.symlink(outside, link)
    async with client(emulator, local_files=[clip.parent]) as c:
        for bad in (outside, link):
            with pytest.raises(InvalidRequestError, match="outside the folders"):
                await c.async_call(model="wan2.6-r2v-flash", prompt="x", reference_urls=[bad])
        assert emulator.stats().total_requests == 0
        task = await c.async_call(model="wan2.6-r2v-flash", prompt="x", reference_urls=[clip])
    assert task.task_id and emulator.stats().tasks_created == 1


def test_local_files_must_be_a_bool_or_folders() -> None:
    """A single string is a likely mistake (a folder list was meant): refused."""
    with pytest.raises(ConfigurationError, match="list of folders"):
        AsyncWanClient(api_key=KEY, local_files="/srv/media")


async def test_on_event_streams_one_calls_states_only(emulator: Emulator) -> None:
    """Two calls at once, each with its own on_event: each sees its own task only, from
    'created' to 'succeeded', and the client's other subscribers are untouched."""
    import anyio

    seen: dict[int, list[TaskEvent]] = {0: [], 1: []}
    results = {}
    async with client(emulator) as c:

        async def one(i: int) -> None:
            results[i] = await c.call(
                model="wan2.6-r2v-flash",
                prompt=f"character1 waves {i}",
                reference_urls=["https://cdn.example.com/me.mp4"],
                on_event=seen[i].append,
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(one, 0)
            tg.start_soon(one, 1)
        assert not c._events._callbacks  # every per-call subscription was removed
    for i in (0, 1):
        kinds = [e.kind for e in seen[i]]
        assert kinds[0] == "created" and kinds[-1] == "succeeded", kinds
        assert {e.task_id for e in seen[i]} == {results[i].task_id}


async def test_wait_on_event_for_a_known_task(emulator: Emulator) -> None:
    """wait(task_id, on_event=...) delivers that task's changes to the end."""
    seen: list[str] = []
    async with client(emulator) as c:
        task = await c.async_call(
            model="wan2.6-r2v-flash", prompt="x", reference_urls=["https://cdn.example.com/a.png"]
        )
        result = await c.wait(task.task_id, on_event=lambda e: seen.append(e.kind))
    assert result.succeeded and seen[-1] == "succeeded"
