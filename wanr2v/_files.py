"""Local references (uploaded through temporary storage) and result downloads.

Uploads (protocol.md, "Local files: temporary upload"): a reference given as a path or a
``file://`` URL is checked, hashed, sent as a streamed multipart POST to the policy's
``upload_host`` and replaced by ``oss://{key}``. The key holds a prefix of the file's
sha256, so two files of the same name never collide and a repeated upload of the same
bytes is harmless. One policy serves several files until shortly before it expires; a
403 from the upload host fetches a fresh one and tries once more. A per-model cache of
content hashes means a file is uploaded once per batch (within the 48 h life of the
stored object), and concurrent resolves of the same file upload it once.

Downloads: ``video_url`` is streamed to a temporary file beside the target and renamed
into place; the length is checked; a dropped connection resumes with ``Range``; a URL
the video host refuses (its signature expired) is refreshed by fetching the task again.

Neither path sends the API key: requests to the upload and video hosts are built
without ``Authorization``. Nothing blocks the event loop: file I/O and hashing run in
worker threads (anyio), and memory stays bounded by a few chunks whatever the file size.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import random
import re
import secrets
import stat
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any, Final

import anyio
import anyio.abc
import attrs
import httpx

from ._exceptions import (
    DownloadError,
    InvalidRequestError,
    ResultExpiredError,
    TaskNotFoundError,
    TransportError,
    UploadError,
    WanError,
    collapse_group,
    error_for,
)
from ._http import translate
from ._media import check_local_file
from ._models import (
    IMAGE_EXTENSIONS,
    MAX_IMAGES,
    MAX_VIDEOS,
    VIDEO_EXTENSIONS,
    Reference,
    TaskResult,
    TaskStatus,
    VideoRequest,
    local_path,
    reference_kind,
)
from ._wire import UploadPolicy

__all__ = [
    "Downloader",
    "DownloaderStatistics",
    "Refresh",
    "Uploader",
    "UploaderStatistics",
    "is_local",
    "is_oss",
    "safe_join",
]

MIB: Final = 1024 * 1024
MAX_IMAGE_BYTES: Final = 10 * MIB
"""Images: at most 10 MB (**assumed** MiB, as OSS policies count)."""
MAX_VIDEO_BYTES: Final = 100 * MIB
"""Videos: at most 100 MB (**assumed** MiB)."""
OSS_FILE_LIFETIME: Final = 48 * 3600.0
"""Seconds an uploaded ``oss://`` file lives."""
DEFAULT_CACHE_TTL: Final = OSS_FILE_LIFETIME - 3600.0
"""Seconds a cached upload is reused: an hour short of its life, so a task made from it
still has time to read it."""
DEFAULT_POLICY_MARGIN: Final = 30.0
"""Seconds before a policy's expiry at which a fresh one is fetched (at most 10 % of its
life), so an upload does not start on a policy about to lapse."""
DEFAULT_UPLOAD_CONCURRENCY: Final = 4
DEFAULT_DOWNLOAD_CONCURRENCY: Final = 4
DEFAULT_CHUNK_SIZE: Final = MIB
"""Bytes per file read (uploads) and per batch of file writes (downloads)."""
DEFAULT_MAX_ATTEMPTS: Final = 5
"""Download attempts in a row that make no progress before giving up."""
DEFAULT_UPLOAD_ATTEMPTS: Final = 3
"""Upload attempts after transport errors or 5xx answers (a content-addressed key makes a
repeated upload harmless)."""
DEFAULT_BACKOFF: Final = 0.5
"""Seconds before the first retry; doubled each time, up to ``MAX_BACKOFF``."""
MAX_BACKOFF: Final = 8.0
MAX_URL_REFRESHES: Final = 3
"""Fresh video URLs fetched for one download before giving up."""

_CONTENT_TYPES: Final = {
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
}
_UNSAFE_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]+")
_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE: Final = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)
_REMOTE_SCHEMES: Final = ("http://", "https://", "oss://")

Refresh = Callable[[TaskResult], Awaitable[TaskResult]]
"""Fetches a task again, for a fresh ``video_url`` (the client's ``fetch``)."""


# --- helpers ------------------------------------------------------------------------------


def is_local(ref: Reference) -> bool:
    """Whether a reference is a local file (a path or a ``file://`` URL) to be uploaded."""
    return not os.fspath(ref).lower().startswith(_REMOTE_SCHEMES)


def is_oss(ref: Reference) -> bool:
    """Whether a reference is an ``oss://`` URL (the create then needs the resolve header)."""
    return os.fspath(ref).lower().startswith("oss://")


def _safe_name(name: str, *, default: str, max_length: int = 120) -> str:
    """``name`` reduced to ``[A-Za-z0-9._-]``, never empty, never hidden, never ``..``."""
    cleaned = _UNSAFE_CHARS.sub("_", name).lstrip("._")[:max_length]
    return cleaned or default


def safe_join(directory: str | os.PathLike[str], name: str) -> Path:
    """``directory / name`` where ``name`` (e.g. taken from a URL or a task id) is sanitized.

    Separators, ``..``, leading dots and any character outside ``[A-Za-z0-9._-]`` are
    replaced, so the result always lies directly inside ``directory``.

    Raises:
        DownloadError: if the name still resolves outside ``directory`` (cannot happen
            after sanitizing; the check guards against future edits).
    """
    base = Path(directory)
    candidate = base / _safe_name(name, default="video")
    if candidate.parent != base or candidate.name in ("", ".", ".."):
        raise DownloadError(f"Refusing file name {name!r}: it would leave {base}.")
    return candidate


