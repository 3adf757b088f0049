"""What deterministic tests need from the emulator: task states scripted by poll count,
throttling with or without ``Retry-After``, and an injected 429's ``Retry-After`` that
follows the time scale like the emulator's own.

Nothing here depends on the machine's speed: the emulator runs on a manual clock (or a
time scale whose clock is never consulted), clients run under trio's MockClock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import trio.testing

from wanr2v.testing import (
    Emulator,
    EmulatorConfig,
    Endpoint,
    FaultKind,
    FaultRule,
    ManualClock,
    Quotas,
)
from wanr2v.testing._client import client_for

KEY = "sk-scripts"
CREATE = "/services/aigc/video-generation/video-synthesis"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}
BODY = {
    "model": "wan2.6-r2v-flash",
    "input": {"prompt": "character1 waves", "reference_urls": ["https://cdn.example.com/a.mp4"]},
}
START = 1_750_000_000.0


@pytest.fixture
def anyio_backend() -> Any:
    """trio under virtual time: a client's sleeps cost nothing and measure exactly."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def manual(**kw: Any) -> Emulator:
    """An emulator whose clock moves only when told; 100 s generation, quotas off."""
    kw.setdefault("quotas", Quotas.off())
    return Emulator(
        EmulatorConfig(clock=ManualClock(start=START), seed=4, generation_time=(100.0, 100.0), **kw)
    )


@pytest.fixture
def emu() -> Emulator:
    return manual()


@pytest.fixture
async def http(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        yield c


async def new_task(http: httpx.AsyncClient) -> str:
    resp = await http.post(CREATE, json=BODY, headers=HEADERS)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["output"]["task_id"])


async def query(http: httpx.AsyncClient, tid: str) -> dict[str, Any]:
    resp = await http.get(f"/tasks/{tid}", headers=HEADERS)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()["output"]
    return out


# --- states scripted by poll count ---------------------------------------------------


@pytest.mark.anyio
async def test_a_scripted_task_answers_by_query_count_not_by_clock(
    http: httpx.AsyncClient, emu: Emulator
) -> None:
    """PENDING for 3 queries, RUNNING for 5, then SUCCEEDED, on a clock that never moves;
    the SUCCEEDED answer carries a video URL that serves the video."""
    emu.script_polls(("PENDING", 3), ("RUNNING", 5), "SUCCEEDED")
    tid = await new_task(http)
    seen = [(await query(http, tid))["task_status"] for _ in range(10)]
    assert seen == ["PENDING"] * 3 + ["RUNNING"] * 5 + ["SUCCEEDED"] * 2
    assert emu.now() == START  # the clock played no part
    out = await query(http, tid)
    assert out["scheduled_time"] and out["end_time"]
    video = await http.get(out["video_url"])
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    [record] = emu.task_records()
    assert record.status == "SUCCEEDED" and record.first_final_query == START


@pytest.mark.anyio
async def test_a_script_overrides_a_clock_that_says_otherwise(
    http: httpx.AsyncClient, emu: Emulator
) -> None:
    """Hours past its generation time, a scripted task is still PENDING until its script
    says otherwise; a script can end FAILED (with a code); only the next task is scripted."""
    emu.script_polls(("PENDING", 1), "FAILED")
    failing = await new_task(http)
    plain = await new_task(http)
    emu.advance(3600.0)
    assert (await query(http, failing))["task_status"] == "PENDING"
    out = await query(http, failing)
    assert out["task_status"] == "FAILED" and out["code"] == "InternalError.Algo"
    assert (await query(http, plain))["task_status"] == "SUCCEEDED"  # by its clock


@pytest.mark.anyio
async def test_an_existing_task_can_be_scripted_from_now_on(
    http: httpx.AsyncClient, emu: Emulator
) -> None:
    """``task_id=``: the script's count starts at the next query of that task."""
    tid = await new_task(http)
    emu.advance(50.0)
    assert (await query(http, tid))["task_status"] == "RUNNING"
    emu.script_polls(("RUNNING", 2), "SUCCEEDED", task_id=tid)
    seen = [(await query(http, tid))["task_status"] for _ in range(3)]
    assert seen == ["RUNNING", "RUNNING", "SUCCEEDED"]
    with pytest.raises(KeyError, match="no task"):
        emu.script_polls("SUCCEEDED", task_id="nope")
    with pytest.raises(ValueError, match="tasks must be >= 1"):
        emu.script_polls("SUCCEEDED", tasks=0)


@pytest.mark.anyio
async def test_a_queued_task_run_by_its_script_leaves_the_queue() -> None:
    """One slot: a task queued behind a running one and scripted SUCCEEDED ends at once
    and leaves the queue; the task queued after it starts when the slot frees, and the
    scripted task's times stay those of its script."""
    emu = manual(quotas=Quotas(create_per_s=None, running=1), dispatch_delay=0.0)
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as http:
        running = await new_task(http)
        emu.script_polls("SUCCEEDED")
        scripted = await new_task(http)
        queued = await new_task(http)
        done = await query(http, scripted)
        assert done["task_status"] == "SUCCEEDED"
        assert (await query(http, queued))["task_status"] == "PENDING"
        emu.advance(100.0)  # the running task ends; the slot goes to the next in the queue
        assert (await query(http, running))["task_status"] == "SUCCEEDED"
        assert (await query(http, queued))["task_status"] == "RUNNING"
        again = await query(http, scripted)
    assert again["end_time"] == done["end_time"] and again["task_status"] == "SUCCEEDED"


