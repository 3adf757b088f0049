"""Local references are uploaded once, checked first and never leak the key; results are
streamed to disk, resumed after drops, refreshed when their URL expires, and never left
half-written."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import types
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import attrs
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from wanr2v._demo import make_png
from wanr2v._download import Downloader
from wanr2v._exceptions import (
    ConnectError,
    DownloadError,
    InvalidRequestError,
    PermissionDeniedError,
    ResultExpiredError,
    TaskNotFoundError,
)
from wanr2v._hosts import is_local, is_oss, safe_join
from wanr2v._models import TaskResult, TaskStatus, VideoRequest
from wanr2v._retry import RetryPolicy
from wanr2v._upload import Uploader
from wanr2v._wire import UploadPolicy, parse_policy, parse_result
from wanr2v.testing import (
    Emulator,
    EmulatorConfig,
    Endpoint,
    FaultKind,
    FaultRule,
    ManualClock,
    Quotas,
    make_mp4,
)

MODEL = "wan2.6-r2v-flash"
UPLOAD_HOST = "http://upload.test/upload"
VIDEO_HOST = "http://video.test"
SECRET = "sk-test-secret-0123456789"
NO_WAIT = RetryPolicy(initial=0.0)
"""The default retries, without the backoff's sleeps."""


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return cast(str, request.param)


# --- a small upload host and video host ---------------------------------------------------


class _Cut(Exception):
    """Raised by the fake video host to drop a response mid-body."""


@attrs.define
class Seen:
    """One request that reached a fake host."""

    host: str
    method: str
    path: str
    headers: dict[str, str]


