"""Each program in ``examples/`` runs: the FastAPI app, the batch script, the app's suite.

- the FastAPI app is served by uvicorn on a loopback port (a real socket, so the event
  stream is read as it is produced), its client pointed at a loopback emulator through
  ``DASHSCOPE_HTTP_BASE_URL`` as the example's docstring says;
- the batch script runs as a subprocess against a loopback emulator, is killed with
  SIGKILL mid-batch, and is run again: every video is saved and none is paid twice;
- the app's own pytest suite runs in a subprocess ``pytest``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the examples need the 'emulator' extra")
pytest.importorskip("uvicorn", reason="the examples need the 'emulator' extra")

from wanr2v.testing import Emulator, EmulatorConfig, serve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BATCH = EXAMPLES / "batch" / "batch.py"
REQUESTS = EXAMPLES / "batch" / "requests.jsonl"


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A loopback emulator, real time, a video in 1-2 seconds."""
    with serve(EmulatorConfig(generation_time=(1.0, 2.0), seed=1)) as emu:
        yield emu


def _env(emulator: Emulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env.update(
        DASHSCOPE_API_KEY="sk-examples-test-key",
        DASHSCOPE_HTTP_BASE_URL=emulator.base_url,
        PYTHONDONTWRITEBYTECODE="1",
        **extra,
    )
    return env


# --- the FastAPI app --------------------------------------------------------------------


@pytest.fixture
def app_url(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The example app served by uvicorn on 127.0.0.1, configured from the environment."""
    pytest.importorskip("fastapi", reason="the FastAPI example needs fastapi")
    import uvicorn

    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-examples-test-key")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", emulator.base_url)
    monkeypatch.delenv("DASHSCOPE_REGION", raising=False)
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.fastapi_app.app import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(), lifespan="on", log_level="warning", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # a hang bound only
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_fastapi_app_streams_status_to_the_browser(app_url: str, emulator: Emulator) -> None:
    """The app creates tasks and streams each one's status changes as SSE until final."""
    import httpx

    video = {
        "prompt": "character1 waves at character2",
        "reference_urls": ["https://cdn.example.com/me.mp4", "https://cdn.example.com/dog.png"],
    }
    with httpx.Client(base_url=app_url, timeout=30) as http:
        assert "EventSource" in http.get("/").text
        ids = []
        for i in range(3):
            created = http.post("/videos", json={**video, "prompt": f"{video['prompt']} #{i}"})
            assert created.status_code == 202, created.text
            ids.append(created.json()["task_id"])

        events: list[tuple[str, dict[str, Any], float]] = []
        with http.stream("GET", f"/videos/{ids[0]}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line.removeprefix("event: ")
                elif line.startswith("data: ") and kind is not None:
                    events.append((kind, json.loads(line.removeprefix("data: ")), time.monotonic()))
        kinds = [k for k, _, _ in events]
        assert kinds[0] == "status" and kinds[-1] == "succeeded", kinds
        assert events[-1][1]["video_url"]
        assert events[-1][2] > events[0][2], "the first event came only with the last"

        for task_id in ids[1:]:  # the app keeps watching the others in the background
            deadline = time.monotonic() + 120  # a hang bound only
            while http.get(f"/videos/{task_id}").json()["status"] != "SUCCEEDED":
                assert time.monotonic() < deadline
                time.sleep(0.2)

        refused = http.post("/videos", json={**video, "duration": 30})
        assert refused.status_code == 422
        assert refused.json()["detail"]["field"] == "parameters.duration"
    stats = emulator.stats()
    assert stats.tasks_created == 3 and stats.duplicate_creates == 0


def _sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events, kind = [], None
    for line in text.splitlines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind is not None:
            events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


@pytest.mark.slow
def test_fastapi_app_runs_four_workers_on_one_redis(emulator: Emulator, redis_server: Any) -> None:
    """``uvicorn --workers 4`` with ``WANR2V_STORAGE_URI``: all four workers register in
    one Redis (they share the account's limits), each streamed call ends SUCCEEDED, and
    local paths or non-https references are refused before anything is sent."""
    pytest.importorskip("fastapi", reason="the FastAPI example needs fastapi")
    import httpx
    import redis

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app.app:app", "--host",
         "127.0.0.1", "--port", str(port), "--workers", "4", "--log-level", "warning"],
        cwd=ROOT,
        env=_env(emulator, WANR2V_STORAGE_URI=redis_server.uri),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    r = redis.Redis.from_url(redis_server.uri, decode_responses=True)
    try:
        deadline = time.monotonic() + 60

        def live_workers() -> int:
            return sum(int(r.zcard(k)) for k in r.scan_iter("wanr2v:*:processes"))

        while live_workers() < 4:  # each worker's lifespan registers its client
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "four workers did not start"
            time.sleep(0.1)
        assert live_workers() == 4
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            assert http.get("/health").json()["shared"] is True
            for i in range(2):
                body = {
                    "prompt": f"character1 waves at the camera #{i}",
                    "reference_urls": ["https://cdn.example.com/me.mp4"],
                }
                events = _sse_events(http.post("/videos/stream", json=body).text)
                kinds = [k for k, _ in events]
                assert kinds[0] == "created" and kinds[-1] == "succeeded", kinds
                assert events[-1][1]["video_url"]
            for ref in ("/etc/passwd", "file:///etc/passwd", "http://cdn.example.com/a.png"):
                refused = http.post("/videos", json={"prompt": "x", "reference_urls": [ref]})
                assert refused.status_code == 422, refused.text
    finally:
        r.close()
        proc.terminate()
        proc.communicate(timeout=30)
    stats = emulator.stats()
    assert stats.tasks_created == 2 and stats.duplicate_creates == 0
    assert stats.requests.get("upload", {}) == {}


# --- the batch script -------------------------------------------------------------------


def _batch(tmp_path: Path, emulator: Emulator) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(BATCH), str(REQUESTS), "--journal", "batch.db", "--out", "videos"],
        cwd=tmp_path,
        env=_env(emulator),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_batch_script_survives_kill_9(tmp_path: Path, emulator: Emulator) -> None:
    """Killed mid-batch and run again, the script saves every video and pays for none twice."""
    lines = [json.loads(line) for line in REQUESTS.read_text().splitlines() if line.strip()]
    # The first two tasks stay PENDING (by poll count, not by clock) until the kill: some
    # tasks exist and none is finished when it lands, however slow the machine.
    emulator.script_polls(("PENDING", 10**9), "SUCCEEDED", tasks=2)
    first = _batch(tmp_path, emulator)
    deadline = time.monotonic() + 120  # a hang bound only
    while emulator.stats().tasks_created < 2:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    for record in emulator.task_records()[:2]:  # now let them finish
        emulator.script_polls("SUCCEEDED", task_id=record.task_id)

    second = _batch(tmp_path, emulator)
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, out
    assert "resuming" in out
    assert f"{len(lines)}/{len(lines)} saved" in out
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == len(lines)
    stats = emulator.stats()
    assert stats.tasks_created == len(lines) and stats.duplicate_creates == 0


# --- the app's test suite ---------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def app_suite() -> Iterator[subprocess.Popen[str] | None]:
    """The example suite's ``pytest``, started with the module so that it runs alongside
    the other examples (it takes several seconds of mostly waiting)."""
    try:
        import fastapi  # noqa: F401
        import trio  # noqa: F401
    except ImportError:
        yield None
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio"],
        cwd=EXAMPLES / "fastapi_app",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_example_app_suite_passes(app_suite: subprocess.Popen[str] | None) -> None:
    """``examples/fastapi_app/tests`` passes under pytest, asyncio and trio."""
    if app_suite is None:
        pytest.skip("the FastAPI example suite needs fastapi and trio")
    out, _ = app_suite.communicate(timeout=300)  # a hang bound only
    assert app_suite.returncode == 0, out
    assert "8 passed" in out, out
