"""The emulator refuses and accepts create bodies as the vendor's service does."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import pytest

from wanr2v.testing import Emulator, EmulatorConfig, ManualClock, Quotas, RegionConfig

KEY = "sk-validation"
CREATE = "/services/aigc/video-generation/video-synthesis"
HEADERS = {"Authorization": f"Bearer {KEY}", "X-DashScope-Async": "enable"}
VIDEO = "https://cdn.example.com/role.mp4"
IMAGE = "https://cdn.example.com/object.png"


@pytest.fixture
def anyio_backend() -> str:
    """These tests run under asyncio only (the trio path is covered elsewhere)."""
    return "asyncio"


def body(
    *, model: str = "wan2.6-r2v-flash", refs: list[str] | None = None, **params: Any
) -> dict[str, Any]:
    """A create body with one video reference unless told otherwise."""
    return {
        "model": model,
        "input": {"prompt": "character1 waves", "reference_urls": refs or [VIDEO]},
        "parameters": params,
    }


@pytest.fixture
def emu() -> Emulator:
    """An emulator on a manual clock, quotas off, generation 100 s, two regions."""
    return Emulator(
        EmulatorConfig(
            clock=ManualClock(start=1_750_000_000.0),
            quotas=Quotas.off(),
            seed=3,
            generation_time=(100.0, 100.0),
            regions={"virginia": RegionConfig()},
        )
    )


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client reaching the emulator in process."""
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        yield c


async def create(
    client: httpx.AsyncClient,
    data: Any,
    headers: Mapping[str, str] = HEADERS,
    url: str = CREATE,
) -> httpx.Response:
    """POST a create body (a dict as JSON, bytes as they are)."""
    if isinstance(data, bytes):
        return await client.post(url, content=data, headers=headers)
    return await client.post(url, json=data, headers=headers)


def expect(resp: httpx.Response, status: int, code: str, message: str | None = None) -> None:
    """Assert an error answer's status, code and (if given) message substring."""
    assert resp.status_code == status, resp.text
    payload = resp.json()
    assert payload["code"] == code
    assert payload["request_id"]
    if message is not None:
        assert message in payload["message"]


async def final(client: httpx.AsyncClient, emu: Emulator, resp: httpx.Response) -> dict[str, Any]:
    """Advance past generation and return the task's query output."""
    assert resp.status_code == 200, resp.text
    task_id = resp.json()["output"]["task_id"]
    emu.advance(1000)
    q = await client.get(f"/tasks/{task_id}", headers=HEADERS)
    out: dict[str, Any] = q.json()
    return out


@pytest.mark.anyio
async def test_missing_key_is_401(client: httpx.AsyncClient) -> None:
    """No Authorization header: 401 InvalidApiKey."""
    expect(await create(client, body(), {"X-DashScope-Async": "enable"}), 401, "InvalidApiKey")


@pytest.mark.anyio
async def test_key_without_sk_prefix_is_401_in_open_mode(client: httpx.AsyncClient) -> None:
    """With no keys configured, only keys of the form sk-... are accepted."""
    headers = {"Authorization": "Bearer nope", "X-DashScope-Async": "enable"}
    expect(await create(client, body(), headers), 401, "InvalidApiKey")


@pytest.mark.anyio
async def test_configured_keys_refuse_others() -> None:
    """With keys configured, any other key (even sk-...) is 401."""
    emu = Emulator(EmulatorConfig(api_keys=["sk-good"], clock=ManualClock()))
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        expect(await create(c, body()), 401, "InvalidApiKey", "Invalid API-key")
        good = {"Authorization": "Bearer sk-good", "X-DashScope-Async": "enable"}
        assert (await create(c, body(), good)).status_code == 200


@pytest.mark.anyio
async def test_missing_async_header_is_403_with_vendor_message(client: httpx.AsyncClient) -> None:
    """Without X-DashScope-Async: 403 AccessDenied, the vendor's exact message."""
    resp = await create(client, body(), {"Authorization": f"Bearer {KEY}"})
    expect(resp, 403, "AccessDenied")
    assert resp.json()["message"] == "current user api does not support synchronous calls"


@pytest.mark.anyio
async def test_bad_json_is_400(client: httpx.AsyncClient) -> None:
    """A body that is not JSON: 400 InvalidParameter."""
    expect(await create(client, b"{not json"), 400, "InvalidParameter")
    expect(await create(client, b"[1, 2]"), 400, "InvalidParameter")


