"""The emulator checks the media uploaded to it as the service does: the create answers 200,
and a task whose reference breaks a limit ends FAILED a few seconds later with the vendor's
InvalidFile.* code and message. Everything here goes over a real loopback socket."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from wanr2v import TaskFailedError
from wanr2v.testing import Emulator, EmulatorConfig, ManualClock, Quotas, _rules, make_mp4, serve
from wanr2v.testing._client import client_for
from wanr2v.testing._validation import media_failure

KEY = "sk-media"
AUTH = {"Authorization": f"Bearer {KEY}"}
CREATE = "/services/aigc/video-generation/video-synthesis"
CREATE_HEADERS = {**AUTH, "X-DashScope-Async": "enable", "X-DashScope-OssResourceResolve": "enable"}
MODEL = "wan2.6-r2v-flash"


@pytest.fixture
def anyio_backend() -> str:
    """Raw-HTTP tests run under asyncio; the client test below runs under both."""
    return "asyncio"


def png(size: tuple[int, int], mode: str = "RGB", fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (40, 90, 160, 200)[: len(mode)] if mode != "L" else 90).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture
def served() -> Iterator[Emulator]:
    """A served emulator on a manual clock: quotas off, 60 s generation."""
    config = EmulatorConfig(
        clock=ManualClock(start=1_750_000_000.0),
        quotas=Quotas.off(),
        seed=5,
        generation_time=(60.0, 60.0),
    )
    with serve(config) as emu:
        yield emu


@pytest.fixture
async def http(served: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served.base_url, timeout=10.0) as c:
        yield c


async def upload(http: httpx.AsyncClient, name: str, content: bytes) -> str:
    """Upload one file with the vendor's form; return its oss:// reference."""
    resp = await http.get("/uploads", params={"action": "getPolicy", "model": MODEL}, headers=AUTH)
    assert resp.status_code == 200, resp.text
    pol: dict[str, Any] = resp.json()["data"]
    key = f"{pol['upload_dir']}/{name}"
    form = {
        "OSSAccessKeyId": pol["oss_access_key_id"],
        "Signature": pol["signature"],
        "policy": pol["policy"],
        "key": key,
        "x-oss-object-acl": pol["x_oss_object_acl"],
        "x-oss-forbid-overwrite": pol["x_oss_forbid_overwrite"],
        "success_action_status": "200",
    }
    up = await http.post(pol["upload_host"], data=form, files={"file": (name, content)})
    assert up.status_code == 200, up.text
    return f"oss://{key}"


async def run(
    http: httpx.AsyncClient, emu: Emulator, refs: list[str], *, after: float
) -> dict[str, Any]:
    """Create a task with ``refs`` (must answer 200); query it ``after`` emulator seconds."""
    body = {"model": MODEL, "input": {"prompt": "character1", "reference_urls": refs}}
    created = await http.post(CREATE, json=body, headers=CREATE_HEADERS)
    assert created.status_code == 200, created.text  # media is not judged at create time
    task_id = created.json()["output"]["task_id"]
    emu.advance(after)
    out: dict[str, Any] = (await http.get(f"/tasks/{task_id}", headers=AUTH)).json()
    return out


BAD_MEDIA = [
    pytest.param(
        "short.mp4",
        make_mp4(29 / 30),
        "InvalidFile.Duration",
        "Invalid file duration. The file duration must be 1 s ~ 30 s.",
        id="video-too-short",
    ),
    pytest.param(
        "long.mov",
        make_mp4(30 + 1 / 15, fps=15, quicktime=True),
        "InvalidFile.Duration",
        "Invalid file duration. The file duration must be 1 s ~ 30 s.",
        id="video-too-long",
    ),
    pytest.param(
        "slow.mp4",
        make_mp4(2, fps=14.999),
        "InvalidFile.FPS",
        "Invalid video FPS. The video FPS must be 15 ~ 60.",
        id="video-too-slow",
    ),
    pytest.param(
        "fast.mp4",
        make_mp4(2, fps=60.001),
        "InvalidFile.FPS",
        "Invalid video FPS. The video FPS must be 15 ~ 60.",
        id="video-too-fast",
    ),
    pytest.param(
        "wide.png",
        png((5001, 240)),
        "InvalidFile.Resolution",
        "The image resolution is invalid, please make sure that the largest length of image "
        "is smaller than 5000, and the smallest length of image is larger than 240.",
        id="image-too-wide",
    ),
    pytest.param(
        "tiny.jpg",
        png((240, 239), fmt="JPEG"),
        "InvalidFile.Resolution",
        "The image resolution is invalid, please make sure that the largest length of image "
        "is smaller than 5000, and the smallest length of image is larger than 240.",
        id="image-too-small",
    ),
    pytest.param(
        "logo.png",
        png((300, 300), mode="RGBA"),
        "InvalidFile.Format",
        _rules.MEDIA_ALPHA[1],
        id="png-with-alpha",
    ),
    pytest.param(
        "notes.mp4",
        b"meeting notes, not a video\n" * 40,
        "InvalidFile.Openerror",
        "Invalid file, cannot open file as video/audio/image.",
        id="text-named-mp4",
    ),
    pytest.param(
        "big.bmp",
        b"BM" + bytes(10 * 1024 * 1024),
        "InvalidFile.Size",
        "Invalid file size. The image file size must be less than 10MB.",
        id="image-over-10mb",
    ),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "content", "code", "message"), BAD_MEDIA)
