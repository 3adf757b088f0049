"""Fault injection: every kind, in process and over a real loopback socket, from Python and HTTP."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from wanr2v.testing import (
    Emulator,
    EmulatorConfig,
    Endpoint,
    FaultKind,
    FaultRule,
    ManualClock,
    Quotas,
    RegionConfig,
    serve,
)

KEY = "sk-faults"
CREATE = "/services/aigc/video-generation/video-synthesis"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}
BODY = {
    "model": "wan2.6-r2v-flash",
    "input": {"prompt": "x", "reference_urls": ["https://cdn.example.com/a.mp4"]},
}


@pytest.fixture
def anyio_backend() -> str:
    """These tests run under asyncio only (one test below runs under trio too)."""
    return "asyncio"


def config() -> EmulatorConfig:
    """Manual clock, quotas off, 10 s generation."""
    return EmulatorConfig(
        clock=ManualClock(start=1_750_000_000.0),
        quotas=Quotas.off(),
        seed=9,
        generation_time=(10.0, 10.0),
    )


@pytest.fixture
def emu() -> Emulator:
    """An in-process emulator."""
    return Emulator(config())


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client reaching ``emu`` in process."""
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        yield c


@pytest.fixture
def served() -> Iterator[Emulator]:
    """An emulator on a loopback socket."""
    with serve(config()) as emu:
        yield emu


async def create(client: httpx.AsyncClient) -> httpx.Response:
    """POST a valid create."""
    return await client.post(CREATE, json=BODY, headers=HEADERS)


@pytest.mark.anyio
async def test_throttle_burst_then_normal(client: httpx.AsyncClient, emu: Emulator) -> None:
    """A scripted burst of 429s carries Retry-After, then requests pass again."""
    emu.faults.add(
        FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.CREATE, count=2, retry_after=3)
    )
    for _ in range(2):
        resp = await create(client)
        assert resp.status_code == 429
        assert resp.json()["code"] == "Throttling.RateQuota"
        assert resp.headers["retry-after"] == "3"
    assert (await create(client)).status_code == 200
    stats = emu.stats()
    assert stats.throttled == 2
    assert stats.tasks_created == 1
    assert stats.faults_injected == {"throttle": 2}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "status", "code"),
    [
        (FaultKind.SERVER_ERROR, 500, "InternalError"),
        (FaultKind.UNAVAILABLE, 503, "ModelUnavailable"),
    ],
)
async def test_server_errors(
    client: httpx.AsyncClient, emu: Emulator, kind: FaultKind, status: int, code: str
) -> None:
    """500 InternalError and 503 ModelUnavailable, with the vendor's body shape."""
    emu.faults.add(FaultRule(kind=kind, endpoint=Endpoint.QUERY, count=1))
    resp = await client.get("/tasks/x", headers=HEADERS)
    assert resp.status_code == status
    assert resp.json()["code"] == code
    assert resp.json()["request_id"]
    assert (await client.get("/tasks/x", headers=HEADERS)).status_code == 200


@pytest.mark.anyio
async def test_custom_error_code(client: httpx.AsyncClient, emu: Emulator) -> None:
    """A rule may choose status, code and message."""
    emu.faults.add(
        FaultRule(kind=FaultKind.SERVER_ERROR, count=1, status=500, code="SystemError", message="m")
    )
    resp = await client.get("/tasks", headers=HEADERS)
    assert (resp.status_code, resp.json()["code"], resp.json()["message"]) == (
        500,
        "SystemError",
        "m",
    )


@pytest.mark.anyio
async def test_random_faults_are_seeded() -> None:
    """Random faults with a seed strike the same requests on every run."""

    async def pattern() -> list[int]:
        emu = Emulator(config())
        emu.faults.add(FaultRule(kind=FaultKind.SERVER_ERROR, probability=0.3, seed=42))
        async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
            return [(await c.get("/tasks/x", headers=HEADERS)).status_code for _ in range(40)]

    first = await pattern()
    assert first == await pattern()
    assert 3 < first.count(500) < 25


