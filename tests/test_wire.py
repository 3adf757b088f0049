"""The exact wire of every endpoint, checked with respx against protocol.md."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
import respx

import wanr2v
from wanr2v import AsyncWanClient, Limits, TaskStatus
from wanr2v._wire import parse_list, parse_result

from .conftest import API_KEY, BASE

pytestmark = pytest.mark.anyio

VENDOR_REFS = [
    "https://cdn.example.com/wan-r2v-role1.mp4",
    "https://cdn.example.com/wan-r2v-role2.mp4",
    "https://cdn.example.com/wan-r2v-object4.png",
    "https://cdn.example.com/wan-r2v-backgroud5.png",
]
VENDOR_PROMPT = (
    "Character2 sits on a chair by the window, holding character3, and plays a soothing "
    "American country folk song next to character4. Character1 says to Character2: "
    "'That sounds great'"
)


def created(task_id: str = "t-1") -> httpx.Response:
    return httpx.Response(
        200, json={"request_id": "r-1", "output": {"task_id": task_id, "task_status": "PENDING"}}
    )


def client(**kw: object) -> AsyncWanClient:
    kw.setdefault("limits", Limits.unlimited())
    kw.setdefault("max_retries", 2)
    return AsyncWanClient(**kw)  # type: ignore[arg-type]


@respx.mock
async def test_create_body_for_vendor_example(api_key: str) -> None:
    """The vendor's 4-reference example goes out as model / input / parameters, exactly."""
    route = respx.post(f"{BASE}/services/aigc/video-generation/video-synthesis").mock(
        return_value=created()
    )
    async with client() as c:
        task = await c.async_call(
            model="wan2.6-r2v",
            prompt=VENDOR_PROMPT,
            reference_urls=VENDOR_REFS,
            shot_type="multi",
            audio=True,
            size="1280*720",
            duration=10,
            watermark=True,
        )
    assert task.task_id == "t-1" and task.status is TaskStatus.PENDING
    assert task.request_id == "r-1" and task.base_url == BASE and task.region == "beijing"
    req = route.calls.last.request
    assert json.loads(req.content) == {
        "model": "wan2.6-r2v",
        "input": {"prompt": VENDOR_PROMPT, "reference_urls": VENDOR_REFS},
        "parameters": {
            "size": "1280*720",
            "duration": 10,
            "shot_type": "multi",
            "audio": True,
            "watermark": True,
        },
    }
    assert req.headers["Authorization"] == f"Bearer {API_KEY}"
    assert req.headers["Content-Type"] == "application/json"
    assert req.headers["X-DashScope-Async"] == "enable"
    assert "X-DashScope-OssResourceResolve" not in req.headers
    assert req.headers["User-Agent"].startswith(f"wanr2v/{wanr2v.__version__}")


@respx.mock
async def test_create_extra_fields_workspace_and_oss_header(api_key: str) -> None:
    """Extra input/parameters pass through; oss:// adds the resolve header; workspace is sent."""
    route = respx.post(f"{BASE}/services/aigc/video-generation/video-synthesis").mock(
        return_value=created()
    )
    async with client(workspace="ws-1") as c:
        await c.async_call(
            model="wan2.6-r2v-flash",
            prompt="character1 dances",
            reference_urls=["oss://dashscope-instant/abc/me.mp4"],
            negative_prompt="blur",
            seed=7,
            extra_input={"future_field": 1},
            extra_parameters={"prompt_extend": False},
        )
    req = route.calls.last.request
    body = json.loads(req.content)
    assert body["input"] == {
        "prompt": "character1 dances",
        "negative_prompt": "blur",
        "reference_urls": ["oss://dashscope-instant/abc/me.mp4"],
        "future_field": 1,
    }
    assert body["parameters"] == {"seed": 7, "prompt_extend": False}
    assert req.headers["X-DashScope-OssResourceResolve"] == "enable"
    assert req.headers["X-DashScope-WorkSpace"] == "ws-1"


@respx.mock
async def test_query_headers_and_parse_succeeded(api_key: str) -> None:
    """A query carries auth but no async header, and parses every documented field."""
    route = respx.get(f"{BASE}/tasks/t-9").mock(
        return_value=httpx.Response(
            200,
            json={
                "request_id": "r-9",
                "output": {
                    "task_id": "t-9",
                    "task_status": "SUCCEEDED",
                    "submit_time": "2025-12-16 00:25:59.869",
                    "scheduled_time": "2025-12-16 00:25:59.900",
                    "end_time": "2025-12-16 00:30:35.396",
                    "orig_prompt": "p",
                    "video_url": "https://oss.example.com/v.mp4?Expires=1",
                },
                "usage": {
                    "duration": "10.0",
                    "size": "1280*720",
                    "input_video_duration": 5,
                    "output_video_duration": 5.0,
                    "video_count": 1,
                    "SR": 720,
                    "new_key": "kept",
                },
            },
        )
    )
    async with client() as c:
        r = await c.fetch("t-9")
    req = route.calls.last.request
    assert "X-DashScope-Async" not in req.headers and "Content-Type" not in req.headers
    assert req.headers["Authorization"] == f"Bearer {API_KEY}"
    assert r.status is TaskStatus.SUCCEEDED and r.succeeded
    assert r.video_url == "https://oss.example.com/v.mp4?Expires=1" and r.request_id == "r-9"
    assert r.end_time is not None and r.scheduled_time is not None
    assert (r.end_time - r.scheduled_time) == timedelta(seconds=275, microseconds=496000)
    assert r.end_time.utcoffset() == timedelta(hours=8)
    assert r.usage is not None and r.usage.duration == 10.0 and r.usage.sr == 720
    assert r.usage.extra == {"new_key": "kept"}


