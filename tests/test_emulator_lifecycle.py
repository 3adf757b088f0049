"""Task lifecycle, quotas, cancel, list, expiry, usage, regions and records of the emulator."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from wanr2v.testing import Emulator, EmulatorConfig, ManualClock, Quotas, RegionConfig

KEY = "sk-lifecycle"
CREATE = "/services/aigc/video-generation/video-synthesis"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}
VIDEO = "https://cdn.example.com/role.mp4"
IMAGE = "https://cdn.example.com/object.png"
START = 1_750_000_000.0  # 2025-06-15 23:06:40 UTC+8
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")


@pytest.fixture
def anyio_backend() -> str:
    """These tests run under asyncio only (the trio path is covered elsewhere)."""
    return "asyncio"


def body(
    model: str = "wan2.6-r2v-flash", refs: list[str] | None = None, **params: Any
) -> dict[str, Any]:
    """A create body."""
    return {
        "model": model,
        "input": {"prompt": "character1 waves", "reference_urls": refs or [VIDEO]},
        "parameters": params,
    }


def make(quotas: Quotas | None = None, **kw: Any) -> Emulator:
    """An emulator on a manual clock with a fixed 100 s generation time."""
    kw.setdefault("generation_time", (100.0, 100.0))
    kw.setdefault("dispatch_delay", 0.0)
    return Emulator(
        EmulatorConfig(clock=ManualClock(start=START), quotas=quotas or Quotas(), seed=5, **kw)
    )


@pytest.fixture
def emu() -> Emulator:
    """Vendor quotas, manual clock."""
    return make()


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client reaching ``emu`` in process."""
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        yield c


async def create(client: httpx.AsyncClient, data: dict[str, Any] | None = None) -> httpx.Response:
    """POST a create."""
    return await client.post(CREATE, json=data or body(), headers=HEADERS)


async def task_id(client: httpx.AsyncClient, data: dict[str, Any] | None = None) -> str:
    """Create a task and return its id."""
    resp = await create(client, data)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["output"]["task_id"])


async def status(client: httpx.AsyncClient, tid: str) -> dict[str, Any]:
    """Query a task; return the output."""
    resp = await client.get(f"/tasks/{tid}", headers=HEADERS)
    assert resp.status_code == 200, resp.text
    out: dict[str, Any] = resp.json()["output"]
    return out


@pytest.mark.anyio
async def test_sixth_create_in_one_second_is_429(client: httpx.AsyncClient, emu: Emulator) -> None:
    """Five creates per emulator second; the sixth gets 429 Throttling.RateQuota with Retry-After."""
    for _ in range(5):
        assert (await create(client)).status_code == 200
    resp = await create(client)
    assert resp.status_code == 429
    assert resp.json()["code"] == "Throttling.RateQuota"
    assert resp.headers["retry-after"]
    emu.advance(1.0)
    assert (await create(client)).status_code == 200
    assert emu.stats().throttled == 1


@pytest.mark.anyio
async def test_create_quota_is_per_model(client: httpx.AsyncClient) -> None:
    """The create rate is counted per model: the other model still has its five."""
    for _ in range(5):
        assert (await create(client)).status_code == 200
    assert (await create(client, body(model="wan2.6-r2v"))).status_code == 200


