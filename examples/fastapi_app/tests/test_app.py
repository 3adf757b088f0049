"""The app end to end against the wanr2v emulator: submit, status, the event stream."""

from __future__ import annotations

import json

import httpx
import pytest

from wanr2v.testing import Emulator, Endpoint, FaultKind, FaultRule

pytestmark = pytest.mark.anyio

VIDEO = {
    "prompt": "character1 waves at character2",
    "reference_urls": ["https://cdn.example.com/me.mp4", "https://cdn.example.com/dog.png"],
}


def parse_sse(text: str) -> list[tuple[str, dict[str, object]]]:
    """The (event, data) pairs of a Server-Sent Events body (comments skipped)."""
    events = []
    for chunk in text.strip().split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in chunk.splitlines() if not line.startswith(":")
        )
        if "event" in fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


async def test_submit_then_stream_until_succeeded(
    http: httpx.AsyncClient, wan_emulator: Emulator
) -> None:
    """A submitted video streams its status changes, ending with its URL."""
    created = await http.post("/videos", json=VIDEO)
    assert created.status_code == 202
    task_id = created.json()["task_id"]

    stream = await http.get(f"/videos/{task_id}/events")
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(stream.text)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "status" and kinds[-1] == "succeeded"
    assert events[-1][1]["video_url"]

    now = await http.get(f"/videos/{task_id}")
    assert now.json()["status"] == "SUCCEEDED"
    assert wan_emulator.stats().duplicate_creates == 0


async def test_invalid_request_is_422_and_sends_nothing(
    http: httpx.AsyncClient, wan_emulator: Emulator
) -> None:
    """A size the service does not offer is refused by the app, not by the service."""
    response = await http.post("/videos", json={**VIDEO, "size": "4096*2160"})
    assert response.status_code == 422
    assert response.json()["detail"]["field"] == "parameters.size"
    assert wan_emulator.stats().count("create") == 0


async def test_failed_task_streams_its_code(
    http: httpx.AsyncClient, wan_emulator: Emulator
) -> None:
    """A task the service fails ends the stream with a 'failed' event and its code."""
    wan_emulator.faults.add(
        FaultRule(
            kind=FaultKind.FAIL_TASK, endpoint=Endpoint.CREATE, count=1, code="InternalError.Algo"
        )
    )
    task_id = (await http.post("/videos", json=VIDEO)).json()["task_id"]
    events = parse_sse((await http.get(f"/videos/{task_id}/events")).text)
    assert events[-1][0] == "failed" and events[-1][1]["code"] == "InternalError.Algo"


async def test_throttled_service_is_absorbed(
    http: httpx.AsyncClient, wan_emulator: Emulator
) -> None:
    """Two 429s on create are retried by the client: the user still gets a 202."""
    wan_emulator.faults.add(
        FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.CREATE, count=2, retry_after=0.1)
    )
    response = await http.post("/videos", json=VIDEO)
    assert response.status_code == 202
    assert wan_emulator.stats().throttled == 2
