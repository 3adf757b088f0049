"""WanClient (blocking), typed entry points, with_options, upload, downloads to
file objects and byte streams, and the time_scale switch — against the emulator on a
real loopback socket."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from wanr2v import (
    AsyncWanClient,
    ConfigurationError,
    InvalidRequestError,
    RequestTimeoutError,
    TaskNotFoundError,
    TaskStatus,
    VideoRequest,
    WanClient,
)
from wanr2v._demo import make_png
from wanr2v.testing import Emulator, EmulatorConfig, Endpoint, FaultKind, FaultRule, serve

SCALE = 60.0

FIELDS: dict[str, Any] = {
    "model": "wan2.6-r2v-flash",
    "prompt": "character1 waves at character2",
    "reference_urls": ["https://cdn.example.com/role1.mp4", "https://cdn.example.com/dog.png"],
    "duration": 2,
    "size": "1280*720",
}


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with serve(EmulatorConfig(time_scale=SCALE, generation_time=(1.0, 2.0), seed=0)) as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[WanClient]:
    with WanClient(base_url=emu.base_url, api_key="sk-test-sync", time_scale=SCALE) as c:
        yield c


def test_call_blocks_and_returns_the_typed_result(client: WanClient, emu: Emulator) -> None:
    """WanClient.call creates, waits and returns a SUCCEEDED TaskResult, no `async` needed."""
    result = client.call(**FIELDS)
    assert result.status is TaskStatus.SUCCEEDED and result.video_url
    assert client.fetch(result.task_id).status is TaskStatus.SUCCEEDED
    assert emu.stats().tasks_created == 1
    assert "WanClient(" in repr(client) and "sk-test-sync" not in repr(client)


def test_call_and_wait_stream_their_own_task_events(client: WanClient) -> None:
    """``on_event`` on WanClient.call and WanClient.wait gets that task's events only, as
    on the async client: ``created``, then each status change up to the final one."""
    seen: list[tuple[str, str]] = []
    other = client.async_call(**FIELDS)  # another task's events must not reach it
    result = client.call(**FIELDS, on_event=lambda ev: seen.append((ev.kind, ev.task_id)))
    assert seen[0] == ("created", result.task_id)
    assert seen[-1] == ("succeeded", result.task_id)
    assert {task_id for _, task_id in seen} == {result.task_id}

    waited: list[str] = []
    final = client.wait(other, on_event=lambda ev: waited.append(ev.task_id))
    assert final.status is TaskStatus.SUCCEEDED
    assert set(waited) <= {other.task_id}


def test_same_typed_errors(client: WanClient) -> None:
    """A task id the service does not know ends with the async client's TaskNotFoundError."""
    with pytest.raises(TaskNotFoundError) as info:
        client.wait("0000-not-a-task")
    assert info.value.task_id == "0000-not-a-task"
    with pytest.raises(InvalidRequestError):
        client.call(**{**FIELDS, "duration": 99})


def test_usable_where_an_event_loop_runs(client: WanClient) -> None:
    """Inside a running asyncio loop (a notebook cell) the blocking client still works:
    its own loop runs in its own thread."""

    async def notebook_cell() -> TaskStatus:
        return client.call(**FIELDS).status

    assert asyncio.run(notebook_cell()) is TaskStatus.SUCCEEDED


def test_threads_share_one_client(client: WanClient, emu: Emulator) -> None:
    """Calls from several threads run at once in the client's one loop."""
    results: list[TaskStatus] = []

    def work(seed: int) -> None:
        results.append(client.call(**{**FIELDS, "seed": seed}).status)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == [TaskStatus.SUCCEEDED] * 3
    assert emu.stats().tasks_created == 3


def test_closed_client_says_so(emu: Emulator) -> None:
    """After the with-block, a call raises ConfigurationError (not an httpx RuntimeError),
    and the loop thread is gone."""
    before = {t.name for t in threading.enumerate()}
    with WanClient(base_url=emu.base_url, api_key="sk-test-sync") as c:
        assert any(t.name == "wanr2v-loop" for t in threading.enumerate())
    assert c.closed
    with pytest.raises(ConfigurationError, match="closed"):
        c.fetch("x")
    c.close()  # idempotent
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        names = {t.name for t in threading.enumerate()} - before
        if "wanr2v-loop" not in names:
            break
        time.sleep(0.05)
    assert "wanr2v-loop" not in {t.name for t in threading.enumerate()} - before