@pytest.mark.anyio
async def test_sixth_task_waits_pending_until_a_slot_frees(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    """Five tasks run at once; the sixth stays PENDING, then starts when the first ends."""
    ids = [await task_id(client) for _ in range(5)]
    emu.advance(1.0)
    sixth = await task_id(client)
    assert [(await status(client, t))["task_status"] for t in ids] == ["RUNNING"] * 5
    assert (await status(client, sixth))["task_status"] == "PENDING"
    emu.advance(99.5)
    assert (await status(client, sixth))["task_status"] == "RUNNING"
    out = await status(client, ids[0])
    assert out["task_status"] == "SUCCEEDED"
    records = {r.task_id: r for r in emu.task_records()}
    assert records[sixth].scheduled_time == pytest.approx(records[ids[0]].end_time)


@pytest.mark.anyio
async def test_queue_is_fifo() -> None:
    """Queued tasks start in creation order as slots free."""
    emu = make(Quotas(create_per_s=None, running=1))
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        ids = [await task_id(c) for _ in range(4)]
        emu.advance(250)
        records = {r.task_id: r for r in emu.task_records()}
        starts = [records[t].scheduled_time for t in ids[:3]]
        assert starts == [START, START + 100, START + 200]
        assert records[ids[3]].scheduled_time is None
        assert [records[t].status for t in ids] == ["SUCCEEDED", "SUCCEEDED", "RUNNING", "PENDING"]


@pytest.mark.anyio
async def test_strict_mode_answers_allocation_quota() -> None:
    """With strict_running, a sixth task while five run is 429 Throttling.AllocationQuota."""
    emu = make(Quotas(create_per_s=None, strict_running=True))
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        for _ in range(5):
            await task_id(c)
        resp = await create(c)
        assert resp.status_code == 429
        assert resp.json()["code"] == "Throttling.AllocationQuota"
        emu.advance(100)
        assert (await create(c)).status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("GET", "/tasks/some-id", 20),
        ("GET", "/tasks", 20),
        ("POST", "/tasks/some-id/cancel", 20),
        ("GET", "/uploads?action=getPolicy&model=wan2.6-r2v", 100),
    ],
)
async def test_request_rates(
    client: httpx.AsyncClient, emu: Emulator, method: str, path: str, limit: int
) -> None:
    """Query, list and cancel allow 20 per second; getPolicy 100; then 429 RateQuota."""
    for _ in range(limit):
        assert (await client.request(method, path, headers=HEADERS)).status_code != 429
    resp = await client.request(method, path, headers=HEADERS)
    assert resp.status_code == 429
    assert resp.json()["code"] == "Throttling.RateQuota"
    emu.advance(1.0)
    assert (await client.request(method, path, headers=HEADERS)).status_code != 429


@pytest.mark.anyio
async def test_quotas_off() -> None:
    """Quotas.off() lets any burst through."""
    emu = make(Quotas.off())
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        for _ in range(30):
            assert (await create(c)).status_code == 200
        assert emu.stats().tasks_by_status == {"RUNNING": 30}


@pytest.mark.anyio
async def test_rates_follow_the_time_scale() -> None:
    """At time_scale 100 the quota is 5 per emulator second: 500 per real second."""
    emu = Emulator(EmulatorConfig(time_scale=100, quotas=Quotas(running=None)))
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        codes = []
        for _ in range(12):
            codes.append((await create(c)).status_code)
            await anyio.sleep(0.003)  # 0.3 emulator seconds
        assert 429 not in codes[:2]
        assert codes.count(200) > 5


@pytest.mark.anyio
async def test_lifecycle_shapes(client: httpx.AsyncClient, emu: Emulator) -> None:
    """PENDING has submit_time; RUNNING adds scheduled_time; SUCCEEDED adds end_time, video, usage."""
    emu2 = make(Quotas(running=1))
    async with httpx.AsyncClient(transport=emu2.transport(), base_url=emu2.base_url) as c:
        await task_id(c)
        queued = await task_id(c)
        out = await status(c, queued)
        assert out["task_status"] == "PENDING"
        assert set(out) == {"task_id", "task_status", "submit_time"}
    tid = await task_id(client)
    running = await status(client, tid)
    assert running["task_status"] == "RUNNING"
    assert TIME_RE.match(running["scheduled_time"])
    emu.advance(100)
    resp = await client.get(f"/tasks/{tid}", headers=HEADERS)
    done = resp.json()
    out = done["output"]
    assert out["task_status"] == "SUCCEEDED"
    assert all(TIME_RE.match(out[k]) for k in ("submit_time", "scheduled_time", "end_time"))
    assert out["submit_time"] == "2025-06-15 23:06:40.000"
    assert out["orig_prompt"] == "character1 waves"
    assert "Expires=" in out["video_url"]
    assert "Signature=" in out["video_url"]
    assert done["usage"]["video_count"] == 1