def parse_form(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """Split a multipart/form-data body into ``(name, value)`` pairs, in order."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    parts = body.split(b"--" + boundary)
    assert parts[0] == b"", "text before the first boundary"
    assert parts[-1] == b"--\r\n", "no closing boundary"
    fields = []
    for part in parts[1:-1]:
        assert part.startswith(b"\r\n")
        assert part.endswith(b"\r\n")
        head, _, value = part[2:-2].partition(b"\r\n\r\n")
        name = head.split(b'name="', 1)[1].split(b'"', 1)[0].decode()
        fields.append((name, value))
    return fields


class FakeHosts:
    """Plays the OSS upload host and the result video host, recording every request."""

    def __init__(self, video: bytes = b"") -> None:
        self.seen: list[Seen] = []
        self.objects: dict[str, bytes] = {}
        self.forms: list[list[tuple[str, bytes]]] = []
        self.revoked: set[str] = set()
        self.video = video
        self.cuts: list[int] = []
        """Bytes to send before dropping, one entry per coming video response."""
        self.ignore_range = False
        self.expired: set[str] = set()
        self.single_use: set[str] = set()
        """Signatures that expire once they have served one response."""
        self.stall = 0.0
        self.active = 0
        self.max_active = 0
        self.app = Starlette(
            routes=[
                Route("/upload", self.upload, methods=["POST"]),
                Route("/v/{name}", self.get_video),
            ]
        )

    def _record(self, request: Request) -> None:
        self.seen.append(
            Seen(
                host=request.headers.get("host", ""),
                method=request.method,
                path=request.url.path,
                headers={k.lower(): v for k, v in request.headers.items()},
            )
        )

    async def upload(self, request: Request) -> Response:
        self._record(request)
        body = await request.body()
        assert int(request.headers["content-length"]) == len(body)
        form = parse_form(body, request.headers["content-type"])
        self.forms.append(form)
        fields = dict(form)
        if fields["policy"].decode() in self.revoked:
            xml = (
                "<Error><Code>AccessDenied</Code><Message>Invalid according to Policy: "
                "Policy expired.</Message><RequestId>R1</RequestId></Error>"
            )
            return Response(xml, status_code=403, media_type="application/xml")
        key = fields["key"].decode()
        if key in self.objects and fields.get("x-oss-forbid-overwrite") == b"true":
            return Response("<Error><Code>FileAlreadyExists</Code></Error>", status_code=409)
        self.objects[key] = fields["file"]
        return Response(b"", status_code=int(fields["success_action_status"]))

    async def get_video(self, request: Request) -> Response:
        self._record(request)
        sig = request.query_params.get("sig")
        if sig in self.expired:
            return Response("<Error><Code>AccessDenied</Code></Error>", status_code=403)
        if sig in self.single_use:
            self.expired.add(sig)
        data = self.video
        start = 0
        status = 200
        headers = {"ETag": '"v1"', "Accept-Ranges": "bytes"}
        rng = request.headers.get("range")
        if rng and not self.ignore_range:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        cut = self.cuts.pop(0) if self.cuts else None

        async def stream() -> AsyncIterator[bytes]:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            try:
                if self.stall:
                    await anyio.sleep(self.stall)
                if cut is not None:
                    yield body[:cut]
                    raise _Cut
                for i in range(0, len(body), 65536):
                    yield body[i : i + 65536]
            finally:
                self.active -= 1

        return StreamingResponse(stream(), status_code=status, headers=headers)

    def at(self, host: str) -> list[Seen]:
        return [s for s in self.seen if s.host == host]


class Policies:
    """``get_policy`` for the Uploader: numbered policies, each ``age`` seconds old."""

    def __init__(self, *, expire: float = 300.0, max_mb: float | None = None) -> None:
        self.calls: list[str] = []
        self.expire = expire
        self.max_mb = max_mb
        self.age = 0.0

    async def __call__(self, model: str) -> UploadPolicy:
        n = len(self.calls)
        self.calls.append(model)
        return UploadPolicy(
            policy=f"policy-{n}",
            signature=f"sig-{n}",
            upload_dir=f"dashscope-instant/acct/{n}",
            upload_host=UPLOAD_HOST,
            expire_in_seconds=self.expire,
            max_file_size_mb=self.max_mb,
            capacity_limit_mb=None,
            oss_access_key_id="AKID",
            x_oss_object_acl="private",
            x_oss_forbid_overwrite="true",
            obtained_at=anyio.current_time() - self.age,
        )


@asynccontextmanager
async def client_for(hosts: FakeHosts) -> AsyncIterator[httpx.AsyncClient]:
    """A client on the fake hosts that carries the API key by default: a trap for leaks."""
    transport = httpx.ASGITransport(app=hosts.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport,
        headers={"Authorization": f"Bearer {SECRET}"},
        auth=httpx.BasicAuth("user", SECRET),
    ) as http:
        yield http


def request_for(*refs: str | os.PathLike[str], model: str = MODEL) -> VideoRequest:
    return VideoRequest(model=model, prompt="character1 waves", reference_urls=refs)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def result_for(task_id: str = "task-1", sig: str = "s1") -> TaskResult:
    return TaskResult(
        task_id=task_id,
        status=TaskStatus.SUCCEEDED,
        video_url=f"{VIDEO_HOST}/v/{task_id}.mp4?Expires=1&sig={sig}",
    )


VIDEO = os.urandom(600_000)


# --- uploads ------------------------------------------------------------------------------


def test_is_local_and_is_oss() -> None:
    """Paths and file:// URLs are local; http(s):// and oss:// are not; oss:// is detected."""
    assert is_local("clips/a.mp4")
    assert is_local(Path("/x/a.png"))
    assert is_local("file:///a.png")
    assert not is_local("https://h/a.png")
    assert not is_local("oss://k/a.png")
    assert is_oss("oss://dir/a.png")
    assert not is_oss("https://h/a.png")


@pytest.mark.anyio
async def test_upload_replaces_local_references_with_oss_urls(tmp_path: Path) -> None:
    """Paths and file:// URLs become oss://{upload_dir}/...; remote URLs stay; the file is last."""
    img = write(tmp_path / "hero.png", b"\x89PNG-hero")
    clip = write(tmp_path / "my clip.mp4", b"clip-bytes" * 1000)
    hosts, policies = FakeHosts(), Policies()
    async with client_for(hosts) as http:
        uploader = Uploader(http, policies)
        refs, needs_resolve = await uploader.resolve(
            request_for(img, clip.as_uri(), "https://cdn.example/bg.jpg")
        )
    assert needs_resolve
    assert refs[2] == "https://cdn.example/bg.jpg"
    assert refs[0].startswith("oss://dashscope-instant/acct/0/")
    assert refs[0].endswith("hero.png")
    assert refs[1].startswith("oss://dashscope-instant/acct/0/")
    assert " " not in refs[1]
    assert hosts.objects[refs[0].removeprefix("oss://")] == img.read_bytes()
    assert hosts.objects[refs[1].removeprefix("oss://")] == clip.read_bytes()
    for form in hosts.forms:
        names = [name for name, _ in form]
        assert names == [
            "OSSAccessKeyId", "Signature", "policy", "key", "x-oss-object-acl",
            "x-oss-forbid-overwrite", "success_action_status", "file",
        ]  # fmt: skip
        assert dict(form)["success_action_status"] == b"200"
    assert policies.calls == [MODEL]


@pytest.mark.anyio
async def test_remote_references_need_no_policy() -> None:
    """Only remote references: nothing is uploaded; the resolve flag follows oss:// URLs."""
    hosts, policies = FakeHosts(), Policies()
    async with client_for(hosts) as http:
        uploader = Uploader(http, policies)
        refs, flag = await uploader.resolve(request_for("https://h/a.png"))
        assert (refs, flag) == (["https://h/a.png"], False)
        refs, flag = await uploader.resolve(request_for("oss://d/a.png", "https://h/b.mp4"))
        assert (refs, flag) == (["oss://d/a.png", "https://h/b.mp4"], True)
    assert policies.calls == []
    assert hosts.seen == []


@pytest.mark.anyio
async def test_policy_serves_several_files_until_near_expiry(tmp_path: Path) -> None:
    """One policy serves files until a margin before expiry, then a fresh one is fetched."""
    hosts, policies = FakeHosts(), Policies(expire=300.0)
    async with client_for(hosts) as http:
        uploader = Uploader(http, policies, policy_margin=30.0)
        await uploader.resolve(request_for(write(tmp_path / "a.png", b"a")))
        await uploader.resolve(request_for(write(tmp_path / "b.png", b"b")))
        assert len(policies.calls) == 1
        # The policy in hand is now 280 s old: within 30 s of its end, so it is renewed.
        uploader._policies[MODEL] = attrs.evolve(
            uploader._policies[MODEL], obtained_at=anyio.current_time() - 280.0
        )
        refs, _ = await uploader.resolve(request_for(write(tmp_path / "c.png", b"c")))
    assert len(policies.calls) == 2
    assert refs[0].startswith("oss://dashscope-instant/acct/1/")
    assert uploader.statistics().policies_fetched == 2


@pytest.mark.anyio
async def test_upload_403_fetches_a_fresh_policy_and_retries_once(tmp_path: Path) -> None:
    """A 403 from the upload host (policy expired) gets a fresh policy and one more try."""
    hosts, policies = FakeHosts(), Policies()
    hosts.revoked.add("policy-0")
    async with client_for(hosts) as http:
        uploader = Uploader(http, policies)
        refs, _ = await uploader.resolve(request_for(write(tmp_path / "a.png", b"a")))
    assert refs[0].startswith("oss://dashscope-instant/acct/1/")
    assert len(hosts.forms) == 2
    assert len(policies.calls) == 2
    assert uploader.statistics().policy_rejections == 1


@pytest.mark.anyio
async def test_upload_403_twice_raises_permission_denied(tmp_path: Path) -> None:
    """When the fresh policy is refused too, the host's code and message are raised."""
    hosts, policies = FakeHosts(), Policies()
    hosts.revoked.update({"policy-0", "policy-1"})
    async with client_for(hosts) as http:
        uploader = Uploader(http, policies)
        with pytest.raises(PermissionDeniedError, match="Policy expired") as info:
            await uploader.resolve(request_for(write(tmp_path / "a.png", b"a")))
    assert info.value.code == "AccessDenied"
    assert info.value.request_id == "R1"
    assert len(hosts.forms) == 2


@pytest.mark.anyio
async def test_same_file_is_uploaded_once(tmp_path: Path) -> None:
    """The hash cache answers a repeated file, also under concurrent resolves; not per model."""
    clip = write(tmp_path / "c.mp4", b"same" * 5000)
    hosts, policies = FakeHosts(), Policies()
    async with client_for(hosts) as http:
        uploader = Uploader(http, policies)
        results: list[list[str]] = []

        async def resolve() -> None:
            results.append((await uploader.resolve(request_for(clip)))[0])

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(resolve)
        again, _ = await uploader.resolve(request_for(write(tmp_path / "copy.mp4", b"same" * 5000)))
        assert len(hosts.forms) == 1
        assert {r[0] for r in results} == {again[0]}
        other, _ = await uploader.resolve(request_for(clip, model="wan2.6-r2v"))
    assert len(hosts.forms) == 2
    assert other[0] != again[0]
    assert uploader.statistics().cache_hits == 4


@pytest.mark.anyio
async def test_cached_upload_expires_after_its_life(tmp_path: Path) -> None:
    """Past the cache's time-to-live the file is uploaded again."""
    img = write(tmp_path / "a.png", b"a")
    hosts, policies = FakeHosts(), Policies()
    async with client_for(hosts) as http:
        uploader = Uploader(http, policies, cache_ttl=0.0)
        await uploader.resolve(request_for(img))
        await uploader.resolve(request_for(img))
    assert len(hosts.forms) == 2


@pytest.mark.anyio
async def test_same_name_in_two_folders_gets_two_keys(tmp_path: Path) -> None:
    """Two different files both named face.png are both uploaded, under distinct keys."""
    a = write(tmp_path / "one" / "face.png", b"first face")
    b = write(tmp_path / "two" / "face.png", b"second face")
    hosts, policies = FakeHosts(), Policies()
    async with client_for(hosts) as http:
        refs, _ = await Uploader(http, policies).resolve(request_for(a, b))
    assert refs[0] != refs[1]
    assert hosts.objects[refs[0].removeprefix("oss://")] == b"first face"
    assert hosts.objects[refs[1].removeprefix("oss://")] == b"second face"


@pytest.mark.anyio
async def test_existing_object_counts_as_uploaded(tmp_path: Path) -> None:
    """A 409 for a content-addressed key (cache lost on restart) is taken as success."""
    img = write(tmp_path / "a.png", b"a")
    hosts, policies = FakeHosts(), Policies()
    async with client_for(hosts) as http:
        first, _ = await Uploader(http, policies).resolve(request_for(img))
        policies.calls.clear()  # the next Uploader gets policy-0 again: same upload_dir
        second, _ = await Uploader(http, policies).resolve(request_for(img))
    assert first == second
    assert len(hosts.forms) == 2


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)
    return path


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.png", "does not exist"),
        (lambda d: (d / "folder.png").mkdir() or d / "folder.png", "is a directory"),
        (lambda d: write(d / "anim.gif", b"GIF89a"), r"unsupported type \(\.gif\)"),
        (lambda d: write(d / "noext", b"x"), r"unsupported type \(no extension\)"),
        (lambda d: write(d / "empty.png", b""), "is empty"),
        (lambda d: _sparse(d / "big.png", 10 * 2**20 + 1), "images may be at most 10 MB"),
        (lambda d: _sparse(d / "big.mp4", 100 * 2**20 + 1), "videos may be at most 100 MB"),
    ],
    ids=["missing", "directory", "extension", "no-extension", "empty", "image-size", "video-size"],
)
async def test_checks_before_any_upload(tmp_path: Path, make: Any, match: str) -> None:
    """Each bad local file is refused with a message naming it; nothing is uploaded."""
    good = write(tmp_path / "good.png", b"good")
    bad = make(tmp_path)
    hosts, policies = FakeHosts(), Policies()
    async with client_for(hosts) as http:
        with pytest.raises(InvalidRequestError, match=match) as info:
            await Uploader(http, policies).resolve(request_for(good, bad))
    assert str(bad) in str(info.value)
    assert info.value.field == "input.reference_urls[1]"
    assert hosts.seen == []
    assert policies.calls == []


