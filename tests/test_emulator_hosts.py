"""The upload host (policy, multipart form, oss:// references) and the video host (MP4, Range, expiry)."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from wanr2v.testing import Emulator, EmulatorConfig, ManualClock, Quotas, make_mp4

KEY = "sk-hosts"
AUTH = {"Authorization": f"Bearer {KEY}"}
CREATE = "/services/aigc/video-generation/video-synthesis"
CREATE_HEADERS = {**AUTH, "X-DashScope-Async": "enable", "X-DashScope-OssResourceResolve": "enable"}


@pytest.fixture
def anyio_backend() -> str:
    """These tests run under asyncio only."""
    return "asyncio"


@pytest.fixture
def emu() -> Emulator:
    """Manual clock, quotas off, 10 s generation."""
    return Emulator(
        EmulatorConfig(
            clock=ManualClock(start=1_750_000_000.0),
            quotas=Quotas.off(),
            seed=1,
            generation_time=(10.0, 10.0),
        )
    )


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client reaching ``emu`` in process."""
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        yield c


async def policy(client: httpx.AsyncClient, model: str = "wan2.6-r2v-flash") -> dict[str, Any]:
    """Fetch an upload policy."""
    resp = await client.get(
        "/uploads", params={"action": "getPolicy", "model": model}, headers=AUTH
    )
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def upload(
    client: httpx.AsyncClient, pol: dict[str, Any], name: str, content: bytes = b"data"
) -> httpx.Response:
    """Upload one file with the form the vendor's SDK sends."""
    form = {
        "OSSAccessKeyId": pol["oss_access_key_id"],
        "Signature": pol["signature"],
        "policy": pol["policy"],
        "key": f"{pol['upload_dir']}/{name}",
        "x-oss-object-acl": pol["x_oss_object_acl"],
        "x-oss-forbid-overwrite": pol["x_oss_forbid_overwrite"],
        "success_action_status": "200",
        "x-oss-content-type": "application/octet-stream",
    }
    return await client.post(pol["upload_host"], data=form, files={"file": (name, content)})


def create_body(refs: list[str], model: str = "wan2.6-r2v-flash") -> dict[str, Any]:
    """A create body."""
    return {"model": model, "input": {"prompt": "x", "reference_urls": refs}}


async def video_url(client: httpx.AsyncClient, emu: Emulator, duration: int = 5) -> str:
    """Create a task, let it finish, return its video URL."""
    body = {**create_body(["https://cdn.example.com/a.mp4"]), "parameters": {"duration": duration}}
    resp = await client.post(CREATE, json=body, headers=CREATE_HEADERS)
    tid = resp.json()["output"]["task_id"]
    emu.advance(11)
    out = (await client.get(f"/tasks/{tid}", headers=AUTH)).json()["output"]
    return str(out["video_url"])


def boxes(data: bytes) -> list[bytes]:
    """The top-level ISO-BMFF box types of a file, checking that sizes tile it exactly."""
    kinds, pos = [], 0
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        assert size >= 8
        kinds.append(kind)
        pos += size
    assert pos == len(data)
    return kinds


@pytest.mark.anyio
async def test_policy_shape(client: httpx.AsyncClient, emu: Emulator) -> None:
    """getPolicy answers under 'data' with every field the vendor sends; hosts are absolute."""
    pol = await policy(client)
    assert {
        "policy",
        "signature",
        "upload_dir",
        "upload_host",
        "expire_in_seconds",
        "max_file_size_mb",
        "capacity_limit_mb",
        "oss_access_key_id",
        "x_oss_object_acl",
        "x_oss_forbid_overwrite",
    } <= set(pol)
    assert pol["upload_host"].startswith(emu.origin)


@pytest.mark.anyio
async def test_policy_needs_a_known_model(client: httpx.AsyncClient) -> None:
    """getPolicy without a model, or with an unknown one, is 400."""
    resp = await client.get("/uploads", params={"action": "getPolicy"}, headers=AUTH)
    assert (resp.status_code, resp.json()["code"]) == (400, "InvalidParameter")
    resp = await client.get("/uploads", params={"action": "getPolicy", "model": "x"}, headers=AUTH)
    assert resp.status_code == 400
    assert (await client.get("/uploads", params={"action": "getPolicy"})).status_code == 401


@pytest.mark.anyio
async def test_upload_then_oss_reference(client: httpx.AsyncClient, emu: Emulator) -> None:
    """An uploaded file answers 200 with an empty body; its oss:// key is then a valid reference."""
    pol = await policy(client)
    resp = await upload(client, pol, "role.mp4", make_mp4(5))  # real: the emulator checks it
    assert (resp.status_code, resp.content) == (200, b"")
    ref = f"oss://{pol['upload_dir']}/role.mp4"
    created = await client.post(CREATE, json=create_body([ref]), headers=CREATE_HEADERS)
    assert created.status_code == 200, created.text
    emu.advance(11)
    out = (await client.get(f"/tasks/{created.json()['output']['task_id']}", headers=AUTH)).json()
    assert out["usage"]["input_video_duration"] == 5
    (rec,) = emu.host_requests("upload")
    assert rec.header("authorization") is None
    assert rec.method == "POST"