@pytest.mark.anyio
async def test_unknown_task_is_200_unknown(client: httpx.AsyncClient) -> None:
    """A task id that never existed: 200 with task_status UNKNOWN."""
    out = await status(client, "00000000-0000-4000-8000-000000000000")
    assert out["task_status"] == "UNKNOWN"


@pytest.mark.anyio
async def test_task_ids_expire_after_24_hours(client: httpx.AsyncClient, emu: Emulator) -> None:
    """After 24 h a task id queries as UNKNOWN."""
    tid = await task_id(client)
    emu.advance(24 * 3600 - 1)
    assert (await status(client, tid))["task_status"] == "SUCCEEDED"
    emu.advance(2)
    assert (await status(client, tid))["task_status"] == "UNKNOWN"


@pytest.mark.anyio
async def test_cancel_only_while_pending() -> None:
    """Cancel succeeds on a PENDING task; a RUNNING or finished task gives 400 UnsupportedOperation."""
    emu = make(Quotas(running=1))
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        running = await task_id(c)
        queued = await task_id(c)
        resp = await c.post(f"/tasks/{queued}/cancel", headers=HEADERS)
        assert resp.status_code == 200
        assert set(resp.json()) == {"request_id"}
        assert (await status(c, queued))["task_status"] == "CANCELED"
        for tid in (running, queued, "no-such-task"):
            resp = await c.post(f"/tasks/{tid}/cancel", headers=HEADERS)
            assert resp.status_code == 400
            assert resp.json()["code"] == "UnsupportedOperation"
            assert "PENDING" in resp.json()["message"]
        emu.advance(100)
        resp = await c.post(f"/tasks/{running}/cancel", headers=HEADERS)
        assert resp.status_code == 400


@pytest.mark.anyio
async def test_canceled_task_gives_its_turn_to_the_next() -> None:
    """Canceling a queued task lets the task behind it start at the next free slot."""
    emu = make(Quotas(create_per_s=None, running=1))
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        first = await task_id(c)
        second = await task_id(c)
        third = await task_id(c)
        await c.post(f"/tasks/{second}/cancel", headers=HEADERS)
        emu.advance(100)
        assert (await status(c, first))["task_status"] == "SUCCEEDED"
        assert (await status(c, third))["task_status"] == "RUNNING"


@pytest.mark.anyio
async def test_list_pages_and_shape() -> None:
    """List is flat, paged (page_no, page_size, total, total_page), with epoch-ms times."""
    emu = make(Quotas.off())
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        ids = [await task_id(c) for _ in range(25)]
        resp = await c.get("/tasks", params={"page_no": 3, "page_size": 10}, headers=HEADERS)
        page = resp.json()
        assert {"request_id", "total", "total_page", "page_no", "page_size", "data"} <= set(page)
        assert (page["total"], page["total_page"], page["page_no"]) == (25, 3, 3)
        assert len(page["data"]) == 5
        row = page["data"][0]
        assert row["status"] == "RUNNING"
        assert "task_status" not in row
        assert row["gmt_create"] == int(START * 1000)
        assert row["model_name"] == "wan2.6-r2v-flash"
        assert {r["task_id"] for r in page["data"]} <= set(ids)
        default = (await c.get("/tasks", headers=HEADERS)).json()
        assert (default["page_no"], default["page_size"], len(default["data"])) == (1, 10, 10)