def _redact(url: str | httpx.URL) -> str:
    """A URL without its query (signed URLs carry credentials there) or fragment."""
    parts = urllib.parse.urlsplit(str(url))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _transport_error(exc: httpx.TransportError, method: str, url: str | httpx.URL) -> WanError:
    """The wanr2v error for an httpx failure, its URL stripped of any signature."""
    return translate(exc, method=method, url=_redact(url))


def _backoff(attempt: int, base: float) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): exponential, jittered."""
    if base <= 0:
        return 0.0
    delay = min(MAX_BACKOFF, base * 2.0 ** (attempt - 1))
    return float(delay * random.uniform(0.5, 1.0))


def _single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one non-cancellation error of a task group's group, if there is exactly one."""
    cancelled = anyio.get_cancelled_exc_class()
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        elif not isinstance(exc, cancelled):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None


async def _run_all(calls: Sequence[Callable[[], Coroutine[Any, Any, None]]]) -> None:
    """Run ``calls`` concurrently; a lone failure is raised as itself, not in a group."""
    try:
        async with anyio.create_task_group() as tg:
            for call in calls:
                tg.start_soon(call)
    except BaseExceptionGroup as group:
        err = _single_error(group)
        if err is None:
            raise
        raise err from err.__cause__


def _without_auth(request: httpx.Request) -> httpx.Request:
    """Drop any ``Authorization`` a shared client's defaults may have put on ``request``."""
    request.headers.pop("Authorization", None)
    return request


STALE_PART_SECONDS = 3600.0
"""A ``.part`` file of the same target untouched this long was left by a killed run."""