@pytest.mark.anyio
async def test_faults_can_target_a_region() -> None:
    """A rule with a region strikes only that region."""
    emu = Emulator(EmulatorConfig(clock=ManualClock(), regions={"singapore": RegionConfig()}))
    emu.faults.add(FaultRule(kind=FaultKind.SERVER_ERROR, region="singapore"))
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        assert (await c.get("/tasks/x", headers=HEADERS)).status_code == 200
        sg = emu.base_url_for("singapore") + "/tasks/x"
        assert (await c.get(sg, headers=HEADERS)).status_code == 500


@pytest.mark.anyio
async def test_slow_answer(client: httpx.AsyncClient, emu: Emulator) -> None:
    """A SLOW fault answers correctly, delay real seconds late."""
    emu.faults.add(FaultRule(kind=FaultKind.SLOW, endpoint=Endpoint.QUERY, count=1, delay=0.2))
    t0 = time.monotonic()
    resp = await client.get("/tasks/x", headers=HEADERS)
    assert resp.status_code == 200
    assert time.monotonic() - t0 >= 0.2


@pytest.mark.anyio
async def test_drop_in_process_is_a_transport_error(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    """In process, a dropped connection raises httpx.RemoteProtocolError and creates nothing."""
    emu.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.CREATE, count=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await create(client)
    assert emu.stats().tasks_created == 0
    assert emu.stats().count("create", 0) == 1


@pytest.mark.anyio
async def test_drop_after_commit_in_process(client: httpx.AsyncClient, emu: Emulator) -> None:
    """In process, the create is committed, then the client sees a transport error."""
    emu.faults.add(FaultRule(kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, count=1))
    with pytest.raises(httpx.RemoteProtocolError):
        await create(client)
    assert emu.stats().tasks_created == 1
    listed = (await client.get("/tasks", headers=HEADERS)).json()
    assert listed["total"] == 1


@pytest.mark.anyio
async def test_hang_in_process_is_a_read_timeout(client: httpx.AsyncClient, emu: Emulator) -> None:
    """In process, a hang raises httpx.ReadTimeout after the request's read timeout."""
    emu.faults.add(FaultRule(kind=FaultKind.HANG, endpoint=Endpoint.QUERY, count=1))
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        await client.get("/tasks/x", headers=HEADERS, timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 60  # the read timeout, not the hour-long hang


@pytest.mark.anyio
async def test_fail_task(client: httpx.AsyncClient, emu: Emulator) -> None:
    """FAIL_TASK: the create answers 200, the task ends FAILED with the chosen code."""
    emu.faults.add(
        FaultRule(kind=FaultKind.FAIL_TASK, count=1, code="InternalError.Algo", message="boom")
    )
    tid = (await create(client)).json()["output"]["task_id"]
    emu.advance(11)
    out = (await client.get(f"/tasks/{tid}", headers=HEADERS)).json()
    assert out["output"]["task_status"] == "FAILED"
    assert (out["output"]["code"], out["output"]["message"]) == ("InternalError.Algo", "boom")
    assert "usage" not in out


@pytest.mark.anyio
async def test_expired_url_fault(client: httpx.AsyncClient, emu: Emulator) -> None:
    """EXPIRED_URL: the video host answers 403 as for an expired signature."""
    tid = (await create(client)).json()["output"]["task_id"]
    emu.advance(11)
    url = (await client.get(f"/tasks/{tid}", headers=HEADERS)).json()["output"]["video_url"]
    emu.faults.add(FaultRule(kind=FaultKind.EXPIRED_URL, count=1))
    resp = await client.get(url)
    assert resp.status_code == 403
    assert "<Code>AccessDenied</Code>" in resp.text
    assert (await client.get(url)).status_code == 200


def test_fault_rule_checks_its_fields() -> None:
    """A rule refuses a negative count, a probability outside [0, 1] and unknown fields."""
    with pytest.raises(ValueError):
        FaultRule(kind=FaultKind.DROP, count=-1)
    with pytest.raises(ValueError):
        FaultRule(kind=FaultKind.DROP, probability=1.5)
    with pytest.raises(ValueError):
        FaultRule.from_dict({"kind": "drop", "colour": "red"})
    assert FaultRule.from_dict({"kind": "drop", "endpoint": "create"}).endpoint is Endpoint.CREATE


def test_faults_clear_and_remove(emu: Emulator) -> None:
    """Rules can be removed one by one or all at once."""
    a = emu.faults.add(FaultRule(kind=FaultKind.DROP))
    emu.faults.add(FaultRule(kind=FaultKind.SLOW))
    emu.faults.remove(a)
    assert [r.kind for _, r, _ in emu.faults.rules()] == [FaultKind.SLOW]
    emu.faults.clear()
    assert emu.faults.rules() == []


# --- over a real socket ----------------------------------------------------------


def test_drop_over_loopback_is_a_transport_error(served: Emulator) -> None:
    """Over a socket, a drop reaches the client as a transport error (not a 500); serving goes on."""
    served.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.CREATE, count=1))
    with httpx.Client(base_url=served.base_url) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.post(CREATE, json=BODY, headers=HEADERS)
        assert c.post(CREATE, json=BODY, headers=HEADERS).status_code == 200
    stats = served.stats()
    assert stats.tasks_created == 1
    assert stats.count("create", 500) == 0