@pytest.mark.anyio
async def test_policy_size_limit_checked_before_upload(tmp_path: Path) -> None:
    """A file over the policy's max_file_size_mb is refused before any upload."""
    small = write(tmp_path / "a.png", b"a")
    big = _sparse(tmp_path / "b.mp4", 2 * 2**20)
    hosts, policies = FakeHosts(), Policies(max_mb=1)
    async with client_for(hosts) as http:
        with pytest.raises(InvalidRequestError, match="policy allows at most 1 MB"):
            await Uploader(http, policies).resolve(request_for(small, big))
    assert hosts.seen == []


@pytest.mark.anyio
async def test_too_many_images_or_videos_counts_local_and_remote(tmp_path: Path) -> None:
    """More than 5 images or 3 videos, local and remote together, is refused before upload."""
    clips = [write(tmp_path / f"c{i}.mp4", b"c%d" % i) for i in range(2)]
    hosts, policies = FakeHosts(), Policies()
    # VideoRequest refuses this itself; an unvalidated request must be refused here too.
    unvalidated = types.SimpleNamespace(
        model=MODEL, reference_urls=(*clips, "https://h/x.mp4", "https://h/y.mov")
    )
    six_images = types.SimpleNamespace(
        model=MODEL, reference_urls=(write(tmp_path / "i.png", b"i"), *["https://h/i.jpg"] * 5)
    )
    async with client_for(hosts) as http:
        uploader = Uploader(http, policies)
        with pytest.raises(InvalidRequestError, match="at most 3 videos, got 4"):
            await uploader.resolve(cast(VideoRequest, unvalidated))
        with pytest.raises(InvalidRequestError, match="at most 5 images, got 6"):
            await uploader.resolve(cast(VideoRequest, six_images))
    assert hosts.seen == []