@pytest.mark.anyio
async def test_list_filters() -> None:
    """List filters by task_id, model_name and status."""
    emu = make(Quotas.off())
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        a = await task_id(c)
        await task_id(c, body(model="wan2.6-r2v"))
        emu.advance(100)
        canceled_emu = (
            await c.get("/tasks", params={"status": "SUCCEEDED"}, headers=HEADERS)
        ).json()
        assert canceled_emu["total"] == 2
        by_model = (
            await c.get("/tasks", params={"model_name": "wan2.6-r2v"}, headers=HEADERS)
        ).json()
        assert [r["model_name"] for r in by_model["data"]] == ["wan2.6-r2v"]
        by_id = (await c.get("/tasks", params={"task_id": a}, headers=HEADERS)).json()
        assert [r["task_id"] for r in by_id["data"]] == [a]
        none = (await c.get("/tasks", params={"status": "FAILED"}, headers=HEADERS)).json()
        assert none["total"] == 0


@pytest.mark.anyio
async def test_list_window_is_24_hours(client: httpx.AsyncClient, emu: Emulator) -> None:
    """Default window: the last 24 h; an explicit window over 24 h or a bad time is 400."""
    await task_id(client)
    emu.advance(25 * 3600)
    await task_id(client)
    assert (await client.get("/tasks", headers=HEADERS)).json()["total"] == 1
    old = {"start_time": "20250615000000", "end_time": "20250615235959"}
    assert (await client.get("/tasks", params=old, headers=HEADERS)).json()["total"] == 1
    wide = {"start_time": "20250614000000", "end_time": "20250616000001"}
    resp = await client.get("/tasks", params=wide, headers=HEADERS)
    assert resp.status_code == 400
    assert resp.json()["code"] == "InvalidParameter"
    emu.advance(1)
    bad = await client.get("/tasks", params={"start_time": "2025-06-15"}, headers=HEADERS)
    assert bad.status_code == 400


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("refs", "duration", "size", "input_s", "sr"),
    [
        ([VIDEO], 5, "1280*720", 5, 720),
        ([VIDEO, VIDEO], 10, "1920*1080", 5, 1080),
        ([VIDEO, IMAGE, IMAGE], 5, "960*960", 1.65, 720),
        ([VIDEO, VIDEO, VIDEO, IMAGE], 4, "1440*1440", 3.75, 1080),
        ([VIDEO, VIDEO, IMAGE, IMAGE, IMAGE], 2, "832*1088", 2, 720),
        ([IMAGE, IMAGE], 3, "1248*1632", 0, 1080),
    ],
)
async def test_usage_follows_billing_rules(
    refs: list[str], duration: int, size: str, input_s: float, sr: int
) -> None:
    """Input video seconds: 5 s split evenly over references, videos only; plus output seconds."""
    emu = make(Quotas.off())
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        tid = await task_id(c, body(refs=refs, duration=duration, size=size))
        emu.advance(100)
        usage = (await c.get(f"/tasks/{tid}", headers=HEADERS)).json()["usage"]
    assert usage["input_video_duration"] == pytest.approx(input_s)
    assert usage["output_video_duration"] == duration
    assert usage["duration"] == pytest.approx(input_s + duration)
    assert (usage["size"], usage["SR"], usage["video_count"]) == (size, sr, 1)


@pytest.mark.anyio
async def test_same_seed_same_schedule() -> None:
    """The same seed gives the same task ids and generation times; another seed does not."""

    async def run(seed: int) -> list[tuple[str, float]]:
        emu = Emulator(
            EmulatorConfig(clock=ManualClock(start=START), seed=seed, quotas=Quotas.off())
        )
        async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
            for _ in range(5):
                await task_id(c)
        return [(r.task_id, r.generation_time) for r in emu.task_records()]

    first = await run(11)
    assert first == await run(11)
    assert first != await run(12)
    assert all(45 <= g <= 200 for _, g in first)


