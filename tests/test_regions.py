"""Several regions at once: per-region keys, quotas and routing; tasks remember where
they live (against a two-region emulator on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

import wanr2v
from wanr2v import AsyncWanClient, Limits, PollPolicy, RegionEndpoint
from wanr2v._helpers import task_ref
from wanr2v.testing import Emulator, EmulatorConfig, RegionConfig, serve

pytestmark = pytest.mark.anyio

SCALE = 100.0
BJ_KEY = "sk-beijing-key-0001"
SG_KEY = "sk-singapore-key-0002"
VA_KEY = "sk-virginia-key-0003"
FLASH: dict[str, Any] = {
    "model": "wan2.6-r2v-flash",
    "prompt": "character1 meets character2",
    "reference_urls": ["https://cdn.example.com/a.mp4", "https://cdn.example.com/b.png"],
    "duration": 4,
}


@pytest.fixture
def two_regions() -> Iterator[Emulator]:
    """beijing at /api/v1, singapore and virginia at /{name}/api/v1, each with its key."""
    cfg = EmulatorConfig(
        api_keys=[BJ_KEY],
        regions={
            "singapore": RegionConfig(api_keys=[SG_KEY]),
            "virginia": RegionConfig(api_keys=[VA_KEY]),
        },
        time_scale=SCALE,
        generation_time=(60.0, 120.0),
        seed=9,
    )
    with serve(cfg) as emu:
        yield emu


def multi_client(emu: Emulator, urls: list[str], **kw: object) -> AsyncWanClient:
    async def record(request: httpx.Request) -> None:
        urls.append(f"{request.method} {request.url}")

    return AsyncWanClient(
        api_key=BJ_KEY,
        base_url=emu.base_url,
        region="beijing",
        regions={
            "singapore": RegionEndpoint(api_key=SG_KEY, base_url=emu.base_url_for("singapore")),
            "virginia": RegionEndpoint(api_key=VA_KEY, base_url=emu.base_url_for("virginia")),
        },
        limits=Limits().scaled(SCALE),
        poll_policy=PollPolicy().scaled(SCALE),
        http_client=httpx.AsyncClient(event_hooks={"request": [record]}),
        **kw,  # type: ignore[arg-type]
    )


async def test_task_is_only_queried_where_it_lives(two_regions: Emulator) -> None:
    """A task created in singapore is fetched, waited on and downloaded there only."""
    urls: list[str] = []
    client = multi_client(two_regions, urls)
    async with client, client.http:
        task = await client.async_call(**FLASH, region="singapore")
        assert task.region == "singapore"
        assert task.base_url == two_regions.base_url_for("singapore")
        result = await client.wait(task)
        assert result.succeeded and result.base_url == task.base_url
        await client.fetch(result)
    task_calls = [u for u in urls if f"/tasks/{task.task_id}" in u]
    assert task_calls
    assert all("/singapore/api/v1/" in u for u in task_calls)


async def test_wrong_region_key_refused(two_regions: Emulator) -> None:
    """A singapore key used in beijing gets 401 InvalidApiKey, as the vendor answers."""
    async with AsyncWanClient(
        api_key=SG_KEY, base_url=two_regions.base_url, limits=Limits().scaled(SCALE)
    ) as c:
        with pytest.raises(wanr2v.AuthenticationError) as ei:
            await c.async_call(**FLASH)
    assert ei.value.code == "InvalidApiKey"


@respx.mock
async def test_virginia_refusals_before_sending(api_key: str) -> None:
    """Virginia can't serve flash, 4 s or pictures: refused before anything is sent."""
    route = respx.route()
    async with AsyncWanClient(region="virginia") as c:
        for fields, why in [
            (FLASH, "model wan2.6-r2v-flash"),
            (
                {
                    **FLASH,
                    "model": "wan2.6-r2v",
                    "reference_urls": ["https://x/a.mp4", "https://x/b.mp4"],
                },
                "duration 4s",
            ),
            ({**FLASH, "model": "wan2.6-r2v", "duration": 5}, "picture references"),
        ]:
            with pytest.raises(wanr2v.InvalidRequestError, match=why):
                await c.async_call(**fields)
    assert not route.called


async def test_unservable_request_routed_to_capable_region(two_regions: Emulator) -> None:
    """With virginia as default and singapore configured, a flash request goes to singapore."""
    async with AsyncWanClient(
        api_key=VA_KEY,
        base_url=two_regions.base_url_for("virginia"),
        region="virginia",
        regions={
            "singapore": RegionEndpoint(
                api_key=SG_KEY, base_url=two_regions.base_url_for("singapore")
            )
        },
        limits=Limits().scaled(SCALE),
        poll_policy=PollPolicy().scaled(SCALE),
    ) as c:
        task = await c.async_call(**FLASH)
        assert task.region == "singapore"
        ok = await c.async_call(
            model="wan2.6-r2v",
            prompt="character1 sings",
            reference_urls=["https://x.example.com/a.mp4"],
            duration=5,
        )
        assert ok.region == "virginia"
    recs = {r.task_id: r.region for r in two_regions.task_records()}
    assert recs[task.task_id] == "singapore" and recs[ok.task_id] == "virginia"


async def test_spread_batch_uses_both_regions_with_own_quotas(two_regions: Emulator) -> None:
    """run_many(spread=True) spreads a batch over regions; each region keeps its quotas."""
    urls: list[str] = []
    client = multi_client(two_regions, urls)
    reqs = [{**FLASH, "seed": i} for i in range(12)]
    async with client, client.http:
        items = await client.run_many(reqs, spread=True)
        stats = client.statistics()
    assert all(it.ok for it in items)
    by_region: dict[str, int] = {}
    for r in two_regions.task_records():
        by_region[r.region] = by_region.get(r.region, 0) + 1
    assert by_region.get("beijing", 0) >= 4 and by_region.get("singapore", 0) >= 4
    assert "virginia" not in by_region  # flash is not offered there
    assert stats.regions["beijing"].rates["create"].granted >= 4
    assert stats.regions["singapore"].rates["create"].granted >= 4


def test_task_id_alone_assumes_default_region(api_key: str) -> None:
    """A bare task id is documented to live in the client's default region."""
    c = AsyncWanClient(region="singapore")
    assert task_ref("abc") == ("abc", None)
    assert c.regions == ("singapore",)
    with pytest.raises(wanr2v.ConfigurationError, match="no key for it"):
        c._routing.session_for("https://dashscope-us.aliyuncs.com/api/v1")


async def test_handle_from_id_says_its_region(two_regions: Emulator) -> None:
    """client.task(id, region=...) names the region it assumes, and fetch goes there."""
    urls: list[str] = []
    client = multi_client(two_regions, urls)
    async with client, client.http:
        made = await client.async_call(**FLASH, region="singapore")
        handle = client.task(made.task_id, region="singapore")
        assert handle.region == "singapore"
        assert (await client.fetch(handle)).task_id == made.task_id
        assert client.task(made.task_id).region == "beijing"
    # A client that never saw the task, asked in the wrong region: the service says
    # UNKNOWN, a typed error rather than a guess.
    other = multi_client(two_regions, [])
    async with other, other.http:
        with pytest.raises(wanr2v.TaskNotFoundError):
            await other.wait(other.task(made.task_id))


def test_region_endpoint_masks_key() -> None:
    """RegionEndpoint never shows its key."""
    assert SG_KEY not in repr(RegionEndpoint(api_key=SG_KEY))