@pytest.mark.anyio
async def test_file_changed_during_upload_is_refused(tmp_path: Path) -> None:
    """A file that grows between the checks and the upload is not sent with a wrong length."""
    img = write(tmp_path / "a.png", b"before")
    hosts = FakeHosts()
    policies = Policies()

    async def get_policy(model: str) -> UploadPolicy:
        img.write_bytes(b"before, and more")
        return await policies(model)

    async with client_for(hosts) as http:
        with pytest.raises(InvalidRequestError, match="changed while it was being uploaded"):
            await Uploader(http, get_policy).resolve(request_for(img))
    assert hosts.objects == {}


@pytest.mark.anyio
async def test_unreachable_upload_host_raises_connect_error(tmp_path: Path) -> None:
    """A refused connection becomes wanr2v's ConnectError after the bounded retries."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    policies = Policies()

    async def get_policy(model: str) -> UploadPolicy:
        p = await policies(model)
        return attrs.evolve(p, upload_host=f"http://127.0.0.1:{port}/")

    async with httpx.AsyncClient() as http:
        uploader = Uploader(http, get_policy, retry_policy=RetryPolicy(max_retries=1, initial=0.0))
        with pytest.raises(ConnectError):
            await uploader.resolve(request_for(write(tmp_path / "a.png", b"a")))


# --- downloads ----------------------------------------------------------------------------


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.anyio
async def test_download_into_folder_names_file_by_task_id(tmp_path: Path) -> None:
    """A folder destination gets {task_id}.mp4 with the exact bytes and nothing else."""
    hosts = FakeHosts(VIDEO)
    async with client_for(hosts) as http:
        path = await Downloader(http).download(result_for("t-42"), tmp_path)
    assert path == tmp_path / "t-42.mp4"
    assert path.read_bytes() == VIDEO
    assert leftovers(tmp_path) == ["t-42.mp4"]


@pytest.mark.anyio
async def test_missing_path_without_extension_is_a_folder(tmp_path: Path) -> None:
    """A missing dest without an extension (Path("out/") loses its slash) becomes a folder."""
    hosts = FakeHosts(VIDEO)
    async with client_for(hosts) as http:
        downloader = Downloader(http)
        first = await downloader.download(result_for("t1"), tmp_path / "out")
        second = await downloader.download(result_for("t2"), tmp_path / "out")
    assert first == tmp_path / "out" / "t1.mp4"
    assert second == tmp_path / "out" / "t2.mp4"
    assert second.read_bytes() == VIDEO


@pytest.mark.anyio
async def test_a_folder_made_by_a_concurrent_download_is_still_a_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two downloads into one missing folder: the other one creates it between this
    one's checks (played exactly, by patching the check); the video still goes into
    the folder, not onto its path ("Is a directory" under load, before the fix)."""
    hosts = FakeHosts(VIDEO)
    out = tmp_path / "out"

    def created_by_another_after_the_first_look(name: str) -> None:
        real = getattr(anyio.Path, name)

        async def look(self: anyio.Path) -> bool:
            seen: bool = await real(self)
            if Path(self) == out:
                out.mkdir(exist_ok=True)  # the concurrent download, just after the look
            return seen

        monkeypatch.setattr(anyio.Path, name, look)

    created_by_another_after_the_first_look("exists")
    created_by_another_after_the_first_look("is_dir")
    async with client_for(hosts) as http:
        first = await Downloader(http).download(result_for("t1"), out)
        second = await Downloader(http).download(result_for("t2"), out)
    assert first == out / "t1.mp4" and second == out / "t2.mp4"
    assert first.read_bytes() == VIDEO and second.read_bytes() == VIDEO


