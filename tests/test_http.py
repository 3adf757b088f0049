"""Error mapping and the safe-retry rule, checked with respx."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

import wanr2v
from wanr2v import AsyncWanClient, Limits
from wanr2v._exceptions import error_for

from .conftest import API_KEY, BASE

pytestmark = pytest.mark.anyio

CREATE = f"{BASE}/services/aigc/video-generation/video-synthesis"
FIELDS: dict[str, Any] = {
    "model": "wan2.6-r2v-flash",
    "prompt": "character1 runs",
    "reference_urls": ["https://x.example.com/a.mp4"],
}


def err(status: int, code: str, msg: str = "m", **headers: str) -> httpx.Response:
    return httpx.Response(
        status, json={"request_id": "rid", "code": code, "message": msg}, headers=headers
    )


def ok_created() -> httpx.Response:
    return httpx.Response(
        200, json={"request_id": "r", "output": {"task_id": "t", "task_status": "PENDING"}}
    )


def fast_client(max_retries: int = 3, **kw: object) -> AsyncWanClient:
    policy = wanr2v.RetryPolicy(max_retries=max_retries, initial=0.001, maximum=0.002)
    return AsyncWanClient(limits=Limits.unlimited(), retry_policy=policy, reconcile=False, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "InvalidParameter", wanr2v.InvalidParameterError),
        (400, "InvalidParameter.DataInspection", wanr2v.InvalidParameterError),
        (400, "InvalidFile.Duration", wanr2v.InvalidParameterError),
        (400, "DataInspectionFailed", wanr2v.ContentModerationError),
        (400, "IPInfringementSuspect", wanr2v.ContentModerationError),
        (400, "UnsupportedOperation", wanr2v.UnsupportedOperationError),
        (400, "Arrearage", wanr2v.ArrearageError),
        (400, "SomethingNew", wanr2v.BadRequestError),
        (401, "InvalidApiKey", wanr2v.AuthenticationError),
        (403, "AccessDenied", wanr2v.PermissionDeniedError),
        (403, "AllocationQuota.FreeTierOnly", wanr2v.PermissionDeniedError),
        (404, "ModelNotFound", wanr2v.NotFoundError),
        (429, "Throttling.RateQuota", wanr2v.RateLimitError),
        (429, "Throttling.BurstRate", wanr2v.RateLimitError),
        (500, "InternalError", wanr2v.ServerError),
        (500, "InternalError.Timeout", wanr2v.ServerError),
        (503, "ModelUnavailable", wanr2v.ServiceUnavailableError),
    ],
)
def test_each_code_maps_to_its_class(status: int, code: str, cls: type) -> None:
    """Each HTTP status / DashScope code maps to the class a caller can act on."""
    e = error_for(status, code, "msg", request_id="r", task_id="t")
    assert type(e) is cls
    assert (e.status_code, e.code, e.request_id, e.task_id) == (status, code, "r", "t")
    assert isinstance(e, wanr2v.WanError) and code in str(e)


@respx.mock
async def test_query_retried_on_transient_then_succeeds(api_key: str) -> None:
    """Queries are retried on 429, 500, 502, 503, 504 and transport errors."""
    route = respx.get(f"{BASE}/tasks/t").mock(
        side_effect=[
            err(429, "Throttling.RateQuota", **{"Retry-After": "0"}),
            err(500, "InternalError"),
            err(502, "x"),
            err(503, "ModelUnavailable"),
            httpx.ReadError("reset"),
            httpx.Response(200, json={"output": {"task_id": "t", "task_status": "RUNNING"}}),
        ]
    )
    async with fast_client(max_retries=5) as c:
        r = await c.fetch("t")
    assert r.status is wanr2v.TaskStatus.RUNNING and len(route.calls) == 6


@respx.mock
async def test_query_not_retried_on_400_401(api_key: str) -> None:
    """A 400 or 401 is final at once."""
    route = respx.get(f"{BASE}/tasks/t").mock(return_value=err(401, "InvalidApiKey"))
    async with fast_client() as c:
        with pytest.raises(wanr2v.AuthenticationError):
            await c.fetch("t")
    assert len(route.calls) == 1


@respx.mock
async def test_query_gives_up_after_max_retries(api_key: str) -> None:
    """After max_retries, the last error is raised."""
    route = respx.get(f"{BASE}/tasks/t").mock(return_value=err(500, "InternalError"))
    async with fast_client() as c:
        with pytest.raises(wanr2v.ServerError):
            await c.fetch("t")
    assert len(route.calls) == 4


@respx.mock
async def test_rate_limit_error_carries_retry_after(api_key: str) -> None:
    """A 429 that survives the retries carries the Retry-After seconds."""
    respx.get(f"{BASE}/tasks/t").mock(
        return_value=err(429, "Throttling", **{"Retry-After": "0.01"})
    )
    async with fast_client(max_retries=0) as c:
        with pytest.raises(wanr2v.RateLimitError) as ei:
            await c.fetch("t")
    assert ei.value.retry_after == pytest.approx(0.01)


@pytest.mark.parametrize(
    "answer",
    [
        err(429, "Throttling.RateQuota", **{"Retry-After": "0"}),
        err(503, "ModelUnavailable"),
        httpx.ConnectError("refused"),
    ],
)
@respx.mock
async def test_create_resent_when_provably_nothing_made(api_key: str, answer: Any) -> None:
    """A create is re-sent after a 429, a 503 or a connect error (nothing was made)."""
    route = respx.post(CREATE).mock(side_effect=[answer, ok_created()])
    async with fast_client() as c:
        task = await c.async_call(**FIELDS)
    assert task.task_id == "t" and len(route.calls) == 2


@pytest.mark.parametrize(
    "answer", [err(500, "InternalError"), err(502, "BadGateway"), err(504, "GatewayTimeout")]
)
@respx.mock
async def test_create_not_resent_on_500(api_key: str, answer: httpx.Response) -> None:
    """A 5xx other than 503 on create may hide a made task: no blind re-send, the
    outcome is unknown (reconciliation, when on, looks the task up)."""
    route = respx.post(CREATE).mock(side_effect=[answer, ok_created()])
    async with fast_client() as c:
        with pytest.raises(wanr2v.SubmitOutcomeUnknownError) as ei:
            await c.async_call(**FIELDS)
    assert len(route.calls) == 1
    assert isinstance(ei.value.cause, wanr2v.ServerError)


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("dropped"),
        httpx.ReadError("reset"),
        httpx.WriteTimeout("w"),
    ],
)
@respx.mock
async def test_create_lost_answer_sends_one_post_and_raises_unknown(
    api_key: str, exc: Exception
) -> None:
    """A read timeout (or a drop after sending) on create sends exactly one POST."""
    route = respx.post(CREATE).mock(side_effect=[exc, ok_created()])
    async with fast_client() as c:
        with pytest.raises(wanr2v.SubmitOutcomeUnknownError) as ei:
            await c.async_call(**FIELDS)
    assert len(route.calls) == 1
    e = ei.value
    assert e.submission_id and len(e.fingerprint) == 64 and e.sent_at
    assert API_KEY not in str(e)


@respx.mock
async def test_create_refused_400_not_retried(api_key: str) -> None:
    """A refused create is raised at once with its code."""
    route = respx.post(CREATE).mock(return_value=err(400, "InvalidParameter", "Model not exist."))
    async with fast_client() as c:
        with pytest.raises(wanr2v.InvalidParameterError, match="Model not exist"):
            await c.async_call(**FIELDS)
    assert len(route.calls) == 1


@respx.mock
async def test_user_http_client_not_closed_and_key_not_in_defaults(api_key: str) -> None:
    """A user's httpx client stays open; the key is added per request, not to its defaults."""
    respx.get(f"{BASE}/tasks/t").mock(
        return_value=httpx.Response(
            200, json={"output": {"task_id": "t", "task_status": "PENDING"}}
        )
    )
    mine = httpx.AsyncClient()
    async with AsyncWanClient(http_client=mine) as c:
        await c.fetch("t")
    assert not mine.is_closed
    assert "authorization" not in {k.lower() for k in mine.headers}
    await mine.aclose()


async def test_key_never_in_repr_or_errors(api_key: str) -> None:
    """The key is masked in reprs and absent from error text."""
    c = AsyncWanClient()
    assert API_KEY not in repr(c) and "sk-…cdef" in repr(c)
    assert API_KEY not in repr(c._routing.default)
    await c.aclose()


@respx.mock
async def test_unreadable_200_on_create_is_an_unknown_outcome(api_key: str) -> None:
    """A 200 whose body cannot be read made a task with an unknown id: no blind re-send."""
    route = respx.post(CREATE).mock(
        side_effect=[httpx.Response(200, json={"request_id": "r", "output": {}}), ok_created()]
    )
    async with fast_client() as c:
        with pytest.raises(wanr2v.SubmitOutcomeUnknownError) as ei:
            await c.async_call(**FIELDS)
    assert len(route.calls) == 1
    assert isinstance(ei.value.cause, wanr2v.APIError)