@pytest.mark.anyio
async def test_unknown_model_is_400(client: httpx.AsyncClient) -> None:
    """An unknown model: 400 InvalidParameter 'Model not exist.'."""
    expect(
        await create(client, body(model="wan2.5-r2v")), 400, "InvalidParameter", "Model not exist"
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/services/aigc/video-generation/video-synth"), ("GET", CREATE), ("POST", "/tasks")],
)
async def test_wrong_path_is_url_error(client: httpx.AsyncClient, method: str, path: str) -> None:
    """A wrong path or method under /api/v1: 400 'url error, please check url!'."""
    resp = await client.request(method, path, headers=HEADERS)
    expect(resp, 400, "InvalidParameter")
    assert resp.json()["message"] == "url error, please check url!"


@pytest.mark.anyio
async def test_prompt_is_required(client: httpx.AsyncClient) -> None:
    """A missing prompt or input: 400 InvalidParameter naming the field."""
    data = body()
    del data["input"]["prompt"]
    expect(await create(client, data), 400, "InvalidParameter", "input.prompt")
    expect(await create(client, {"model": "wan2.6-r2v"}), 400, "InvalidParameter", "input")


@pytest.mark.anyio
async def test_prompts_are_cut_silently() -> None:
    """Prompt and negative prompt are cut at 1500 / 500 characters, not refused."""
    seen: list[Mapping[str, Any]] = []

    def gen(rng: Any, request: Mapping[str, Any]) -> float:
        seen.append(request)
        return 10.0

    emu = Emulator(EmulatorConfig(clock=ManualClock(), generation_time=gen))
    async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as c:
        data = body()
        data["input"]["prompt"] = "p" * 2000
        data["input"]["negative_prompt"] = "n" * 900
        out = await final(c, emu, await create(c, data))
    assert len(out["output"]["orig_prompt"]) == 1500
    assert len(seen[0]["input"]["negative_prompt"]) == 500


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("refs", "ok"),
    [
        ([], False),
        ([IMAGE] * 6, False),
        ([VIDEO] * 4, False),
        ([IMAGE] * 5, True),
        ([VIDEO] * 3 + [IMAGE] * 2, True),
        ([VIDEO] * 3 + [IMAGE] * 3, False),
    ],
)
async def test_reference_counts(client: httpx.AsyncClient, refs: list[str], ok: bool) -> None:
    """At most 5 references in all, at most 5 images, at most 3 videos, at least 1."""
    data = body()
    data["input"]["reference_urls"] = refs
    resp = await create(client, data)
    if ok:
        assert resp.status_code == 200, resp.text
    else:
        expect(resp, 400, "InvalidParameter")


@pytest.mark.anyio
async def test_unsupported_extension_is_invalid_file_format(client: httpx.AsyncClient) -> None:
    """A reference of an unsupported format: 400 InvalidFile.Format."""
    expect(await create(client, body(refs=["https://x.example/a.gif"])), 400, "InvalidFile.Format")


@pytest.mark.anyio
async def test_reference_must_be_an_url(client: httpx.AsyncClient) -> None:
    """A reference that is not http(s) or oss: 400 InvalidParameter."""
    expect(await create(client, body(refs=["ftp://x.example/a.mp4"])), 400, "InvalidParameter")


@pytest.mark.anyio
async def test_defaults_apply(client: httpx.AsyncClient, emu: Emulator) -> None:
    """Absent parameters take the defaults: 1920*1080, 5 s."""
    out = await final(client, emu, await create(client, body()))
    assert out["usage"]["size"] == "1920*1080"
    assert out["usage"]["SR"] == 1080
    assert out["usage"]["output_video_duration"] == 5


@pytest.mark.anyio
@pytest.mark.parametrize("size", ["1280x720", 1280, "", "1280*"])
async def test_malformed_size_is_400(client: httpx.AsyncClient, size: object) -> None:
    """A size that is not a 'W*H' string: 400 InvalidParameter."""
    expect(await create(client, body(size=size)), 400, "InvalidParameter", "size")