@pytest.mark.anyio
async def test_download_to_file_path_creates_folders(tmp_path: Path) -> None:
    """A file destination is written as given; missing parent folders are created."""
    hosts = FakeHosts(VIDEO)
    dest = tmp_path / "out" / "run1" / "hero.mp4"
    async with client_for(hosts) as http:
        path = await Downloader(http).download(result_for(), dest)
    assert path == dest
    assert dest.read_bytes() == VIDEO


@pytest.mark.anyio
async def test_short_body_resumes_with_range(tmp_path: Path) -> None:
    """A body cut short is continued with Range + If-Range and yields identical bytes."""
    hosts = FakeHosts(VIDEO)
    hosts.cuts = [200_001]
    async with client_for(hosts) as http:
        downloader = Downloader(http, retry_policy=NO_WAIT, chunk_size=65536)
        path = await downloader.download(result_for(), tmp_path / "v.mp4")
    assert path.read_bytes() == VIDEO
    gets = hosts.at("video.test")
    assert len(gets) == 2
    assert gets[1].headers["range"] == "bytes=200001-"
    assert gets[1].headers["if-range"] == '"v1"'
    assert downloader.statistics().resumes == 1


@pytest.mark.anyio
async def test_host_ignoring_range_restarts_cleanly(tmp_path: Path) -> None:
    """When the host answers a Range with the whole body (200), the file starts over."""
    hosts = FakeHosts(VIDEO)
    hosts.cuts = [300_000]
    hosts.ignore_range = True
    async with client_for(hosts) as http:
        downloader = Downloader(http, retry_policy=NO_WAIT)
        path = await downloader.download(result_for(), tmp_path / "v.mp4")
    assert path.read_bytes() == VIDEO
    assert downloader.statistics().restarts == 1


@pytest.mark.anyio
async def test_expired_url_is_refreshed(tmp_path: Path) -> None:
    """A 403 from the video host fetches the task again and downloads from the fresh URL."""
    hosts = FakeHosts(VIDEO)
    hosts.expired.add("old")
    calls: list[str] = []

    async def refresh(old: TaskResult) -> TaskResult:
        calls.append(old.task_id)
        return result_for(old.task_id, sig="fresh")

    async with client_for(hosts) as http:
        downloader = Downloader(http, retry_policy=NO_WAIT)
        path = await downloader.download(result_for(sig="old"), tmp_path, refresh=refresh)
    assert path.read_bytes() == VIDEO
    assert calls == ["task-1"]
    assert downloader.statistics().url_refreshes == 1


@pytest.mark.anyio
async def test_resume_after_expiry_keeps_the_bytes_received(tmp_path: Path) -> None:
    """A drop, then an expired URL: the fresh URL is asked only for the missing range."""
    hosts = FakeHosts(VIDEO)
    hosts.cuts = [250_000]
    hosts.single_use.add("first")

    async def refresh(old: TaskResult) -> TaskResult:
        return result_for(old.task_id, sig="fresh")

    async with client_for(hosts) as http:
        downloader = Downloader(http, retry_policy=NO_WAIT, chunk_size=4096)
        path = await downloader.download(result_for(sig="first"), tmp_path, refresh=refresh)
    assert path.read_bytes() == VIDEO
    gets = hosts.at("video.test")
    assert [g.headers.get("range") for g in gets] == [None, "bytes=250000-", "bytes=250000-"]
    assert downloader.statistics().url_refreshes == 1