def test_a_client_left_open_neither_leaks_nor_hangs() -> None:
    """A WanClient never closed stops its loop thread when collected, and a program that
    forgets it still exits."""
    script = textwrap.dedent(
        """
        import gc, threading
        from wanr2v import WanClient
        c = WanClient(api_key="sk-x", base_url="http://127.0.0.1:9/api/v1")
        del c
        gc.collect()
        for _ in range(100):
            if not any(t.name == "wanr2v-loop" for t in threading.enumerate()):
                break
            threading.Event().wait(0.05)
        print(sorted(t.name for t in threading.enumerate()))
        kept = WanClient(api_key="sk-x", base_url="http://127.0.0.1:9/api/v1")  # never closed
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['MainThread']"


def test_downloads_to_file_name_folder_file_object_and_stream(
    client: WanClient, tmp_path: Path
) -> None:
    """One video saved four ways holds the same bytes: a folder ({task_id}.mp4), a name
    ending in .mp4 (a file, not a folder), a BytesIO, and a byte stream."""
    result = client.call(**FIELDS)
    in_folder = client.download(result, tmp_path / "videos")
    assert in_folder == tmp_path / "videos" / f"{result.task_id}.mp4"
    named = client.download(result, tmp_path / "my-video.mp4")
    assert named == tmp_path / "my-video.mp4" and named.is_file()
    buf = io.BytesIO(b"head:")
    buf.seek(0, io.SEEK_END)
    n = client.download(result, buf)
    streamed = b"".join(client.iter_video(result))
    data = in_folder.read_bytes()
    assert len(data) > 100 and n == len(data)
    assert named.read_bytes() == data == buf.getvalue()[5:] == streamed
    assert buf.getvalue().startswith(b"head:")


def test_upload_returns_a_reusable_oss_url(
    client: WanClient, tmp_path: Path, emu: Emulator
) -> None:
    """upload() gives an oss:// URL a later request uses without uploading again."""
    picture = tmp_path / "dog.png"
    picture.write_bytes(make_png(240, 240, lambda x, y: (x % 256, y % 256, 40)))
    url = client.upload(picture, model="wan2.6-r2v-flash")
    assert url.startswith("oss://") and url.endswith("dog.png")
    result = client.call(
        model="wan2.6-r2v-flash",
        prompt="character1 sits",
        reference_urls=[url],
        duration=2,
        size="1280*720",
    )
    assert result.succeeded
    with pytest.raises(InvalidRequestError, match=r"missing|not found|does not exist"):
        client.upload(tmp_path / "nothing.png", model="wan2.6-r2v-flash")


def test_with_options_for_one_call(emu: Emulator) -> None:
    """with_options(timeout=..., max_retries=0) applies to calls through the copy only:
    a slow answer times out there, while the client itself (30 s) gets it."""
    with WanClient(base_url=emu.base_url, api_key="sk-test-sync", time_scale=SCALE) as c:
        task = c.async_call(**FIELDS)
        emu.faults.add(FaultRule(kind=FaultKind.SLOW, endpoint=Endpoint.QUERY, delay=1.0, count=1))
        with pytest.raises(RequestTimeoutError):
            c.with_options(timeout=0.2, max_retries=0).fetch(task)
        emu.faults.add(FaultRule(kind=FaultKind.SLOW, endpoint=Endpoint.QUERY, delay=0.5, count=1))
        assert c.fetch(task).task_id == task.task_id
        with pytest.raises(ConfigurationError):
            c.with_options(timeout=0)


def test_misspelt_keyword_names_the_closest() -> None:
    """A misspelt keyword is a TypeError that names the keyword meant, on every entry."""
    with pytest.raises(TypeError, match=r"'promt'.*did you mean 'prompt'"):
        VideoRequest(model="wan2.6-r2v", promt="x", reference_urls=["a.png"])  # type: ignore[call-arg]
    with WanClient(base_url="http://127.0.0.1:9/api/v1", api_key="sk-x") as c:
        with pytest.raises(TypeError, match="did you mean 'negative_prompt'"):
            c.call(**{**FIELDS, "negativ_prompt": "blur"})
        with pytest.raises(TypeError, match="did you mean 'reference_urls'"):
            c.async_call(**{**FIELDS, "reference_url": ["a.png"]})
    with pytest.raises(TypeError, match="did you mean 'time_scale'"):
        WanClient(timescale=2)  # type: ignore[call-arg]

    async def main() -> None:
        async with AsyncWanClient(base_url="http://127.0.0.1:9/api/v1", api_key="sk-x") as c:
            with pytest.raises(TypeError, match="did you mean 'duration'"):
                await c.async_call(**{**FIELDS, "duraton": 5})

    anyio.run(main)


def test_mypy_strict_flags_a_misspelt_keyword_only(tmp_path: Path) -> None:
    """Under mypy --strict, a program using the typed entry points and reading the
    documented error attributes passes (a model name the SDK does not know yet
    included); the same program with one misspelt keyword fails on that line only."""
    pytest.importorskip("mypy")
    program = textwrap.dedent(
        """
        from wanr2v import (
            APIError, AsyncWanClient, RateLimitError, RequestTimeoutError,
            SubmitOutcomeUnknownError, TaskFailedError, TaskNotFoundError, TransportError,
            VideoRequest, WaitTimeoutError, WanClient,
        )

        async def go(client: AsyncWanClient) -> None:
            task = await client.async_call(
                model="wan2.6-r2v-flash", prompt="p", reference_urls=["a.png"], size="1280*720"
            )
            print(task.task_id)
            try:
                result = await client.call(model="wan2.6-r2v-next", prompt="p", reference_urls=["a"])
                print(result.status, result.usage)
            except (TaskFailedError, TaskNotFoundError) as exc:
                code: str | None = exc.code
                print(exc.task_id.upper(), exc.status, code, exc.message, exc.request_id, exc.result)
            except SubmitOutcomeUnknownError as exc:
                print(exc.candidates[0], exc.submission_id, exc.sent_at, exc.fingerprint)
            except RateLimitError as exc:
                wait: float | None = exc.retry_after
                print(wait, exc.status_code + 1, exc.code, exc.request_id, exc.task_id)
            except APIError as exc:
                print(exc.status_code, exc.code, exc.message)
            except RequestTimeoutError as exc:
                sent: bool = exc.maybe_sent
                print(sent, exc.method, exc.url)
            except TransportError as exc:
                print(exc.maybe_sent, exc.request_id)
            except WaitTimeoutError as exc:
                print(exc.task_id, exc.last_status)

        def sync(client: WanClient) -> None:
            print(client.call(model="wan2.6-r2v", prompt="p", reference_urls=["a.png"]).video_url)
            VideoRequest(model="wan2.6-r2v", prompt="p", reference_urls=["a.png"], seed=1)
        """
    )
    good = tmp_path / "good.py"
    good.write_text(program)
    bad = tmp_path / "bad.py"
    bad.write_text(program.replace("size=", "sise="))
    cmd = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True, timeout=240)
    assert ok.returncode == 0, ok.stdout
    ko = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, timeout=240)
    errors = [line for line in ko.stdout.splitlines() if ": error:" in line]
    call_line = program.splitlines().index("    task = await client.async_call(") + 1
    assert len(errors) == 1 and f"bad.py:{call_line}:" in errors[0], ko.stdout
    assert "sise" in errors[0]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_closed_async_client_says_so(emu: Emulator) -> None:
    """A call on a closed AsyncWanClient raises ConfigurationError saying so, not
    httpx's RuntimeError."""
    async with AsyncWanClient(base_url=emu.base_url, api_key="sk-test-sync") as c:
        task = await c.async_call(**FIELDS)
    for call in (c.fetch(task), c.cancel(task), c.async_call(**FIELDS)):
        with pytest.raises(ConfigurationError, match="closed"):
            await call


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_time_scale_switch(emu: Emulator) -> None:
    """AsyncWanClient(time_scale=60) paces rates, polls and waits for an emulator 60x
    faster: a task of a few emulated minutes ends in seconds."""
    async with AsyncWanClient(base_url=emu.base_url, api_key="sk-test-sync", time_scale=SCALE) as c:
        assert c.time_scale == SCALE and c.limits.creates_per_second == 5 * SCALE
        with anyio.fail_after(30):
            result = await c.call(**FIELDS)
    assert result.succeeded
    with pytest.raises(ConfigurationError):
        AsyncWanClient(base_url=emu.base_url, api_key="sk-x", time_scale=0)
