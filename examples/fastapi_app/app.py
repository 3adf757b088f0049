"""A FastAPI app that holds one AsyncWanClient for its lifespan and streams task status.

Run it against the emulator (no key needed), with four workers sharing one Redis::

    python -m wanr2v.testing --port 8000 --generation-time 5 20 &
    redis-server --port 6379 --save "" &
    export DASHSCOPE_HTTP_BASE_URL=http://127.0.0.1:8000/api/v1 DASHSCOPE_API_KEY=sk-local
    export WANR2V_STORAGE_URI=redis://127.0.0.1:6379/0
    uvicorn examples.fastapi_app.app:app --port 8080 --workers 4   # open http://127.0.0.1:8080/

Routes:

- ``POST /videos``: create a task (``202`` with its id); the app then waits for it in
  the background, which drives the client's shared poll scheduler;
- ``POST /videos/stream``: create a task and stream its states as Server-Sent Events in
  the same response (``call(on_event=...)``: this request's task only);
- ``GET /videos/{task_id}``: the task's status now;
- ``GET /videos/{task_id}/events``: Server-Sent Events, one per status change, until the
  task is final (the page at ``/`` shows them with ``EventSource``).

One client per worker process. With ``WANR2V_STORAGE_URI`` set, the workers' governors
share the account's quotas and task slots through Redis, so ``--workers 4`` draws no more
than one worker would; without it, each worker has the whole quota to itself (fine for
one worker). Each client's poll scheduler shares one set of queries between all the
browsers watching a task in that worker.

Safety of a web backend: the client is made with ``local_files=False`` (a request can
never make the server upload one of its own files), and the app accepts ``https://``
references only.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field, field_validator

from wanr2v import (
    APIError,
    AsyncWanClient,
    InvalidRequestError,
    RateLimitError,
    TaskError,
    TaskEvent,
    TaskResult,
    WanError,
)

logger = logging.getLogger("wanr2v_example")

FINAL_KINDS = frozenset({"succeeded", "failed", "canceled", "unknown"})
KEEPALIVE_SECONDS = 15.0


class VideoIn(BaseModel):
    """What the browser (or another service) asks for."""

    model: str = "wan2.6-r2v-flash"
    prompt: str = Field(min_length=1, max_length=1500)
    reference_urls: list[str] = Field(min_length=1, max_length=5)
    size: str | None = "1280*720"
    duration: int | None = None
    audio: bool | None = None

    @field_validator("reference_urls")
    @classmethod
    def https_only(cls, urls: list[str]) -> list[str]:
        """Public ``https://`` media only: never a path, ``file://`` or ``oss://`` URL."""
        for url in urls:
            if not url.startswith("https://"):
                raise ValueError(f"reference {url!r}: only https:// URLs are accepted")
        return urls


class VideoOut(BaseModel):
    """A task as the app reports it."""

    task_id: str
    status: str
    video_url: str | None = None
    code: str | None = None
    message: str | None = None


def _out(result: TaskResult) -> VideoOut:
    return VideoOut(
        task_id=result.task_id,
        status=result.status.value,
        video_url=result.video_url,
        code=result.code,
        message=result.message,
    )


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def default_client() -> AsyncWanClient:
    """The app's client: key, base URL and ``WANR2V_STORAGE_URI`` from the environment;
    local files never uploaded."""
    return AsyncWanClient(local_files=False)