async def _gone(old: TaskResult) -> TaskResult:
    raise TaskNotFoundError("gone", task_id=old.task_id, status="UNKNOWN")


async def _unknown(old: TaskResult) -> TaskResult:
    return TaskResult(task_id=old.task_id, status=TaskStatus.UNKNOWN)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "refresh", [None, _gone, _unknown], ids=["no-refresh", "raises", "unknown"]
)
async def test_expired_url_and_gone_task_raise_result_expired(tmp_path: Path, refresh: Any) -> None:
    """URL refused and task gone (or no way to refresh): ResultExpiredError, no file left."""
    hosts = FakeHosts(VIDEO)
    hosts.expired.add("s1")
    async with client_for(hosts) as http:
        with pytest.raises(ResultExpiredError, match="task-1") as info:
            await Downloader(http).download(result_for(), tmp_path, refresh=refresh)
    assert getattr(info.value, "task_id", None) == "task-1"
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_unknown_task_without_url_raises_result_expired(tmp_path: Path) -> None:
    """A result already UNKNOWN (expired task) cannot be downloaded: ResultExpiredError."""
    async with client_for(FakeHosts()) as http:
        with pytest.raises(ResultExpiredError):
            await Downloader(http).download(
                TaskResult(task_id="t", status=TaskStatus.UNKNOWN), tmp_path
            )
        with pytest.raises(DownloadError, match="FAILED"):
            await Downloader(http).download(
                TaskResult(task_id="t", status=TaskStatus.FAILED), tmp_path
            )


@pytest.mark.anyio
async def test_task_id_cannot_escape_the_folder(tmp_path: Path) -> None:
    """A hostile task id or URL name lands inside the target folder, sanitized."""
    folder = tmp_path / "out"
    folder.mkdir()
    hosts = FakeHosts(VIDEO)
    evil = TaskResult(
        task_id="../../evil",
        status=TaskStatus.SUCCEEDED,
        video_url=f"{VIDEO_HOST}/v/x.sh?sig=s",
    )
    async with client_for(hosts) as http:
        path = await Downloader(http).download(evil, folder)
    assert path.parent == folder
    assert path.name == "evil.mp4"
    assert leftovers(tmp_path) == ["out"]
    for name in ["../x", "/etc/passwd", "..", ".", "a/../../b", "..\\..\\c", ""]:
        joined = safe_join(folder, name)
        assert joined.parent == folder
        assert not joined.name.startswith(".")


@pytest.mark.anyio
async def test_no_authorization_reaches_upload_or_video_host(tmp_path: Path) -> None:
    """Even a client carrying the key by default sends none to the upload and video hosts."""
    hosts = FakeHosts(VIDEO)
    async with client_for(hosts) as http:
        await Uploader(http, Policies()).resolve(request_for(write(tmp_path / "a.png", b"a")))
        await Downloader(http).download(result_for(), tmp_path / "v.mp4")
    assert {s.host for s in hosts.seen} == {"upload.test", "video.test"}
    for seen in hosts.seen:
        assert "authorization" not in seen.headers
        assert SECRET not in repr(seen.headers)


@pytest.mark.anyio
async def test_failed_download_leaves_nothing_and_keeps_old_file(tmp_path: Path) -> None:
    """A download that keeps dropping raises DownloadError; the old file stays, no temp file."""
    dest = write(tmp_path / "v.mp4", b"previous video")
    hosts = FakeHosts(VIDEO)
    hosts.ignore_range = True
    hosts.cuts = [1000] * 10
    async with client_for(hosts) as http:
        downloader = Downloader(http, retry_policy=RetryPolicy(max_retries=2, initial=0.0))
        with pytest.raises(DownloadError, match="after 3 attempts"):
            await downloader.download(result_for(), dest)
    assert dest.read_bytes() == b"previous video"
    assert leftovers(tmp_path) == ["v.mp4"]
    assert downloader.statistics().failed == 1


@pytest.mark.anyio
async def test_cancelled_download_leaves_no_temp_file(tmp_path: Path) -> None:
    """Cancelling a download mid-way removes its temporary file."""
    hosts = FakeHosts(VIDEO)
    hosts.stall = 5.0
    async with client_for(hosts) as http:
        with anyio.move_on_after(0.2):
            await Downloader(http).download(result_for(), tmp_path)
    assert leftovers(tmp_path) == []