@pytest.mark.anyio
async def test_duplicates_and_records(client: httpx.AsyncClient, emu: Emulator) -> None:
    """Identical creates count as duplicates; a record notes when a query first saw it final."""
    a = await task_id(client)
    await task_id(client)
    await task_id(client, body(seed=1))
    stats = emu.stats()
    assert (stats.tasks_created, stats.duplicate_creates) == (3, 1)
    emu.advance(100)
    before = time.monotonic()
    await status(client, a)
    rec = next(r for r in emu.task_records() if r.task_id == a)
    assert rec.final_status == "SUCCEEDED"
    assert rec.first_final_query == pytest.approx(START + 100)
    assert rec.first_final_query_monotonic is not None
    assert rec.first_final_query_monotonic >= before
    assert stats.count("create", 200) == 3


def test_ten_thousand_tasks_on_one_heap() -> None:
    """10,000 tasks are created and finish through the event heap in well under a second each."""
    emu = make(Quotas(create_per_s=None), generation_time=(60.0, 300.0))
    headers = {k.lower(): v for k, v in HEADERS.items()}
    payload = b'{"model":"wan2.6-r2v-flash","input":{"prompt":"x","reference_urls":["https://a.b/c.mp4"]}}'
    t0 = time.perf_counter()
    for _ in range(10_000):
        assert emu.create("beijing", headers, payload).status == 200
    emu.advance(10_000 * 300 / 5)
    stats = emu.stats()
    assert stats.tasks_by_status == {"SUCCEEDED": 10_000}
    assert time.perf_counter() - t0 < 20


@pytest.mark.anyio
async def test_regions_have_their_own_keys_tasks_and_quotas() -> None:
    """A key of one region is 401 in another; tasks and quotas are per region."""
    emu = Emulator(
        EmulatorConfig(
            api_keys=["sk-bj"],
            regions={"singapore": RegionConfig(api_keys=["sk-sg"])},
            clock=ManualClock(start=START),
        )
    )
    assert emu.base_url_for("singapore").endswith("/singapore/api/v1")
    bj = {"Authorization": "Bearer sk-bj", "X-DashScope-Async": "enable"}
    sg = {"Authorization": "Bearer sk-sg", "X-DashScope-Async": "enable"}
    async with httpx.AsyncClient(transport=emu.transport()) as c:
        bj_create = emu.base_url + CREATE
        sg_create = emu.base_url_for("singapore") + CREATE
        resp = await c.post(bj_create, json=body(), headers=sg)
        assert (resp.status_code, resp.json()["code"]) == (401, "InvalidApiKey")
        assert (await c.post(sg_create, json=body(), headers=bj)).status_code == 401
        tid = (await c.post(bj_create, json=body(), headers=bj)).json()["output"]["task_id"]
        other = await c.get(f"{emu.base_url_for('singapore')}/tasks/{tid}", headers=sg)
        assert other.json()["output"]["task_status"] == "UNKNOWN"
        for _ in range(4):
            assert (await c.post(bj_create, json=body(), headers=bj)).status_code == 200
        assert (await c.post(bj_create, json=body(), headers=bj)).status_code == 429
        assert (await c.post(sg_create, json=body(), headers=sg)).status_code == 200


@pytest.mark.anyio
async def test_open_regions_refuse_keys_of_other_regions() -> None:
    """In a region without configured keys, a key configured for another region is still 401."""
    emu = Emulator(
        EmulatorConfig(regions={"singapore": RegionConfig(api_keys=["sk-sg"])}, clock=ManualClock())
    )
    sg = {"Authorization": "Bearer sk-sg", "X-DashScope-Async": "enable"}
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        assert (await c.post(CREATE, json=body(), headers=sg)).status_code == 401
        assert (await c.post(CREATE, json=body(), headers=HEADERS)).status_code == 200


@pytest.mark.anyio
async def test_unknown_region_prefix_is_not_found(client: httpx.AsyncClient, emu: Emulator) -> None:
    """A region the emulator does not play is not routed."""
    resp = await client.get(f"{emu.origin}/mars/api/v1/tasks", headers=HEADERS)
    assert resp.status_code == 404
    with pytest.raises(KeyError):
        emu.base_url_for("mars")