def test_drop_after_commit_over_loopback(served: Emulator) -> None:
    """Over a socket, the task exists but the client gets a transport error."""
    served.faults.add(
        FaultRule(kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, count=1)
    )
    with httpx.Client(base_url=served.base_url) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            c.post(CREATE, json=BODY, headers=HEADERS)
        assert c.get("/tasks", headers=HEADERS).json()["total"] == 1
    assert served.stats().tasks_created == 1


def test_hang_over_loopback_is_a_read_timeout(served: Emulator) -> None:
    """Over a socket, a hang makes the client's read time out."""
    served.faults.add(FaultRule(kind=FaultKind.HANG, endpoint=Endpoint.QUERY, count=1))
    with httpx.Client(base_url=served.base_url) as c:
        with pytest.raises(httpx.ReadTimeout):
            c.get("/tasks/x", headers=HEADERS, timeout=0.3)
        assert c.get("/tasks/x", headers=HEADERS).status_code == 200


def test_short_hang_over_loopback_ends_in_a_drop(served: Emulator) -> None:
    """A hang shorter than the client's timeout ends with the connection dropped."""
    served.faults.add(FaultRule(kind=FaultKind.HANG, endpoint=Endpoint.QUERY, count=1, delay=0.1))
    with (
        httpx.Client(base_url=served.base_url) as c,
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
    ):
        c.get("/tasks/x", headers=HEADERS, timeout=5)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_loopback_drop_under_both_backends(served: Emulator, anyio_backend: str) -> None:
    """Async clients under asyncio and trio see the socket drop as a transport error."""
    served.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.QUERY, count=1))
    async with httpx.AsyncClient(base_url=served.base_url) as c:
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await c.get("/tasks/x", headers=HEADERS)
        assert (await c.get("/tasks/x", headers=HEADERS)).status_code == 200


def test_admin_routes(served: Emulator) -> None:
    """Faults, stats, tasks, clock and reset are driven over /_emulator/ too."""
    with httpx.Client(base_url=served.origin) as c:
        rule: dict[str, Any] = {"kind": "throttle", "endpoint": "create", "count": 1}
        assert c.post("/_emulator/faults", json=rule).json() == {"ids": [1]}
        assert c.get("/_emulator/faults").json()[0]["kind"] == "throttle"
        assert c.post("/_emulator/faults", json={"kind": "nope"}).status_code == 400
        api = served.base_url
        assert c.post(api + CREATE, json=BODY, headers=HEADERS).status_code == 429
        tid = c.post(api + CREATE, json=BODY, headers=HEADERS).json()["output"]["task_id"]
        now = c.get("/_emulator/clock").json()["now"]
        assert c.post("/_emulator/clock/advance", json={"seconds": 11}).json()["now"] == now + 11
        assert (
            c.get(f"{api}/tasks/{tid}", headers=HEADERS).json()["output"]["task_status"]
            == "SUCCEEDED"
        )
        stats = c.get("/_emulator/stats").json()
        assert stats["throttled"] == 1
        assert stats["tasks_created"] == 1
        assert c.get("/_emulator/tasks").json()[0]["task_id"] == tid
        c.post("/_emulator/faults", json=rule)
        assert c.delete("/_emulator/faults").status_code == 200
        assert c.get("/_emulator/faults").json() == []
        assert c.post("/_emulator/reset").status_code == 200
        assert c.get("/_emulator/stats").json()["tasks_created"] == 0