@pytest.mark.parametrize(
    "raw", ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN", "PAUSED", 3, None]
)
def test_every_status_parses(raw: object) -> None:
    """Every documented status parses; an unknown value becomes UNRECOGNIZED, not a crash."""
    r = parse_result({"output": {"task_id": "x", "task_status": raw}}, task_id="x")
    if raw in {s.value for s in TaskStatus}:
        assert r.status.value == raw
    else:
        assert r.status is TaskStatus.UNRECOGNIZED and not r.is_final


def test_failed_result_carries_code_and_message() -> None:
    """FAILED puts code and message inside output."""
    r = parse_result(
        {
            "request_id": "r",
            "output": {
                "task_id": "x",
                "task_status": "FAILED",
                "code": "InvalidParameter",
                "message": "The size is not match",
            },
        },
        task_id="x",
    )
    assert (r.status, r.code, r.message) == (
        TaskStatus.FAILED,
        "InvalidParameter",
        "The size is not match",
    )
    with pytest.raises(wanr2v.TaskFailedError) as ei:
        wanr2v.raise_for_status(r)
    assert ei.value.task_id == "x" and ei.value.code == "InvalidParameter"


@pytest.mark.parametrize("data", [None, [], {"output": 3}, {"output": {}}, "x", {"request_id": 1}])
def test_malformed_answers_raise_api_error(data: object) -> None:
    """A malformed answer is an APIError, never a KeyError/TypeError."""
    if isinstance(data, dict) and data.get("output") == {}:
        r = parse_result(data, task_id="x")
        assert r.status is TaskStatus.UNRECOGNIZED
        return
    with pytest.raises(wanr2v.APIError):
        parse_result(data, task_id="x")


@respx.mock
async def test_cancel_wire(api_key: str) -> None:
    """Cancel is a bodiless POST to tasks/{id}/cancel; a non-PENDING task raises."""
    route = respx.post(f"{BASE}/tasks/t-1/cancel").mock(
        side_effect=[
            httpx.Response(200, json={"request_id": "r"}),
            httpx.Response(
                400,
                json={
                    "request_id": "r2",
                    "code": "UnsupportedOperation",
                    "message": "Failed to cancel the task, please confirm if the task is in PENDING status.",
                },
            ),
        ]
    )
    async with client() as c:
        await c.cancel("t-1")
        assert route.calls.last.request.content == b""
        with pytest.raises(wanr2v.UnsupportedOperationError) as ei:
            await c.cancel("t-1")
    assert ei.value.request_id == "r2" and ei.value.status_code == 400


@respx.mock
async def test_list_pages_and_filters(api_key: str) -> None:
    """list_tasks walks every page with the protocol's filters and parses flat rows."""

    def page(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params["page_no"])
        rows = [
            {
                "task_id": f"t{n}{i}",
                "status": "SUCCEEDED",
                "model_name": "wan2.6-r2v",
                "gmt_create": 1765815959869,
                "region": "cn-beijing",
                "api_key_id": "k",
            }
            for i in range(2 if n < 3 else 1)
        ]
        return httpx.Response(
            200,
            json={
                "request_id": "r",
                "total": 5,
                "total_page": 3,
                "page_no": n,
                "page_size": 2,
                "data": rows,
            },
        )

    route = respx.get(f"{BASE}/tasks").mock(side_effect=page)
    from datetime import UTC, datetime

    async with client() as c:
        rows = [
            r
            async for r in c.list_tasks(
                model="wan2.6-r2v",
                status="SUCCEEDED",
                page_size=2,
                start_time=datetime(2025, 12, 16, 0, 0, tzinfo=UTC),
                end_time=datetime(2025, 12, 16, 12, 0, tzinfo=UTC),
            )
        ]
    assert [r.task_id for r in rows] == ["t10", "t11", "t20", "t21", "t30"]
    assert rows[0].gmt_create is not None and rows[0].gmt_create.year == 2025
    assert rows[0].extra == {"api_key_id": "k"}
    params = route.calls[0].request.url.params
    assert params["model_name"] == "wan2.6-r2v" and params["status"] == "SUCCEEDED"
    assert params["start_time"] == "20251216080000" and params["end_time"] == "20251216200000"
    assert len(route.calls) == 3


def test_list_parses_missing_fields() -> None:
    """Rows without ids are skipped; odd types don't crash."""
    page = parse_list(
        {"data": [{"task_id": "a", "status": "X", "gmt_create": "oops"}, {"x": 1}, 3]}
    )
    assert [i.task_id for i in page.items] == ["a"]
    assert page.items[0].gmt_create is None and page.items[0].status is TaskStatus.UNRECOGNIZED


@respx.mock
async def test_get_policy_wire(api_key: str) -> None:
    """getPolicy is GET uploads?action=getPolicy&model=..., numbers may come as strings."""
    route = respx.get(f"{BASE}/uploads").mock(
        return_value=httpx.Response(
            200,
            json={
                "request_id": "r",
                "data": {
                    "policy": "p",
                    "signature": "s",
                    "upload_dir": "d",
                    "upload_host": "https://up.example.com",
                    "expire_in_seconds": "300",
                    "max_file_size_mb": "100",
                    "capacity_limit_mb": 999,
                    "oss_access_key_id": "ak",
                    "x_oss_object_acl": "private",
                    "x_oss_forbid_overwrite": "true",
                },
            },
        )
    )
    async with client() as c:
        pol = await c._get_upload_policy("wan2.6-r2v-flash")
    assert dict(route.calls.last.request.url.params) == {
        "action": "getPolicy",
        "model": "wan2.6-r2v-flash",
    }
    assert pol.expire_in_seconds == 300.0 and pol.max_file_size_mb == 100.0
