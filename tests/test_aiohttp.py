"""AioHttpClient: httpx's API on aiohttp's pool, against the emulator on a real socket.

asyncio only (aiohttp does not run under trio); one test checks the trio fallback.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

import httpx
import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("httpx_aiohttp")

import wanr2v
from wanr2v import AioHttpClient, AsyncWanClient, Limits
from wanr2v.testing import EmulatorConfig, serve
from wanr2v.testing._client import client_for
from wanr2v.testing._faults import Endpoint, FaultKind, FaultRule

pytestmark = pytest.mark.anyio

FIELDS: dict[str, Any] = {
    "model": "wan2.6-r2v-flash",
    "prompt": "character1 waves at character2",
    "reference_urls": ["https://cdn.example.com/role1.mp4", "https://cdn.example.com/dog.png"],
    "duration": 5,
}


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only."""
    return "asyncio"


def _used_aiohttp(http: AioHttpClient) -> bool:
    return getattr(http._transport, "_aio", None) is not None


async def test_call_end_to_end_and_client_left_open() -> None:
    """A task is created and waited for over aiohttp; the client passed in stays open."""
    with serve(EmulatorConfig(time_scale=60, generation_time=(60, 120), seed=11)) as emu:
        async with AioHttpClient() as http:
            async with client_for(emu, http_client=http) as c:
                result = await c.call(**FIELDS)
            assert result.succeeded and result.video_url
            assert not http.is_closed and _used_aiohttp(http)
            st = emu.stats()
            assert st.tasks_created == 1 and st.count("query") >= 1
        assert http.is_closed


async def test_create_dropped_after_commit_is_reconciled_not_resent() -> None:
    """A connection dropped after the create was carried out is a maybe-sent failure on
    aiohttp too (httpx-aiohttp alone calls it a ConnectTimeout, which would re-send):
    the task is found by reconciliation, never created twice."""
    with serve(EmulatorConfig(time_scale=60, generation_time=(60, 120), seed=12)) as emu:
        emu.faults.add(
            FaultRule(kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, count=1)
        )
        async with (
            AioHttpClient() as http,
            client_for(emu, http_client=http, reconcile_grace=0.05) as c,
        ):
            task = await c.async_call(**FIELDS)
            assert (await c.wait(task)).succeeded
        st = emu.stats()
        assert st.tasks_created == 1 and st.duplicate_creates == 0
        assert c.statistics().reconciled == 1


async def test_errors_say_whether_the_request_may_have_arrived() -> None:
    """Connection refused is an httpx.ConnectError (nothing sent); a create whose
    connection is dropped mid-exchange is an httpx.ReadError (maybe sent), never a
    ConnectError or ConnectTimeout (which would allow a blind re-send)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    with serve(EmulatorConfig(time_scale=60, seed=13)) as emu:
        emu.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.CREATE, count=1))
        async with AioHttpClient(timeout=5.0) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{port}/api/v1/tasks/x")
            with pytest.raises(httpx.ReadError) as info:
                await http.post(
                    f"{emu.base_url}/services/aigc/video-generation/video-synthesis",
                    json={"model": FIELDS["model"], "input": {"prompt": "x"}},
                    headers={"Authorization": "Bearer sk-x", "X-DashScope-Async": "enable"},
                )
            assert not isinstance(info.value, (httpx.ConnectError, httpx.ConnectTimeout))


async def test_small_pool_warns_that_requests_would_queue_in_it() -> None:
    """A pool smaller than the governor's HTTP slots is refused politely: a warning that
    says what to change; a pool that fits draws none."""
    async with AioHttpClient(max_connections=5) as http:
        with pytest.warns(RuntimeWarning, match="max_connections=5"):
            await AsyncWanClient(api_key="sk-x", http_client=http, limits=Limits()).aclose()
        await AsyncWanClient(
            api_key="sk-x", http_client=http, limits=Limits(max_connections=5)
        ).aclose()
    mine = httpx.AsyncClient(limits=httpx.Limits(max_connections=3))
    with pytest.warns(RuntimeWarning, match="pool holds 3"):
        await AsyncWanClient(api_key="sk-x", http_client=mine).aclose()
    await mine.aclose()


def test_options_it_sets_itself_are_refused_and_missing_extra_is_explained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """transport=/limits= are refused; without the extra, the error says what to install."""
    with pytest.raises(TypeError, match="transport"):
        AioHttpClient(transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    monkeypatch.setitem(sys.modules, "httpx_aiohttp", None)
    with pytest.raises(ImportError, match=r"wanr2v\[aiohttp\]"):
        AioHttpClient()
    assert "AioHttpClient" in wanr2v.__all__


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_under_trio_falls_back_to_httpx_with_a_warning() -> None:
    """Under trio the client warns once and sends through httpx's default transport."""
    with serve(EmulatorConfig(time_scale=60, generation_time=(60, 120), seed=14)) as emu:
        async with AioHttpClient() as http, client_for(emu, http_client=http) as c:
            with pytest.warns(RuntimeWarning, match="asyncio only"):
                task = await c.async_call(**FIELDS)
            assert (await c.wait(task)).succeeded
            assert not _used_aiohttp(http)


async def test_lean_path_answers_as_httpx_does() -> None:
    """A plain request (the lean path) gives the same httpx.Response as httpx's full
    path: decoded body, headers, request, cookies stored; a request with hooks takes the
    full path (the hook runs)."""
    import gzip
    import json

    from aiohttp import web

    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        seen.append({**headers, "body": (await request.read()).decode()})
        body = gzip.compress(json.dumps({"ok": True, "echo": request.path}).encode())
        return web.Response(
            body=body,
            headers={
                "Content-Encoding": "gzip",
                "Content-Type": "application/json",
                "Set-Cookie": "sid=abc; Path=/",
                "X-Request-Id": "r1",
            },
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with AioHttpClient(headers={"User-Agent": "default-ua"}) as http:
            url = httpx.URL(f"http://127.0.0.1:{port}/api/v1/tasks/t1")
            r = await http.request(
                "POST", url, json={"a": "é"}, headers={"X-Extra": "1"}, params=None
            )
            assert r.status_code == 200 and r.json() == {"ok": True, "echo": "/api/v1/tasks/t1"}
            assert r.headers["x-request-id"] == "r1" and r.request.url == url
            assert http.cookies.get("sid") == "abc"  # stored from Set-Cookie
            assert seen[0]["user-agent"] == "default-ua" and seen[0]["x-extra"] == "1"
            assert seen[0]["content-type"] == "application/json"
            assert seen[0]["body"] == '{"a":"é"}'  # httpx's own JSON encoding
            # Cookies stored now: the next request takes the full path and sends them.
            await http.get(url)
            assert "sid=abc" in seen[1].get("cookie", "")
        hooked: list[str] = []

        async def hook(request: httpx.Request) -> None:
            hooked.append(str(request.url))

        async with AioHttpClient(event_hooks={"request": [hook]}) as http:
            assert (await http.get(f"http://127.0.0.1:{port}/x")).json()["echo"] == "/x"
        assert hooked == [f"http://127.0.0.1:{port}/x"]
    finally:
        await runner.cleanup()
