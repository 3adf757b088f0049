"""The per-request savings keep behaviour: same parses, same cookies, bounded caches."""

from __future__ import annotations

import sys
import threading
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wanr2v import AsyncWanClient
from wanr2v._http import URL_CACHE_SIZE, ApiSession
from wanr2v._limits import Governor
from wanr2v._retry import RetryPolicy
from wanr2v._wire import SERVICE_TZ, parse_service_time


def _strptime(text: str) -> datetime | None:
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=SERVICE_TZ)
        except ValueError:
            continue
    return None


@given(
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 1, 1)),
    st.sampled_from(["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S.%f", "ms", "%Y-%m-%dT%H:%M:%S"]),
)
def test_fast_service_time_parse_matches_strptime(when: datetime, fmt: str) -> None:
    """The fast path for the service's timestamps gives what strptime gives, and any
    other shape is judged by strptime as before."""
    text = when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if fmt == "ms" else when.strftime(fmt)
    assert parse_service_time(text) == _strptime(text)


@pytest.mark.parametrize(
    "text",
    [
        "2025-12-16 00:25:59,869",
        "2025-12-16 00:25:59.869+08",
        "2025-1-6 0:5:9",
        "2025-12-16 24:00:00",
    ],
)
def test_odd_service_times_take_the_slow_path(text: str) -> None:
    """Shapes the fast path must not accept are still judged by strptime."""
    assert parse_service_time(text) == _strptime(text)


async def _session() -> ApiSession:
    return ApiSession(
        http=httpx.AsyncClient(),
        api_key="sk-secret",
        base_url="https://x.example.com/api/v1",
        governor=Governor(),
        retry=RetryPolicy(),
        workspace="ws",
    )


@pytest.mark.anyio
async def test_headers_built_once_and_read_only() -> None:
    """Each kind's headers are built once and cannot be changed by a caller; extra
    headers give a fresh mapping."""
    s = await _session()
    h = s.headers("query")
    assert h is s.headers("query") and h["X-DashScope-WorkSpace"] == "ws"
    assert "X-DashScope-Async" not in h and s.headers("create")["X-DashScope-Async"] == "enable"
    with pytest.raises(TypeError):
        h["Authorization"] = "x"  # type: ignore[index]
    extra = s.headers("create", {"X-DashScope-OssResourceResolve": "enable"})
    assert extra["X-DashScope-OssResourceResolve"] == "enable" and extra["X-DashScope-Async"]
    assert "X-DashScope-OssResourceResolve" not in s.headers("create")
    await s.http.aclose()


@pytest.mark.anyio
async def test_url_cache_reuses_and_stays_bounded() -> None:
    """A recurring URL is parsed once; the cache never holds more than its bound."""
    s = await _session()
    first = s._target("https://x.example.com/api/v1/tasks/a")
    assert s._target("https://x.example.com/api/v1/tasks/a") is first
    for i in range(URL_CACHE_SIZE + 50):
        s._target(f"https://x.example.com/api/v1/tasks/{i}")
    assert len(s._urls) == URL_CACHE_SIZE
    assert str(s._target("https://x.example.com/api/v1/tasks/7")).endswith("/tasks/7")
    await s.http.aclose()


@pytest.mark.anyio
async def test_default_client_still_stores_cookies() -> None:
    """The client's own httpx client skips the cookie adapters only when an answer
    sets no cookie: a Set-Cookie is still stored."""
    c = AsyncWanClient(api_key="sk-x")
    req = httpx.Request("GET", "https://x.example.com/api/v1/tasks/a")
    c.http.cookies.extract_cookies(httpx.Response(200, request=req))
    assert len(c.http.cookies.jar) == 0
    c.http.cookies.extract_cookies(
        httpx.Response(200, headers={"Set-Cookie": "a=b; Path=/"}, request=req)
    )
    assert c.http.cookies.get("a") == "b"
    await c.aclose()


@pytest.mark.anyio
async def test_lean_client_answers_as_httpx_does() -> None:
    """The client's own http client sends a plain request straight to its transport and
    answers as httpx does (merged headers, httpx's JSON bytes, timeout, decoded body,
    request, cookies); a client with hooks takes httpx's full path."""
    import gzip
    import json

    from wanr2v._lean import LeanAsyncClient

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = gzip.compress(json.dumps({"ok": True}).encode())
        return httpx.Response(
            200, content=body, headers={"Content-Encoding": "gzip", "Set-Cookie": "s=1; Path=/"}
        )

    url = httpx.URL("https://x.example.com/api/v1/tasks/t")
    async with LeanAsyncClient(
        transport=httpx.MockTransport(handler), headers={"User-Agent": "ua"}, timeout=7.0
    ) as http:
        r = await http.request("POST", url, json={"a": "é"}, headers={"X-A": "1"}, params=None)
        assert r.json() == {"ok": True} and r.request is seen[0] and r.request.url == url
        assert not hasattr(r, "_elapsed")  # the lean path: httpx's wrappers were skipped
        sent = seen[0]
        assert sent.headers["user-agent"] == "ua" and sent.headers["x-a"] == "1"
        assert sent.headers["content-type"] == "application/json"
        assert sent.content == httpx.Request("POST", url, json={"a": "é"}).content
        assert sent.extensions["timeout"]["read"] == 7.0
        assert http.cookies.get("s") == "1"
        await http.get(url)  # a cookie is stored now: the full path sends it
        assert seen[1].headers["cookie"] == "s=1"
    hooked: list[str] = []

    async def hook(request: httpx.Request) -> None:
        hooked.append(request.method)

    async with LeanAsyncClient(
        transport=httpx.MockTransport(handler), event_hooks={"request": [hook]}
    ) as http:
        assert (await http.request("GET", url)).json() == {"ok": True}
    assert hooked == ["GET"]


class _RecordingFinder:
    """A meta path finder that finds nothing and records what this thread looked for
    (the import system asks it only for a module not yet in ``sys.modules``); the
    emulator's server threads are not the client's business."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.asked: list[str] = []

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if threading.get_ident() == self.thread:
            self.asked.append(name)


@pytest.mark.anyio
async def test_requests_import_nothing(wan_client: AsyncWanClient) -> None:
    """After warm-up, creating, fetching, listing and waiting on tasks against the
    emulator looks up no module. A failed import on the hot path scans the whole
    ``sys.path`` on every request: httpcore tries ``import sniffio`` each time it
    asks which async library runs, and anyio 4.16 no longer installs sniffio, so
    wanr2v depends on it (without it: ~0.2 ms of CPU per request, a third of the
    default transport's cost at 2,000 tasks in flight)."""
    spec: dict[str, Any] = {
        "model": "wan2.6-r2v-flash",
        "prompt": "character1 waves",
        "reference_urls": ["https://cdn.example.com/role1.mp4"],
        "duration": 5,
    }
    warm = await wan_client.async_call(**spec)
    await wan_client.wait(warm)
    assert [row async for row in wan_client.list_tasks(page_size=5)]
    finder = _RecordingFinder()
    sys.meta_path.insert(0, finder)
    try:
        tasks = [await wan_client.async_call(**{**spec, "seed": i}) for i in range(3)]
        for task in tasks:
            await wan_client.fetch(task)
        listed = [row.task_id async for row in wan_client.list_tasks(page_size=5)]
        result = await wan_client.wait(tasks[0])
    finally:
        sys.meta_path.remove(finder)
    assert result.succeeded and tasks[0].task_id in listed
    assert finder.asked == [], f"modules looked up on the request path: {finder.asked}"