@pytest.mark.parametrize(
    "steps",
    [
        (("PENDING", 3),),  # no final state
        (("PENDING", 3), "RUNNING"),  # not a final state
        (("DONE", 3), "SUCCEEDED"),  # unknown state
        (("PENDING", -1), "SUCCEEDED"),  # negative count
        ("PENDING", "SUCCEEDED"),  # a step without its count
    ],
)
def test_a_bad_poll_script_is_refused_with_what_to_fix(steps: tuple[Any, ...]) -> None:
    """A script must be (PENDING/RUNNING, queries >= 0) steps ending SUCCEEDED or FAILED."""
    with pytest.raises(ValueError, match="poll script"):
        manual().script_polls(*steps)


@pytest.mark.anyio
async def test_a_client_waits_exactly_as_many_polls_as_scripted() -> None:
    """The client's wait ends on the 9th query, however slow or fast the clock: the task
    is queried exactly 3 + 5 + 1 times and the video saved."""
    emu = manual()
    emu.script_polls(("PENDING", 3), ("RUNNING", 5), "SUCCEEDED")
    async with client_for(emu, in_process=True, api_key=KEY) as client:
        with anyio.fail_after(3600):  # virtual seconds: a hang would end here, not a flake
            result = await client.call(
                model="wan2.6-r2v-flash",
                prompt="character1 waves",
                reference_urls=["https://cdn.example.com/a.mp4"],
            )
    assert result.video_url
    assert emu.stats().requests["query"] == {200: 9}


# --- throttling ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_throttle_with_and_without_retry_after(
    http: httpx.AsyncClient, emu: Emulator
) -> None:
    """A THROTTLE rule answers 429 with ``Retry-After`` (its own value, or the emulator's
    default) or, with ``send_retry_after=False``, without one."""
    emu.faults.add(FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.CREATE, count=1))
    emu.faults.add(
        FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.CREATE, count=1, retry_after=0.25)
    )
    emu.faults.add(
        FaultRule(
            kind=FaultKind.THROTTLE, endpoint=Endpoint.CREATE, count=1, send_retry_after=False
        )
    )
    first, second, third = [await http.post(CREATE, json=BODY, headers=HEADERS) for _ in range(3)]
    assert [r.status_code for r in (first, second, third)] == [429, 429, 429]
    assert first.json()["code"] == "Throttling.RateQuota"
    assert first.headers["retry-after"] == "1"  # manual clock: one emulator second is one
    assert second.headers["retry-after"] == "0.25"
    assert "retry-after" not in third.headers
    assert (await http.post(CREATE, json=BODY, headers=HEADERS)).status_code == 200
    assert (
        FaultRule.from_dict({"kind": "throttle", "send_retry_after": False}).send_retry_after
        is False
    )


@pytest.mark.parametrize("scale", [1.0, 60.0, 100.0])
@pytest.mark.anyio
async def test_an_injected_429_waits_as_long_as_the_emulators_own(scale: float) -> None:
    """The default ``Retry-After`` of an injected 429 is the emulator's rate-limit one:
    1 emulator second over the time scale, in real seconds (not ``1`` = 60 emulator
    seconds at 60x)."""
    emu = Emulator(EmulatorConfig(time_scale=scale, seed=1, quotas=Quotas(create_per_s=1)))
    emu.faults.add(FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.QUERY, count=1))
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as http:
        injected = await http.get("/tasks/x", headers=HEADERS)
    assert injected.status_code == 429
    assert float(injected.headers["retry-after"]) == pytest.approx(1.0 / scale, rel=1e-3)
    assert injected.headers["retry-after"] == emu._retry_after()


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.anyio
async def test_a_client_honours_retry_after_and_paces_itself_without_one(header: bool) -> None:
    """Two 429s on create: with ``Retry-After: 30`` the client waits at least 30 s before
    each retry; without one it paces itself (its governor's own, far shorter pause).
    Either way the create then succeeds, once. Virtual time: the waits are exact."""
    emu = manual()
    emu.faults.add(
        FaultRule(
            kind=FaultKind.THROTTLE,
            endpoint=Endpoint.CREATE,
            count=2,
            retry_after=30.0,
            send_retry_after=header,
        )
    )
    async with client_for(emu, in_process=True, api_key=KEY) as client:
        t0 = anyio.current_time()
        with anyio.fail_after(3600):
            task = await client.async_call(
                model="wan2.6-r2v-flash",
                prompt="character1 waves",
                reference_urls=["https://cdn.example.com/a.mp4"],
            )
        waited = anyio.current_time() - t0
        throttled = client.statistics().rate_limited
    assert task.task_id
    if header:
        assert waited >= 30.0, waited
    else:
        assert 0.0 < waited < 30.0, waited
    stats = emu.stats()
    assert stats.faults_injected == {"throttle": 2} and stats.tasks_created == 1
    assert throttled == 2