@pytest.mark.anyio
async def test_uploaded_kind_comes_from_the_stored_file(client: httpx.AsyncClient) -> None:
    """The kind of an oss:// reference is judged from the stored file: four videos are too many."""
    pol = await policy(client)
    refs = []
    for i in range(4):
        assert (await upload(client, pol, f"v{i}.mov")).status_code == 200
        refs.append(f"oss://{pol['upload_dir']}/v{i}.mov")
    resp = await client.post(CREATE, json=create_body(refs), headers=CREATE_HEADERS)
    assert resp.status_code == 400
    assert "video" in resp.json()["message"]


@pytest.mark.anyio
async def test_upload_is_bound_to_its_model(client: httpx.AsyncClient) -> None:
    """A file uploaded for one model is not found by another."""
    pol = await policy(client, "wan2.6-r2v-flash")
    await upload(client, pol, "a.png")
    body = create_body([f"oss://{pol['upload_dir']}/a.png"], model="wan2.6-r2v")
    resp = await client.post(CREATE, json=body, headers=CREATE_HEADERS)
    assert (resp.status_code, resp.json()["code"]) == (400, "InvalidParameter.DataInspection")


@pytest.mark.anyio
async def test_expired_policy_is_403(client: httpx.AsyncClient, emu: Emulator) -> None:
    """An upload with an expired policy: 403 with an OSS XML error."""
    pol = await policy(client)
    emu.advance(pol["expire_in_seconds"] + 1)
    resp = await upload(client, pol, "a.png")
    assert resp.status_code == 403
    assert "Policy expired" in resp.text


@pytest.mark.anyio
async def test_forged_signature_and_foreign_key_are_403(client: httpx.AsyncClient) -> None:
    """A bad signature or a key outside upload_dir: 403."""
    pol = await policy(client)
    assert (await upload(client, {**pol, "signature": "forged"}, "a.png")).status_code == 403
    assert (await upload(client, {**pol, "upload_dir": "elsewhere"}, "a.png")).status_code == 403


@pytest.mark.anyio
async def test_overwrite_is_forbidden(client: httpx.AsyncClient) -> None:
    """x-oss-forbid-overwrite: a second upload to the same key is 409."""
    pol = await policy(client)
    assert (await upload(client, pol, "a.png")).status_code == 200
    assert (await upload(client, pol, "a.png")).status_code == 409


def test_mp4_is_a_real_iso_bmff_h264_file() -> None:
    """The result video is ftyp/moov/mdat with an avc1 (H.264) track of 30 fps."""
    data = make_mp4(5)
    assert boxes(data) == [b"ftyp", b"moov", b"mdat"]
    assert b"avc1" in data
    assert b"avcC" in data
    assert data[8:12] == b"isom"
    # the SPS announces Baseline profile (66)
    sps_at = data.index(b"avcC") + 4
    assert data[sps_at + 1] == 66
    assert len(make_mp4(10)) > len(make_mp4(5))


@pytest.mark.anyio
async def test_video_download_and_ranges(client: httpx.AsyncClient, emu: Emulator) -> None:
    """The video has Content-Length, supports Range (206, suffix, 416) and HEAD."""
    url = await video_url(client, emu, duration=4)
    full = await client.get(url)
    assert full.status_code == 200
    assert full.headers["content-type"] == "video/mp4"
    assert int(full.headers["content-length"]) == len(full.content) == len(make_mp4(4))
    assert boxes(full.content) == [b"ftyp", b"moov", b"mdat"]
    part = await client.get(url, headers={"Range": "bytes=100-"})
    assert part.status_code == 206
    assert part.content == full.content[100:]
    assert part.headers["content-range"] == f"bytes 100-{len(full.content) - 1}/{len(full.content)}"
    tail = await client.get(url, headers={"Range": "bytes=-10"})
    assert tail.content == full.content[-10:]
    bad = await client.get(url, headers={"Range": f"bytes={len(full.content)}-"})
    assert bad.status_code == 416
    head = await client.head(url)
    assert head.headers["content-length"] == str(len(full.content))
    assert head.content == b""


@pytest.mark.anyio
async def test_video_url_expires_after_24_hours(client: httpx.AsyncClient, emu: Emulator) -> None:
    """After 24 h the signed URL answers 403 with an OSS-like XML body."""
    url = await video_url(client, emu)
    emu.advance(24 * 3600 + 1)
    resp = await client.get(url)
    assert resp.status_code == 403
    assert resp.headers["content-type"].startswith("application/xml")
    assert "<Code>AccessDenied</Code>" in resp.text
    assert "expired" in resp.text


@pytest.mark.anyio
async def test_tampered_video_url_is_403(client: httpx.AsyncClient, emu: Emulator) -> None:
    """Changing Expires breaks the signature: 403 SignatureDoesNotMatch."""
    url = await video_url(client, emu)
    tampered = url.replace("Expires=", "Expires=9")
    resp = await client.get(tampered)
    assert resp.status_code == 403
    assert "SignatureDoesNotMatch" in resp.text


@pytest.mark.anyio
async def test_video_host_records_headers(client: httpx.AsyncClient, emu: Emulator) -> None:
    """Headers reaching the video host are recorded, so tests can assert no key leaks there."""
    url = await video_url(client, emu)
    await client.get(url, headers={"X-Probe": "1"})
    (rec,) = emu.host_requests("video")
    assert rec.header("x-probe") == "1"
    assert rec.header("authorization") is None