def create_app(client_factory: Callable[[], AsyncWanClient] = default_client) -> FastAPI:
    """Build the app; ``client_factory`` makes its one client (default: from the environment)."""
    watched: set[str] = set()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One client and one task group for the life of the process. On shutdown the
        # background waits are cancelled; the tasks themselves go on (and are billed)
        # on the service, and a new process can watch them again by id.
        async with client_factory() as client, anyio.create_task_group() as tg:
            app.state.client = client
            app.state.background = tg
            yield
            tg.cancel_scope.cancel()

    app = FastAPI(title="wanr2v example", lifespan=lifespan)

    def client_of(request: Request) -> AsyncWanClient:
        client: AsyncWanClient = request.app.state.client
        return client

    async def watch(client: AsyncWanClient, task_id: str) -> None:
        """Wait for a task: this is what drives its polls, hence its events."""
        try:
            result = await client.wait(task_id, raise_on_failure=False)
            logger.info("task %s ended %s", task_id, result.status.value)
        except WanError as exc:
            logger.warning("stopped watching %s: %s", task_id, exc)
        finally:
            watched.discard(task_id)

    def ensure_watched(request: Request, task_id: str) -> None:
        if task_id not in watched:
            watched.add(task_id)
            tg: anyio.abc.TaskGroup = request.app.state.background
            tg.start_soon(watch, client_of(request), task_id)

    @app.post("/videos", status_code=202)
    async def submit(body: VideoIn, request: Request) -> VideoOut:
        client = client_of(request)
        try:
            task = await client.async_call(**body.model_dump(exclude_none=True))
        except InvalidRequestError as exc:  # refused before sending: the caller's mistake
            raise HTTPException(422, detail={"field": exc.field, "message": str(exc)}) from exc
        except RateLimitError as exc:  # the account's quota, after the client's retries
            headers = {"Retry-After": str(int(exc.retry_after or 5))}
            raise HTTPException(503, detail=str(exc), headers=headers) from exc
        except APIError as exc:
            raise HTTPException(502, detail={"code": exc.code, "message": exc.message}) from exc
        ensure_watched(request, task.task_id)
        return VideoOut(task_id=task.task_id, status=task.status.value)

    @app.post("/videos/stream")
    async def submit_and_stream(body: VideoIn, request: Request) -> StreamingResponse:
        """Create and stream this task's states (created, queued, running, final)."""
        client = client_of(request)
        send, receive = anyio.create_memory_object_stream[tuple[str, dict[str, Any]]](100)

        def on_event(event: TaskEvent) -> None:
            data = _out(event.result).model_dump() if event.result else {"task_id": event.task_id}
            send.send_nowait((event.kind, data))

        async def run() -> None:
            # In the app's task group: a browser that goes away does not cancel a
            # create that may already be paid for; the task is still waited for.
            async with send:
                try:
                    await client.call(**body.model_dump(exclude_none=True), on_event=on_event)
                except TaskError:
                    pass  # its final event (failed, canceled, unknown) was streamed
                except WanError as exc:  # refused before or at create: say why, then end
                    logger.warning("streamed call failed: %s", exc)
                    await send.send(("error", {"message": str(exc)[:500]}))

        tg: anyio.abc.TaskGroup = request.app.state.background
        tg.start_soon(run)

        async def stream() -> AsyncIterator[str]:
            async with receive:
                async for kind, data in receive:
                    yield _sse(kind, data)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        """This worker's pid and whether it shares the account's limits through Redis."""
        client = client_of(request)
        return {"pid": os.getpid(), "shared": client.storage_uri is not None}

    @app.get("/videos/{task_id}")
    async def status(task_id: str, request: Request) -> VideoOut:
        try:
            return _out(await client_of(request).fetch(task_id))
        except APIError as exc:
            raise HTTPException(502, detail={"code": exc.code, "message": exc.message}) from exc

    @app.get("/videos/{task_id}/events")
    async def events(task_id: str, request: Request) -> StreamingResponse:
        client = client_of(request)

        async def stream() -> AsyncIterator[str]:
            # Subscribe first, then read the status now: no change can slip in between.
            async with client.event_stream() as changes:
                now = await client.fetch(task_id)
                yield _sse("status", _out(now).model_dump())
                if now.is_final:
                    return
                ensure_watched(request, task_id)
                while True:
                    event = None
                    with anyio.move_on_after(KEEPALIVE_SECONDS):
                        event = await changes.receive()
                    if event is None:
                        yield ": keep-alive\n\n"  # a comment line keeps proxies from timing out
                        continue
                    if event.task_id != task_id:
                        continue
                    data = _out(event.result).model_dump() if event.result else {"task_id": task_id}
                    yield _sse(event.kind, data)
                    if event.kind in FINAL_KINDS:
                        return

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE

    return app


PAGE = """<!doctype html>
<meta charset="utf-8"><title>wanr2v</title>
<form id="f">
  <input name="prompt" size="60" value="character1 waves at character2">
  <input name="ref1" size="40" value="https://cdn.example.com/me.mp4">
  <input name="ref2" size="40" value="https://cdn.example.com/dog.png">
  <button>Generate</button>
</form>
<ul id="log"></ul>
<script>
const log = (text) => { const li = document.createElement("li"); li.textContent = text;
                        document.getElementById("log").append(li); };
document.getElementById("f").onsubmit = async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const r = await fetch("/videos", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({prompt: f.get("prompt"), reference_urls: [f.get("ref1"), f.get("ref2")]})});
  const task = await r.json();
  if (!r.ok) { log("refused: " + JSON.stringify(task.detail)); return; }
  const es = new EventSource(`/videos/${task.task_id}/events`);
  for (const kind of ["status", "queued", "running", "succeeded", "failed", "canceled", "unknown"]) {
    es.addEventListener(kind, (m) => {
      const d = JSON.parse(m.data);
      log(`${task.task_id.slice(0, 8)}: ${kind} ${d.video_url || d.message || ""}`);
      if (["SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"].includes(d.status)) es.close();
    });
  }
};
</script>
"""

app = create_app()