async def test_bad_media_fails_the_task_with_the_vendor_code(
    http: httpx.AsyncClient, served: Emulator, name: str, content: bytes, code: str, message: str
) -> None:
    """Uploaded media out of its limits: 200 on create, then FAILED at inspection (< 5 s)
    with the vendor's code and message; nothing is billed."""
    ref = await upload(http, name, content)
    # 5 s: past the inspection (3 s), long before the 60 s generation would end.
    out = await run(http, served, [ref], after=5.0)
    assert out["output"]["task_status"] == "FAILED"
    assert (out["output"]["code"], out["output"]["message"]) == (code, message)
    assert "usage" not in out


@pytest.mark.anyio
async def test_media_within_limits_succeeds(http: httpx.AsyncClient, served: Emulator) -> None:
    """Media on every boundary, just inside, passes: the task SUCCEEDS after generation."""
    refs = [
        await upload(http, "one.mp4", make_mp4(1, fps=15)),
        await upload(http, "two.mov", make_mp4(30, fps=60, quicktime=True)),
        await upload(http, "wide.webp", png((5000, 240), fmt="WEBP")),
        await upload(http, "small.bmp", png((240, 240), fmt="BMP")),
        await upload(http, "flat.png", png((240, 5000), mode="L")),
    ]
    out = await run(http, served, refs, after=70.0)
    assert out["output"]["task_status"] == "SUCCEEDED", out
    assert out["usage"]["input_video_duration"] == 2  # two videos of five references: 1 s each


@pytest.mark.anyio
async def test_first_bad_reference_decides_the_failure(
    http: httpx.AsyncClient, served: Emulator
) -> None:
    """With a good image, a slow video and a short one, the task fails for the first bad one."""
    refs = [
        await upload(http, "ok.png", png((300, 300))),
        await upload(http, "slow.mp4", make_mp4(2, fps=10)),
        await upload(http, "short.mp4", make_mp4(0.5)),
    ]
    out = await run(http, served, refs, after=5.0)
    assert out["output"]["code"] == "InvalidFile.FPS"


@pytest.mark.anyio
async def test_remote_references_are_not_fetched_or_judged(
    http: httpx.AsyncClient, served: Emulator
) -> None:
    """http(s):// references are never downloaded by the emulator, so their content is not
    checked: the task succeeds (only uploads can be inspected)."""
    out = await run(http, served, ["https://cdn.example.com/maybe-too-long.mp4"], after=70.0)
    assert out["output"]["task_status"] == "SUCCEEDED"
    assert served.host_requests("upload") == []


def test_media_failure_is_none_for_good_files_and_names_the_code_for_bad() -> None:
    """The emulator's one check function: None when fine, (code, message) otherwise."""
    assert media_failure(make_mp4(3), "video") is None
    assert media_failure(png((240, 240)), "image") is None
    assert media_failure(make_mp4(3), "image") == _rules.MEDIA_UNREADABLE
    assert media_failure(png((240, 240)), "video") == _rules.MEDIA_UNREADABLE


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_client_sees_the_failure_as_task_failed_error() -> None:
    """Through AsyncWanClient, an oss:// reference it did not check (the user uploaded it)
    that breaks a limit ends in TaskFailedError carrying InvalidFile.FPS."""
    config = EmulatorConfig(time_scale=100.0, quotas=Quotas.off(), seed=9)
    with serve(config) as emu:
        async with httpx.AsyncClient(base_url=emu.base_url, timeout=10.0) as http:
            ref = await upload(http, "slow.mp4", make_mp4(2, fps=12))
        async with client_for(emu, api_key=KEY) as client:
            with pytest.raises(TaskFailedError) as info:
                await client.call(model=MODEL, prompt="character1 waves", reference_urls=[ref])
    assert info.value.code == "InvalidFile.FPS"
    assert "15 ~ 60" in (info.value.message or "")