@pytest.mark.anyio
async def test_unlisted_size_fails_the_task_after_200(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    """A well-formed size outside the lists: 200, then FAILED InvalidParameter (vendor style)."""
    out = await final(client, emu, await create(client, body(size="1000*1000")))
    assert out["output"]["task_status"] == "FAILED"
    assert out["output"]["code"] == "InvalidParameter"
    assert "size is not match" in out["output"]["message"]
    assert "usage" not in out


@pytest.mark.anyio
@pytest.mark.parametrize("duration", [1, 11, "5", 5.5, True, None])
async def test_bad_duration_is_400(client: httpx.AsyncClient, duration: object) -> None:
    """Duration must be an integer within 2-10."""
    expect(await create(client, body(duration=duration)), 400, "InvalidParameter", "duration")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"shot_type": "wide"}, "shot_type"),
        ({"shot_type": ["single"]}, "shot_type"),  # unhashable: was a 500 (fuzz)
        ({"audio": "yes"}, "audio"),
        ({"watermark": 1}, "watermark"),
        ({"seed": -1}, "seed"),
        ({"seed": 2147483648}, "seed"),
        ({"seed": "7"}, "seed"),
    ],
)
async def test_bad_parameters_are_400(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    """shot_type, audio, watermark and seed are checked, with the field named."""
    expect(await create(client, body(**params)), 400, "InvalidParameter", field)


@pytest.mark.anyio
async def test_audio_is_ignored_on_the_standard_model(client: httpx.AsyncClient) -> None:
    """audio is a flash parameter: the standard model ignores it (even a bad value)."""
    resp = await create(client, body(model="wan2.6-r2v", audio="whatever"))
    assert resp.status_code == 200, resp.text


@pytest.mark.anyio
async def test_seed_bounds_are_accepted(client: httpx.AsyncClient) -> None:
    """Seeds 0 and 2147483647 are valid."""
    assert (await create(client, body(seed=0))).status_code == 200
    assert (await create(client, body(seed=2147483647))).status_code == 200


@pytest.mark.anyio
async def test_unknown_fields_are_ignored(client: httpx.AsyncClient) -> None:
    """Extra fields (the vendor's SDK sends some) are ignored."""
    data = body(prompt_extend=True, resolution="720P")
    data["input"]["extend_prompt"] = True
    data["resources"] = []
    assert (await create(client, data)).status_code == 200


@pytest.mark.anyio
async def test_oss_reference_needs_resolve_header(client: httpx.AsyncClient) -> None:
    """An oss:// reference without X-DashScope-OssResourceResolve: 400 DataInspection."""
    resp = await create(client, body(refs=["oss://dashscope-instant/x/a.mp4"]))
    expect(resp, 400, "InvalidParameter.DataInspection")


@pytest.mark.anyio
async def test_unknown_oss_reference_is_data_inspection(client: httpx.AsyncClient) -> None:
    """An oss:// key the emulator never stored: 400 DataInspection."""
    headers = {**HEADERS, "X-DashScope-OssResourceResolve": "enable"}
    resp = await create(client, body(refs=["oss://dashscope-instant/x/a.mp4"]), headers)
    expect(resp, 400, "InvalidParameter.DataInspection")


@pytest.mark.anyio
async def test_unreachable_reference_fails_the_task(
    client: httpx.AsyncClient, emu: Emulator
) -> None:
    """A reference on a host ending in .invalid: 200, then FAILED DataInspection."""
    out = await final(client, emu, await create(client, body(refs=["https://gone.invalid/a.mp4"])))
    assert out["output"]["task_status"] == "FAILED"
    assert out["output"]["code"] == "InvalidParameter.DataInspection"


@pytest.mark.anyio
async def test_deprecated_reference_video_urls(client: httpx.AsyncClient) -> None:
    """input.reference_video_urls (videos only, at most 3) is still accepted."""
    data = body()
    data["input"] = {"prompt": "x", "reference_video_urls": [VIDEO, VIDEO]}
    assert (await create(client, data)).status_code == 200
    data["input"]["reference_video_urls"] = [IMAGE]
    expect(await create(client, data), 400, "InvalidParameter")
    data["input"]["reference_video_urls"] = [VIDEO] * 4
    expect(await create(client, data), 400, "InvalidParameter")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (body(model="wan2.6-r2v-flash"), "not offered"),
        (body(model="wan2.6-r2v", duration=6), "5 or 10"),
        (body(model="wan2.6-r2v", refs=[VIDEO, IMAGE]), "Image references"),
    ],
)
async def test_virginia_capabilities(
    client: httpx.AsyncClient, emu: Emulator, data: dict[str, Any], fragment: str
) -> None:
    """Virginia: wan2.6-r2v only, durations 5 or 10, no image references."""
    resp = await client.post(emu.base_url_for("virginia") + CREATE, json=data, headers=HEADERS)
    expect(resp, 400, "InvalidParameter", fragment)


@pytest.mark.anyio
async def test_virginia_accepts_what_it_offers(client: httpx.AsyncClient, emu: Emulator) -> None:
    """Virginia accepts wan2.6-r2v, 10 s, video references."""
    data = body(model="wan2.6-r2v", duration=10)
    resp = await client.post(emu.base_url_for("virginia") + CREATE, json=data, headers=HEADERS)
    assert resp.status_code == 200, resp.text