def _sweep_stale_parts(target: Path) -> None:
    """Remove temporary files of ``target`` left behind by a killed process."""
    now = time.time()
    for part in target.parent.glob(f".{glob.escape(target.name)}.*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
        except OSError:
            pass


def _sha256_file(path: Path, chunk_size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


# --- uploads ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class UploaderStatistics:
    """What an `Uploader` has done so far.

    Attributes:
        uploads: files sent to the upload host.
        bytes_uploaded: their total size.
        cache_hits: local references answered from the content-hash cache.
        policies_fetched: upload policies obtained.
        policy_rejections: 403 answers from the upload host (a fresh policy followed).
        uploads_in_flight: uploads running now.
    """

    uploads: int
    bytes_uploaded: int
    cache_hits: int
    policies_fetched: int
    policy_rejections: int
    uploads_in_flight: int


@attrs.frozen(kw_only=True)
class _LocalFile:
    index: int
    path: Path
    kind: str
    ext: str
    size: int
    identity: tuple[int, int, int, int]
    """(device, inode, size, mtime_ns): a changed file gets a new hash."""


@attrs.frozen(kw_only=True)
class _Cached:
    url: str
    uploaded_at: float


class _PolicyRejected(Exception):
    """The upload host answered 403 (the policy expired or was refused)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class _Retryable(Exception):
    """A 429 or 5xx answer from a host: worth another attempt."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class _FileChanged(Exception):
    """A file's size changed between the checks and the upload."""


class _FileBody:
    """A multipart body streamed from an open file: head, exactly ``size`` bytes, tail.

    ``changed`` is set (and the stream fails) if the file is not ``size`` bytes any more.
    """

    def __init__(
        self, head: bytes, fh: anyio.AsyncFile[bytes], size: int, tail: bytes, chunk_size: int
    ) -> None:
        self.head, self.fh, self.size, self.tail = head, fh, size, tail
        self.chunk_size = chunk_size
        self.changed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        remaining = self.size
        while remaining > 0:
            chunk = await self.fh.read(min(self.chunk_size, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
        if remaining or await self.fh.read(1):
            self.changed = True
            raise _FileChanged
        yield self.tail


class Uploader:
    """Uploads local references through temporary storage, once per content and model.

    Args:
        http: the shared client. Requests to the upload host are sent without
            ``Authorization``: never configure auth on this client (the API layer adds
            it per request).
        get_policy: ``model -> UploadPolicy``, a fresh policy each call (the client's
            rate-limited ``getPolicy`` call, with ``obtained_at`` from
            ``anyio.current_time()`` taken before the request).
        max_concurrency: uploads running at once across all resolves.
        cache_ttl: seconds an uploaded file is reused for the same model.
        policy_margin: seconds before expiry at which a policy counts as stale.
        chunk_size: bytes per file read.
        max_attempts: attempts per file after transport errors or 5xx answers.
        backoff: seconds before the first such retry, doubled each time.
        check_media: also check each file's content against the service's limits
            (duration, frame rate, pixels, alpha: ``_media``); the client turns it on.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        get_policy: Callable[[str], Awaitable[UploadPolicy]],
        *,
        max_concurrency: int = DEFAULT_UPLOAD_CONCURRENCY,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        policy_margin: float = DEFAULT_POLICY_MARGIN,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_attempts: int = DEFAULT_UPLOAD_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        check_media: bool = False,
    ) -> None:
        if max_concurrency < 1 or chunk_size < 1 or max_attempts < 1:
            raise ValueError("max_concurrency, chunk_size and max_attempts must be >= 1")
        self._http = http
        self._get_policy = get_policy
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._cache_ttl = cache_ttl
        self._policy_margin = policy_margin
        self._chunk_size = chunk_size
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._check_media = check_media
        self._policies: dict[str, UploadPolicy] = {}
        self._policy_locks: dict[str, anyio.Lock] = {}
        self._cache: dict[tuple[str, str, str], _Cached] = {}
        self._hash_locks: dict[tuple[str, str, str], anyio.Lock] = {}
        self._digests: dict[tuple[int, int, int, int], str] = {}
        self._uploads = 0
        self._bytes = 0
        self._hits = 0
        self._policies_fetched = 0
        self._rejections = 0

    def statistics(self) -> UploaderStatistics:
        """A snapshot of the counters."""
        return UploaderStatistics(
            uploads=self._uploads,
            bytes_uploaded=self._bytes,
            cache_hits=self._hits,
            policies_fetched=self._policies_fetched,
            policy_rejections=self._rejections,
            uploads_in_flight=int(self._limiter.borrowed_tokens),
        )

    async def resolve(self, request: VideoRequest) -> tuple[list[str], bool]:
        """The request's final reference URLs, local files uploaded.

        Every local file is checked before anything is uploaded.

        Args:
            request: the request; its local references are paths or ``file://`` URLs.

        Returns:
            ``(references, needs_oss_resolve)``: the URLs to send, in order, with each
            local file replaced by ``oss://{key}``; and whether any is ``oss://`` (the
            create must then carry ``X-DashScope-OssResourceResolve: enable``).

        Raises:
            InvalidRequestError: a file is missing, not a regular file, of an unsupported
                type, too large or unreadable, or there are too many images or videos.
            PermissionDeniedError: the upload host refused even a fresh policy.
            APIError: another refusal of the upload host, or of ``get_policy``.
            TransportError: the upload host could not be reached.
        """
        refs = [os.fspath(r) for r in request.reference_urls]
        files = [await self._inspect(i, ref) for i, ref in enumerate(refs) if is_local(ref)]
        self._check_counts(refs, files)
        if files:
            digests = await self._hash_all(files)
            model = request.model
            now = anyio.current_time()
            missing = [f for f in files if not self._cached((model, digests[f.index], f.ext), now)]
            if missing:
                policy = await self._policy(model)
                self._check_policy_size(missing, policy)
            urls: dict[int, str] = {}
            await _run_all(
                [
                    functools.partial(self._resolve_one, model, f, digests[f.index], urls)
                    for f in files
                ]
            )
            for index, url in urls.items():
                refs[index] = url
        return refs, any(is_oss(r) for r in refs)

    # -- checks --

    async def _inspect(self, index: int, ref: str) -> _LocalFile:
        field = f"input.reference_urls[{index}]"
        path = local_path(ref)

        def bad(msg: str) -> InvalidRequestError:
            return InvalidRequestError(f"{field}: local file {str(path)!r} {msg}", field=field)

        try:
            st = await anyio.Path(path).stat()
        except FileNotFoundError:
            raise bad(
                "does not exist: check the path (a relative path is read from the current "
                "directory) or give an http(s):// URL."
            ) from None
        except OSError as exc:
            raise bad(f"cannot be read ({exc.strerror or exc}).") from None
        if not stat.S_ISREG(st.st_mode):
            what = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise bad(f"is {what}: give the path of an image or a video file.")
        ext = path.suffix.lower()
        if ext in IMAGE_EXTENSIONS:
            kind, limit = "image", MAX_IMAGE_BYTES
        elif ext in VIDEO_EXTENSIONS:
            kind, limit = "video", MAX_VIDEO_BYTES
        else:
            images = ", ".join(sorted(IMAGE_EXTENSIONS))
            videos = ", ".join(sorted(VIDEO_EXTENSIONS))
            raise bad(
                f"has an unsupported type ({ext or 'no extension'}): use an image "
                f"({images}) or a video ({videos}), with a matching extension."
            )
        if st.st_size == 0:
            raise bad("is empty.")
        if st.st_size > limit:
            raise bad(
                f"is {st.st_size / MIB:.1f} MB; {kind}s may be at most {limit // MIB} MB: "
                f"compress or shorten it."
            )
        if self._check_media:
            await check_local_file(path, index=index, kind=kind)
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        return _LocalFile(
            index=index, path=path, kind=kind, ext=ext, size=st.st_size, identity=identity
        )

    @staticmethod
    def _check_counts(refs: Sequence[str], files: Sequence[_LocalFile]) -> None:
        kinds = {f.index: f.kind for f in files}
        for i, ref in enumerate(refs):
            kinds.setdefault(i, reference_kind(ref) or "")
        images = sum(k == "image" for k in kinds.values())
        videos = sum(k == "video" for k in kinds.values())
        field = "input.reference_urls"
        if images > MAX_IMAGES:
            raise InvalidRequestError(
                f"{field}: at most {MAX_IMAGES} images, got {images}: drop some.", field=field
            )
        if videos > MAX_VIDEOS:
            raise InvalidRequestError(
                f"{field}: at most {MAX_VIDEOS} videos, got {videos}: drop some.", field=field
            )

    @staticmethod
    def _check_policy_size(files: Sequence[_LocalFile], policy: UploadPolicy) -> None:
        if policy.max_file_size_mb is None:
            return
        limit = policy.max_file_size_mb * MIB
        for f in files:
            if f.size > limit:
                field = f"input.reference_urls[{f.index}]"
                raise InvalidRequestError(
                    f"{field}: local file {str(f.path)!r} is {f.size / MIB:.1f} MB; the upload "
                    f"policy allows at most {policy.max_file_size_mb:g} MB per file: compress "
                    f"it, or host it yourself and give its http(s):// URL.",
                    field=field,
                )

    async def _hash_all(self, files: Sequence[_LocalFile]) -> dict[int, str]:
        digests: dict[int, str] = {}

        async def one(f: _LocalFile) -> None:
            known = self._digests.get(f.identity)
            if known is None:
                try:
                    known = await anyio.to_thread.run_sync(_sha256_file, f.path, self._chunk_size)
                except OSError as exc:
                    field = f"input.reference_urls[{f.index}]"
                    raise InvalidRequestError(
                        f"{field}: local file {str(f.path)!r} cannot be read "
                        f"({exc.strerror or exc}): check its permissions.",
                        field=field,
                    ) from None
                self._digests[f.identity] = known
            digests[f.index] = known

        await _run_all([functools.partial(one, f) for f in files])
        return digests

    # -- cache and policy --

    def _cached(self, key: tuple[str, str, str], now: float) -> str | None:
        """The ``oss://`` URL of ``(model, sha256, extension)`` if uploaded recently enough."""
        hit = self._cache.get(key)
        if hit is None or now - hit.uploaded_at >= self._cache_ttl:
            return None
        return hit.url

    def _fresh(self, policy: UploadPolicy) -> bool:
        margin = min(self._policy_margin, 0.1 * policy.expire_in_seconds)
        return anyio.current_time() < policy.obtained_at + policy.expire_in_seconds - margin

    async def _policy(self, model: str, *, rejected: UploadPolicy | None = None) -> UploadPolicy:
        """The current policy for ``model``, fetched anew when stale or ``rejected``."""
        lock = self._policy_locks.setdefault(model, anyio.Lock())
        async with lock:
            current = self._policies.get(model)
            if current is not None and current is not rejected and self._fresh(current):
                return current
            policy = await self._get_policy(model)
            self._policies_fetched += 1
            self._policies[model] = policy
            return policy

    # -- uploads --

    async def _resolve_one(
        self, model: str, f: _LocalFile, digest: str, out: dict[int, str]
    ) -> None:
        # The extension is part of the key: the service may judge a file by its name.
        key = (model, digest, f.ext)
        lock = self._hash_locks.setdefault(key, anyio.Lock())
        async with lock:
            url = self._cached(key, anyio.current_time())
            if url is not None:
                self._hits += 1
            else:
                async with self._limiter:
                    url = await self._upload(model, f, digest)
                self._cache[key] = _Cached(url=url, uploaded_at=anyio.current_time())
        out[f.index] = url

    async def _upload(self, model: str, f: _LocalFile, digest: str) -> str:
        policy = await self._policy(model)
        refreshed = False
        attempt = 0
        async with await anyio.open_file(f.path, "rb") as fh:
            while True:
                attempt += 1
                key = self._key(policy, f, digest)
                try:
                    await self._post(policy, key, f, fh)
                except _PolicyRejected as rej:
                    self._rejections += 1
                    if refreshed:
                        raise self._host_error(rej.response) from None
                    refreshed = True
                    policy = await self._policy(model, rejected=policy)
                    attempt -= 1  # a policy refresh is not a failed attempt
                    continue
                except _FileChanged:
                    field = f"input.reference_urls[{f.index}]"
                    raise InvalidRequestError(
                        f"{field}: local file {str(f.path)!r} changed while it was being "
                        "uploaded: try again once it is written.",
                        field=field,
                    ) from None
                except (TransportError, _Retryable) as exc:
                    if attempt >= self._max_attempts:
                        if isinstance(exc, _Retryable):
                            raise self._host_error(exc.response) from None
                        raise
                    await anyio.sleep(_backoff(attempt, self._backoff))
                    continue
                self._uploads += 1
                self._bytes += f.size
                return f"oss://{key}"

    @staticmethod
    def _key(policy: UploadPolicy, f: _LocalFile, digest: str) -> str:
        name = _safe_name(f.path.name, default=f"file{f.path.suffix.lower()}")
        return f"{policy.upload_dir.strip('/')}/{digest[:16]}-{name}"

    async def _post(
        self, policy: UploadPolicy, key: str, f: _LocalFile, fh: anyio.AsyncFile[bytes]
    ) -> None:
        fields: list[tuple[str, str]] = [
            ("OSSAccessKeyId", policy.oss_access_key_id),
            ("Signature", policy.signature),
            ("policy", policy.policy),
            ("key", key),
        ]
        if policy.x_oss_object_acl is not None:
            fields.append(("x-oss-object-acl", policy.x_oss_object_acl))
        if policy.x_oss_forbid_overwrite is not None:
            fields.append(("x-oss-forbid-overwrite", policy.x_oss_forbid_overwrite))
        fields.append(("success_action_status", "200"))
        boundary = secrets.token_hex(16)
        head = bytearray()
        for name, value in fields:
            head += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            )
            head += value.encode() + b"\r\n"
        filename = key.rsplit("/", 1)[-1]
        content_type = _CONTENT_TYPES.get(f.path.suffix.lower(), "application/octet-stream")
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        await fh.seek(0)
        body = _FileBody(bytes(head), fh, f.size, tail, self._chunk_size)
        request = _without_auth(
            self._http.build_request(
                "POST",
                policy.upload_host,
                content=body,
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(len(head) + f.size + len(tail)),
                },
            )
        )
        try:
            response = await self._http.send(request, auth=None)
        except httpx.TransportError as exc:
            if body.changed:
                raise _FileChanged from None
            raise _transport_error(exc, "POST", policy.upload_host) from exc
        except httpx.HTTPError as exc:  # e.g. an answer that fails to decode
            raise UploadError(
                f"The upload host sent an unreadable answer: {type(exc).__name__}: {exc}"
            ) from exc
        if body.changed:  # an in-process transport turns the body's error into a 500
            raise _FileChanged
        status = response.status_code
        if status == 403:
            raise _PolicyRejected(response)
        # 409: an object with this key exists; the key is content-addressed, so it is this
        # file (a retry after a lost answer, or a cache lost on restart). **assumed**
        if 200 <= status < 300 or status == 409:
            return
        if status == 429 or status >= 500:
            raise _Retryable(response)
        raise self._host_error(response)

    @staticmethod
    def _host_error(response: httpx.Response) -> WanError:
        """An `APIError` from the upload host's (XML) error answer."""
        text = response.content[:4000].decode("utf-8", "replace")

        def tag(name: str) -> str | None:
            m = re.search(rf"<{name}>(.*?)</{name}>", text, re.DOTALL)
            return m.group(1).strip() if m else None

        message = tag("Message") or text.strip()[:200] or None
        return error_for(
            response.status_code,
            tag("Code"),
            f"upload host: {message or f'HTTP {response.status_code}'}",
            request_id=tag("RequestId") or response.headers.get("x-oss-request-id"),
        )


# --- downloads ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DownloaderStatistics:
    """What a `Downloader` has done so far.

    Attributes:
        downloads_in_flight: downloads holding a slot now.
        completed: files saved.
        failed: downloads that raised.
        bytes_received: body bytes received (including any received twice after a restart).
        resumes: requests continued with ``Range`` after a drop.
        restarts: downloads started over (the host ignored ``Range``, or the file changed).
        url_refreshes: fresh video URLs fetched after the host refused one.
    """

    downloads_in_flight: int
    completed: int
    failed: int
    bytes_received: int
    resumes: int
    restarts: int
    url_refreshes: int


_TRUNCATE: Final = "truncate"


@attrs.define
class _Progress:
    written: int = 0
    """Bytes handed to the writer for the current file."""
    total: int | None = None
    validator: str | None = None
    """A strong ETag (or Last-Modified) for ``If-Range``."""
    resumable: bool = True


class Downloader:
    """Saves result videos to disk: streamed, resumed, length-checked, renamed atomically.

    Args:
        http: the shared client; requests to the video host carry no ``Authorization``.
        max_concurrency: downloads running at once (shared by all calls on this object).
        max_attempts: attempts in a row that make no progress before giving up.
        backoff: seconds before the first retry, doubled each time (jittered).
        chunk_size: bytes gathered before one write to disk.
        fsync: flush the file to stable storage before the rename.
        max_bytes: cap of one video (``None``: none). A host announcing more, or
            sending more, gets `DownloadError` at once (not retried), and the
            partial file is removed: an endless body cannot fill the disk.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        max_concurrency: int = DEFAULT_DOWNLOAD_CONCURRENCY,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        fsync: bool = True,
        max_bytes: int | None = None,
    ) -> None:
        if max_concurrency < 1 or max_attempts < 1 or chunk_size < 1:
            raise ValueError("max_concurrency, max_attempts and chunk_size must be >= 1")
        self._http = http
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._chunk_size = chunk_size
        self._fsync = fsync
        self._max_bytes = max_bytes
        self._completed = 0
        self._failed = 0
        self._bytes = 0
        self._resumes = 0
        self._restarts = 0
        self._refreshes = 0

    def statistics(self) -> DownloaderStatistics:
        """A snapshot of the counters."""
        return DownloaderStatistics(
            downloads_in_flight=int(self._limiter.borrowed_tokens),
            completed=self._completed,
            failed=self._failed,
            bytes_received=self._bytes,
            resumes=self._resumes,
            restarts=self._restarts,
            url_refreshes=self._refreshes,
        )

    async def download(
        self,
        result: TaskResult,
        dest: str | os.PathLike[str],
        *,
        refresh: Refresh | None = None,
    ) -> Path:
        """Save ``result``'s video and return the path written.

        The body goes to a hidden temporary file beside the target and is renamed into
        place only when complete, so ``dest`` never holds a partial file.

        Args:
            result: a SUCCEEDED task with its ``video_url``.
            dest: a folder, where the file is named ``{task_id}.mp4`` (sanitized): an
                existing folder, a path ending in a separator, or a missing path without
                an extension (``out/run1``), created. Otherwise a file path (``a.mp4``),
                whose missing parent folders are created.
            refresh: fetches the task again when the video host refuses the URL (its
                signature expired); without it such a refusal is final.

        Returns:
            The path of the saved file.

        Raises:
            ResultExpiredError: the URL was refused and no fresh one can be had (no
                ``refresh``, or the task is gone: UNKNOWN or ``TaskNotFoundError``).
            DownloadError: the host failed or refused for good, the length did not match
                after every attempt, the task has no video, or the file could not be written.
        """
        async with self._limiter:
            try:
                path = await self._download(result, dest, refresh)
            except BaseException:
                self._failed += 1
                raise
            self._completed += 1
            return path

    async def to_file(
        self, result: TaskResult, fh: IO[bytes], *, refresh: Refresh | None = None
    ) -> int:
        """Write ``result``'s video into a binary file-like object; return the bytes written.

        Same retries as `download`; the object is neither flushed nor closed. A
        restart from byte 0 (a host ignoring ``Range``) seeks back to where it started.
        """
        async with self._limiter:
            start = fh.tell() if _seekable(fh) else 0
            sink = _Offset(fh, start)
            try:
                if not result.video_url:
                    result = await self._refreshed(result, refresh, "is missing from the result")
                try:
                    await self._transfer(result, sink, refresh)  # type: ignore[arg-type]
                except BaseExceptionGroup as group:
                    err = _single_error(group)
                    if err is None:
                        raise
                    raise err from err.__cause__
            except OSError as exc:
                self._failed += 1
                raise DownloadError(
                    f"Cannot write the video of task {result.task_id}: {exc.strerror or exc}.",
                    task_id=result.task_id,
                ) from exc
            except BaseException:
                self._failed += 1
                raise
            self._completed += 1
            return sink.written

    @asynccontextmanager
    async def stream(
        self, result: TaskResult, *, refresh: Refresh | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """``result``'s video as an async iterator of byte chunks (nothing on disk).

        Raises (while iterating):
            DownloadError: the host forced a restart after bytes were handed out.
        """
        if not result.video_url:
            result = await self._refreshed(result, refresh, "is missing from the result")
        send, receive = anyio.create_memory_object_stream[list[bytes] | str](max_buffer_size=2)
        task_id = result.task_id

        async def produce() -> None:
            async with send:
                await self._fetch(result, send, refresh)

        async def chunks() -> AsyncIterator[bytes]:
            given = 0
            async with receive:
                async for item in receive:
                    if isinstance(item, str):
                        if given:
                            raise DownloadError(
                                f"The video host restarted the video of task {task_id} after "
                                f"{given} bytes were streamed; download it again.",
                                task_id=task_id,
                            )
                        continue
                    for chunk in item:
                        given += len(chunk)
                        yield chunk

        async with self._limiter, anyio.create_task_group() as tg:
            tg.start_soon(produce)
            try:
                yield chunks()
            finally:
                tg.cancel_scope.cancel()

    async def _download(
        self, result: TaskResult, dest: str | os.PathLike[str], refresh: Refresh | None
    ) -> Path:
        if not result.video_url:
            if result.status is TaskStatus.UNKNOWN:
                raise ResultExpiredError(
                    f"Task {result.task_id} is UNKNOWN to the service (never existed here, or "
                    "expired after 24 h): its video can no longer be downloaded.",
                    task_id=result.task_id,
                )
            if result.status is not TaskStatus.SUCCEEDED:
                raise DownloadError(
                    f"Task {result.task_id} is {result.status.value}: it has no video to "
                    "download (wait for it to succeed first).",
                    task_id=result.task_id,
                )
            result = await self._refreshed(result, refresh, "is missing from the result")
        target = await self._target(result, dest)
        await anyio.to_thread.run_sync(_sweep_stale_parts, target)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
        try:
            fh = await anyio.to_thread.run_sync(_open_exclusive, tmp)
        except OSError as exc:
            raise DownloadError(
                f"Cannot write in {target.parent}: {exc.strerror or exc}.", task_id=result.task_id
            ) from exc
        try:
            try:
                try:
                    await self._transfer(result, fh, refresh)
                except BaseExceptionGroup as group:
                    err = collapse_group(group)  # the first meaningful error, never a group
                    if err is group:
                        raise
                    raise err from err.__cause__
                await anyio.to_thread.run_sync(_finish, fh, self._fsync)
                await anyio.to_thread.run_sync(os.replace, tmp, target)
            except OSError as exc:
                if isinstance(exc, WanError):  # RequestTimeoutError is an OSError too
                    raise
                raise DownloadError(
                    f"Cannot save the video of task {result.task_id} to {target}: "
                    f"{exc.strerror or exc}.",
                    task_id=result.task_id,
                ) from exc
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_discard, fh, tmp)
            raise
        return target

    async def _target(self, result: TaskResult, dest: str | os.PathLike[str]) -> Path:
        text = os.fspath(dest)
        path = Path(text)
        # A missing path without an extension is a folder to create: callers often pass
        # Path("videos/"), which has lost its trailing separator. ``exists`` is asked
        # first: a concurrent download may create the folder between two checks, and a
        # folder seen to exist stays one (is_dir, then exists, would take it for a file).
        exists = await anyio.Path(path).exists()
        as_dir = (
            text.endswith(("/", os.sep))
            or (not exists and not path.suffix)
            or (exists and await anyio.Path(path).is_dir())
        )
        try:
            if as_dir:
                await anyio.Path(path).mkdir(parents=True, exist_ok=True)
                # Only the extension may come from the URL, and only a known video one.
                url_path = urllib.parse.urlsplit(result.video_url or "").path
                suffix = Path(url_path).suffix.lower()
                name = f"{result.task_id}{suffix if suffix in VIDEO_EXTENSIONS else '.mp4'}"
                return safe_join(path, name)
            await anyio.Path(path.parent).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(
                f"Cannot create the folder for {path}: {exc.strerror or exc}.",
                task_id=result.task_id,
            ) from exc
        return path

    async def _refreshed(self, result: TaskResult, refresh: Refresh | None, why: str) -> TaskResult:
        tid = result.task_id
        if refresh is None:
            raise ResultExpiredError(
                f"The video URL of task {tid} {why}, and there is no way to fetch the task "
                "again: download results within 24 h, and pass the task (not a stored URL) "
                "so a fresh URL can be fetched.",
                task_id=tid,
            )
        gone = (
            f"The video URL of task {tid} {why}, and the task itself is gone (the service "
            "keeps tasks and results 24 h): the video can no longer be downloaded."
        )
        try:
            fresh = await refresh(result)
        except TaskNotFoundError as exc:
            raise ResultExpiredError(gone, task_id=tid) from exc
        if fresh.status is TaskStatus.UNKNOWN or not fresh.video_url:
            raise ResultExpiredError(gone, task_id=tid)
        self._refreshes += 1
        return fresh

    async def _transfer(self, result: TaskResult, fh: IO[bytes], refresh: Refresh | None) -> None:
        """Fetch the body into ``fh``; a writer task overlaps disk writes with the network."""
        send, receive = anyio.create_memory_object_stream[list[bytes] | str](max_buffer_size=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_writer, fh, receive)
            async with send:
                await self._fetch(result, send, refresh)

    async def _fetch(
        self,
        result: TaskResult,
        sink: anyio.abc.ObjectSendStream[list[bytes] | str],
        refresh: Refresh | None,
    ) -> None:
        state = _Progress()
        url = result.video_url or ""
        refreshes = 0
        stalled = 0
        attempts = 0
        last: BaseException | None = None
        while True:
            attempts += 1
            before = state.written
            headers = {"Accept-Encoding": "identity"}
            if state.written and state.resumable:
                headers["Range"] = f"bytes={state.written}-"
                if state.validator:
                    headers["If-Range"] = state.validator
                self._resumes += 1
            request = _without_auth(self._http.build_request("GET", url, headers=headers))
            try:
                outcome = await self._attempt(request, state, sink)
            except httpx.TransportError as exc:
                last = _transport_error(exc, "GET", url)
                last.__cause__ = exc
                outcome = "retry"
            except httpx.HTTPError as exc:  # e.g. a body that fails to decode
                raise DownloadError(
                    f"The video host sent an unreadable answer for {_redact(url)}: "
                    f"{type(exc).__name__}: {exc}",
                    task_id=result.task_id,
                ) from exc
            except _Retryable as exc:
                last = DownloadError(
                    f"The video host answered HTTP {exc.response.status_code} for {_redact(url)}.",
                    task_id=result.task_id,
                )
                outcome = "retry"
            if outcome == "done":
                return
            if outcome == "expired":
                refreshes += 1
                if refreshes > MAX_URL_REFRESHES:
                    raise ResultExpiredError(
                        f"The video host kept refusing the URL of task {result.task_id} after "
                        f"{MAX_URL_REFRESHES} fresh URLs.",
                        task_id=result.task_id,
                    )
                result = await self._refreshed(
                    result, refresh, "was refused by the video host (a signed URL expires)"
                )
                url = result.video_url or ""
                continue
            if outcome == "restart":
                continue
            # "retry": a drop, a short body, 429 or 5xx.
            stalled = 1 if state.written > before else stalled + 1
            if stalled >= self._max_attempts or attempts >= 20 * self._max_attempts:
                raise DownloadError(
                    f"Could not download the video of task {result.task_id} from "
                    f"{_redact(url)} after {attempts} attempts: {last}",
                    task_id=result.task_id,
                ) from last
            await anyio.sleep(_backoff(stalled, self._backoff))

    async def _attempt(
        self,
        request: httpx.Request,
        state: _Progress,
        sink: anyio.abc.ObjectSendStream[list[bytes] | str],
    ) -> str:
        """One GET; returns ``"done"``, ``"retry"``, ``"restart"`` or ``"expired"``."""
        response = await self._http.send(request, auth=None, stream=True)
        try:
            status = response.status_code
            if status in (401, 403, 404, 410):
                return "expired"
            if status == 429 or status >= 500:
                raise _Retryable(response)
            asked = "Range" in request.headers
            if status == 416 and asked:
                m = _UNSATISFIED_RANGE.match(response.headers.get("Content-Range", ""))
                if m and state.total == int(m.group(1)) == state.written:
                    return "done"
                await self._restart(state, sink)
                return "restart"
            if status == 206 and asked:
                m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
                if (
                    m is None
                    or int(m.group(1)) != state.written
                    or (m.group(3) != "*" and state.total not in (None, int(m.group(3))))
                ):
                    await self._restart(state, sink)
                    state.resumable = False
                    return "restart"
                if m.group(3) != "*":
                    state.total = int(m.group(3))
            elif status == 200:
                if state.written:
                    await self._restart(state, sink)  # the host ignored Range: start over
                state.total = _content_length(response)
                self._check_size(state.total, request.url)
                etag = response.headers.get("ETag")
                if etag and not etag.startswith("W/"):
                    state.validator = etag
                else:
                    state.validator = response.headers.get("Last-Modified")
                state.resumable = True
            else:
                raise DownloadError(
                    f"The video host answered HTTP {status} for {_redact(request.url)}."
                )
            encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
            decoded = encoding not in ("", "identity")
            if decoded:
                # Offsets and Content-Length count encoded bytes: no resume, no length check.
                state.resumable = False
                state.total = None
            return await self._pump(response, state, sink, decoded)
        finally:
            await response.aclose()

    async def _pump(
        self,
        response: httpx.Response,
        state: _Progress,
        sink: anyio.abc.ObjectSendStream[list[bytes] | str],
        decoded: bool,
    ) -> str:
        batch: list[bytes] = []
        size = 0
        chunks = response.aiter_bytes() if decoded else response.aiter_raw()
        try:
            async for chunk in chunks:
                self._check_size(state.written + size + len(chunk), response.url)
                if state.total is not None and state.written + size + len(chunk) > state.total:
                    raise DownloadError(
                        f"The video host sent more than the {state.total} bytes it announced "
                        f"for {_redact(response.url)}."
                    )
                batch.append(chunk)
                size += len(chunk)
                self._bytes += len(chunk)
                if size >= self._chunk_size:
                    await sink.send(batch)
                    state.written += size
                    batch, size = [], 0
        except httpx.TransportError:
            if batch and state.resumable:
                await sink.send(batch)
                state.written += size
            elif not state.resumable:
                await self._restart(state, sink, count=False)
            raise
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]  # an async generator
        if batch:
            await sink.send(batch)
            state.written += size
        if state.total is not None and state.written < state.total:
            if not state.resumable:
                await self._restart(state, sink, count=False)
            return "retry"
        return "done"

    def _check_size(self, size: int | None, url: httpx.URL) -> None:
        if self._max_bytes is not None and size is not None and size > self._max_bytes:
            raise DownloadError(
                f"The video at {_redact(url)} is larger than max_video_bytes="
                f"{self._max_bytes}; the download was stopped and its partial file removed."
            )

    async def _restart(
        self,
        state: _Progress,
        sink: anyio.abc.ObjectSendStream[list[bytes] | str],
        *,
        count: bool = True,
    ) -> None:
        """Empty the file and forget the progress: the next request starts at byte 0."""
        await sink.send(_TRUNCATE)
        state.written = 0
        state.total = None
        state.validator = None
        if count:
            self._restarts += 1


def _seekable(fh: IO[bytes]) -> bool:
    try:
        return bool(fh.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class _Offset:
    """A caller's file-like object seen by the writer: a restart goes back to its start."""

    def __init__(self, fh: IO[bytes], start: int) -> None:
        self._fh = fh
        self._start = start
        self.written = 0

    def write(self, data: bytes) -> int:
        self._fh.write(data)
        self.written += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        if not _seekable(self._fh):
            raise OSError("the download had to restart, and the file object is not seekable")
        self.written = 0
        return self._fh.seek(self._start + offset, whence)

    def truncate(self, size: int | None = None) -> int:
        return self._fh.truncate()


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _open_exclusive(path: Path) -> IO[bytes]:
    return path.open("xb")


def _write_batch(fh: IO[bytes], batch: list[bytes]) -> None:
    for chunk in batch:
        fh.write(chunk)


def _truncate(fh: IO[bytes]) -> None:
    fh.seek(0)
    fh.truncate()


def _finish(fh: IO[bytes], fsync: bool) -> None:
    fh.flush()
    if fsync:
        os.fsync(fh.fileno())
    fh.close()


def _discard(fh: IO[bytes], path: Path) -> None:
    try:
        fh.close()
    finally:
        path.unlink(missing_ok=True)


async def _writer(fh: IO[bytes], receive: anyio.abc.ObjectReceiveStream[list[bytes] | str]) -> None:
    """Write batches in a worker thread while the next ones arrive from the network."""
    async with receive:
        async for item in receive:
            if isinstance(item, str):
                await anyio.to_thread.run_sync(_truncate, fh)
            else:
                await anyio.to_thread.run_sync(_write_batch, fh, item)


# --- which local files may be uploaded (web backends) ---------------------------------------

LocalFiles = bool | tuple[Path, ...]
"""``True``: any local path may be uploaded; ``False``: none; folders: files inside them."""


def local_files_policy(value: bool | Sequence[str | os.PathLike[str]]) -> LocalFiles:
    """Normalise the client's ``local_files`` option (folders made absolute).

    Raises:
        ConfigurationError: not a bool or a list of folders.
    """
    from ._exceptions import ConfigurationError

    if isinstance(value, bool):
        return value
    if isinstance(value, (str, os.PathLike)) or not isinstance(value, Sequence):
        raise ConfigurationError(
            "local_files must be True, False or a list of folders (got "
            f"{type(value).__name__}); e.g. local_files=['/srv/media']."
        )
    roots = tuple(Path(os.path.abspath(os.fspath(v))) for v in value)
    return roots or False


async def check_local_files(request: VideoRequest, policy: LocalFiles) -> None:
    """Refuse local references the client may not upload, before anything is sent.

    With folders, a file must resolve (symbolic links followed) inside one of them.

    Raises:
        InvalidRequestError: a local path where ``local_files=False``, or outside the
            allowed folders (``field`` names the reference).
    """
    if policy is True:
        return
    refs = [os.fspath(r) for r in request.reference_urls]
    for i in request.local_references:
        field = f"input.reference_urls[{i}]"
        if policy is False:
            raise InvalidRequestError(
                f"{field}: {refs[i]!r} is a local path, and this client does not upload "
                "local files (local_files=False); pass an https:// URL.",
                field=field,
            )
        real = Path(await anyio.to_thread.run_sync(os.path.realpath, local_path(refs[i])))
        roots = [Path(await anyio.to_thread.run_sync(os.path.realpath, r)) for r in policy]
        if not any(real == root or root in real.parents for root in roots):
            raise InvalidRequestError(
                f"{field}: {refs[i]!r} is outside the folders this client may upload from "
                f"(local_files={[str(r) for r in policy]}).",
                field=field,
            )