@pytest.mark.anyio
async def test_batch_downloads_are_bounded(tmp_path: Path) -> None:
    """Concurrent downloads on one Downloader never exceed its max_concurrency."""
    hosts = FakeHosts(VIDEO)
    hosts.stall = 0.05
    async with client_for(hosts) as http:
        downloader = Downloader(http, max_concurrency=2)
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(downloader.download, result_for(f"t{i}"), tmp_path)
    assert hosts.max_active == 2
    assert leftovers(tmp_path) == [f"t{i}.mp4" for i in range(6)]
    assert downloader.statistics().completed == 6


# --- over a real loopback socket ----------------------------------------------------------


@pytest.fixture
def served_hosts() -> Iterator[tuple[FakeHosts, str]]:
    """The fake hosts behind a real uvicorn server on 127.0.0.1 (in a thread)."""
    import uvicorn

    hosts = FakeHosts(os.urandom(3_000_000))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(hosts.app, log_level="critical", lifespan="off", http="h11", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # a hang bound only
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield hosts, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.mark.anyio
async def test_dropped_connection_resumes_over_a_socket(
    tmp_path: Path, served_hosts: tuple[FakeHosts, str]
) -> None:
    """A connection closed mid-body (real TCP) resumes with Range; the bytes are identical."""
    hosts, origin = served_hosts
    hosts.cuts = [1_234_567, 400_000]
    result = TaskResult(
        task_id="sock", status=TaskStatus.SUCCEEDED, video_url=f"{origin}/v/sock.mp4?sig=a"
    )
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {SECRET}"}) as http:
        downloader = Downloader(http, retry_policy=NO_WAIT)
        path = await downloader.download(result, tmp_path)
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(hosts.video).digest()
    ranges = [s.headers.get("range") for s in hosts.seen]
    assert ranges[0] is None
    assert ranges[1:] == ["bytes=1234567-", "bytes=1634567-"]
    assert all("authorization" not in s.headers for s in hosts.seen)
    assert leftovers(tmp_path) == ["sock.mp4"]


# --- against the emulator (wanr2v.testing) ------------------------------------------------

EMU_KEY = "sk-files-emulator"
EMU_AUTH = {"Authorization": f"Bearer {EMU_KEY}"}


@pytest.fixture
def emu() -> Emulator:
    """An in-process emulator on a manual clock: quotas off, 10 s generation."""
    return Emulator(
        EmulatorConfig(
            clock=ManualClock(start=1_750_000_000.0),
            quotas=Quotas.off(),
            seed=3,
            generation_time=(10.0, 10.0),
        )
    )


class EmuService:
    """The API calls the client would make, done by hand against the emulator."""

    def __init__(self, emu: Emulator, http: httpx.AsyncClient) -> None:
        self.emu, self.http = emu, http
        self.policies = 0

    async def get_policy(self, model: str) -> UploadPolicy:
        obtained_at = anyio.current_time()
        response = await self.http.get(
            f"{self.emu.base_url}/uploads",
            params={"action": "getPolicy", "model": model},
            headers=EMU_AUTH,
        )
        assert response.status_code == 200, response.text
        self.policies += 1
        return parse_policy(response.json(), obtained_at=obtained_at)

    async def create(self, refs: list[str], oss: bool) -> str:
        headers = {**EMU_AUTH, "X-DashScope-Async": "enable"}
        if oss:
            headers["X-DashScope-OssResourceResolve"] = "enable"
        body = {
            "model": MODEL,
            "input": {"prompt": "character1 dances", "reference_urls": refs},
            "parameters": {"duration": 3},
        }
        response = await self.http.post(
            f"{self.emu.base_url}/services/aigc/video-generation/video-synthesis",
            json=body,
            headers=headers,
        )
        assert response.status_code == 200, response.text
        return cast(str, response.json()["output"]["task_id"])

    async def fetch(self, result: TaskResult) -> TaskResult:
        response = await self.http.get(
            f"{self.emu.base_url}/tasks/{result.task_id}", headers=EMU_AUTH
        )
        assert response.status_code == 200, response.text
        return parse_result(response.json(), task_id=result.task_id)

    async def finished(self, task_id: str) -> TaskResult:
        self.emu.advance(60.0)
        result = await self.fetch(TaskResult(task_id=task_id, status=TaskStatus.PENDING))
        assert result.status is TaskStatus.SUCCEEDED, result
        return result


@asynccontextmanager
async def emulated(emu: Emulator) -> AsyncIterator[EmuService]:
    async with httpx.AsyncClient(transport=emu.transport()) as http:
        yield EmuService(emu, http)


@pytest.mark.anyio
async def test_emulator_accepts_uploaded_references_and_serves_the_video(
    tmp_path: Path, emu: Emulator
) -> None:
    """Local files upload to the emulator, a create with their oss:// URLs succeeds, and the
    result downloads byte for byte; neither host sees an Authorization header."""
    # Real media: the emulator checks what it is sent (a fake file would fail the task).
    face = write(tmp_path / "a" / "face.png", make_png(240, 240, lambda x, y: (x, y, 0)))
    other = write(tmp_path / "b" / "face.png", make_png(240, 240, lambda x, y: (y, x, 0)))
    clip = write(tmp_path / "move.mp4", make_mp4(4))
    async with emulated(emu) as svc:
        uploader = Uploader(svc.http, svc.get_policy)
        refs, oss = await uploader.resolve(request_for(face, other, clip.as_uri()))
        assert oss
        assert len(set(refs)) == 3
        result = await svc.finished(await svc.create(refs, oss))
        path = await Downloader(svc.http).download(result, tmp_path, refresh=svc.fetch)
    assert path.read_bytes() == make_mp4(3)
    seen = emu.host_requests()
    assert sorted({r.host for r in seen}) == ["upload", "video"]
    assert [r.header("authorization") for r in seen] == [None] * len(seen)
    assert svc.policies == 1


@pytest.mark.anyio
async def test_emulator_expired_policy_is_replaced(tmp_path: Path, emu: Emulator) -> None:
    """After the emulator's policy lapses, the upload's 403 brings a fresh policy."""
    async with emulated(emu) as svc:
        uploader = Uploader(svc.http, svc.get_policy)
        await uploader.resolve(request_for(write(tmp_path / "a.png", b"a")))
        emu.advance(400.0)  # policies live 300 s on the emulator's clock
        refs, _ = await uploader.resolve(request_for(write(tmp_path / "b.png", b"b")))
        await svc.create(refs, True)  # the new key is valid for a create
    assert svc.policies == 2
    assert uploader.statistics().policy_rejections == 1
    assert [r.host for r in emu.host_requests()] == ["upload"] * 3


@pytest.mark.anyio
async def test_emulator_same_file_twice_is_uploaded_once(tmp_path: Path, emu: Emulator) -> None:
    """The same file in two requests of a batch reaches the emulator's upload host once."""
    clip = write(tmp_path / "c.mp4", b"clip" * 100)
    async with emulated(emu) as svc:
        uploader = Uploader(svc.http, svc.get_policy)
        first, _ = await uploader.resolve(request_for(clip))
        second, _ = await uploader.resolve(request_for(clip, "https://cdn.example/x.png"))
    assert first[0] == second[0]
    assert len(emu.host_requests("upload")) == 1


@pytest.mark.anyio
async def test_emulator_expired_url_is_refreshed(tmp_path: Path, emu: Emulator) -> None:
    """A 403 from the emulator's video host is answered by fetching the task again."""
    async with emulated(emu) as svc:
        result = await svc.finished(await svc.create(["https://cdn.example/a.mp4"], False))
        emu.faults.add(FaultRule(kind=FaultKind.EXPIRED_URL, endpoint=Endpoint.VIDEO, count=1))
        downloader = Downloader(svc.http)
        path = await downloader.download(result, tmp_path / "v.mp4", refresh=svc.fetch)
    assert path.read_bytes() == make_mp4(3)
    assert downloader.statistics().url_refreshes == 1
    assert len(emu.host_requests("video")) == 2


@pytest.mark.anyio
async def test_emulator_url_and_task_both_expired(tmp_path: Path, emu: Emulator) -> None:
    """Past the task's 24 h life the URL is refused and the task is UNKNOWN: ResultExpired."""
    async with emulated(emu) as svc:
        result = await svc.finished(await svc.create(["https://cdn.example/a.mp4"], False))
        emu.advance(25 * 3600.0)
        with pytest.raises(ResultExpiredError, match="task itself is gone"):
            await Downloader(svc.http).download(result, tmp_path, refresh=svc.fetch)
    assert leftovers(tmp_path) == []


@pytest.fixture
def wan_emulator_config() -> EmulatorConfig:
    """The served emulator for this module: 60x time, 10 s (0.17 s real) generations."""
    return EmulatorConfig(time_scale=60.0, generation_time=(10.0, 10.0), seed=0)


@pytest.mark.anyio
async def test_client_uploads_and_downloads_over_loopback(
    tmp_path: Path, wan_emulator: Emulator
) -> None:
    """Through AsyncWanClient on a served emulator: a local clip is uploaded, the task
    runs, and the video is saved in a folder as {task_id}.mp4."""
    from wanr2v import AsyncWanClient, PollPolicy

    clip = write(tmp_path / "in" / "move.mp4", make_mp4(4))  # checked before upload
    out = tmp_path / "out"
    out.mkdir()
    polls = PollPolicy(time_scale=60.0, min_interval=0.05, prior=(5.0, 20.0))
    async with AsyncWanClient(
        api_key=EMU_KEY, base_url=wan_emulator.base_url, poll_policy=polls
    ) as client:
        with anyio.fail_after(120):  # a hang bound only
            result = await client.call(request_for(clip, "https://cdn.example/bg.png"))
            path = await client.download(result, out)
    assert path == out / f"{result.task_id}.mp4"
    assert path.read_bytes() == make_mp4(5)
    seen = wan_emulator.host_requests()
    assert [r.host for r in seen] == ["upload", "video"]
    assert all(r.header("authorization") is None for r in seen)
