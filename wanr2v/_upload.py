"""Local references, uploaded through temporary storage (the OSS upload host).

Uploads (protocol.md, "Local files: temporary upload"): a reference given as a path or a
``file://`` URL is checked, hashed, sent as a streamed multipart POST to the policy's
``upload_host`` and replaced by ``oss://{key}``. The key holds a prefix of the file's
sha256, so two files of the same name never collide and a repeated upload of the same
bytes is harmless. One policy serves several files until shortly before it expires; a
403 from the upload host fetches a fresh one and tries once more. A per-model cache of
content hashes means a file is uploaded once per batch (within the 48 h life of the
stored object), and concurrent resolves of the same file upload it once.

Retries: a broken exchange, a 429 or a 500 / 502 / 503 / 504 answer is retried by the
client's `RetryPolicy` (``_retry``: up to ``max_retries`` more posts, honouring
``Retry-After``); the content-addressed key makes a repeated post harmless.

The API key is never sent: requests go through `PlainHTTP` (``_hosts``). Nothing blocks
the event loop: file I/O and hashing run in worker threads (anyio), and memory stays
bounded by a few chunks whatever the file size.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import os
import re
import secrets
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

import anyio
import attrs
import httpx

from ._exceptions import InvalidRequestError, TransportError, UploadError, WanError, error_for
from ._hosts import (
    DEFAULT_CHUNK_SIZE,
    MIB,
    HostRetryable,
    PlainHTTP,
    is_local,
    is_oss,
    run_all,
    safe_name,
    transport_error,
)
from ._media import check_local_file
from ._models import (
    IMAGE_EXTENSIONS,
    MAX_IMAGES,
    MAX_VIDEOS,
    VIDEO_EXTENSIONS,
    VideoRequest,
    local_path,
    reference_kind,
)
from ._retry import RetryPolicy, retryable_error, retryable_status
from ._wire import UploadPolicy

__all__ = ["Uploader", "UploaderStatistics"]

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
_CONTENT_TYPES: Final = {
    ".jpeg": "image/jpeg",
    ".jpg": "image/jpeg",
    ".png": "image/png",
    ".bmp": "image/bmp",
    ".webp": "image/webp",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
}


def _sha256_file(path: Path, chunk_size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


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


@attrs.define
class _Counts:
    """The counters, shared by an `Uploader` and its `with_retry_policy` views."""

    uploads: int = 0
    bytes: int = 0
    hits: int = 0
    policies_fetched: int = 0
    rejections: int = 0


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
        retry_policy: retries of one file's post after a broken exchange, a 429 or a
            500 / 502 / 503 / 504 (default ``RetryPolicy()``; the client passes its own).
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
        retry_policy: RetryPolicy | None = None,
        check_media: bool = False,
    ) -> None:
        if max_concurrency < 1 or chunk_size < 1:
            raise ValueError("max_concurrency and chunk_size must be >= 1")
        self._host = PlainHTTP(http)
        self._get_policy = get_policy
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._cache_ttl = cache_ttl
        self._policy_margin = policy_margin
        self._chunk_size = chunk_size
        self._retry = retry_policy or RetryPolicy()
        self._check_media = check_media
        self._policies: dict[str, UploadPolicy] = {}
        self._policy_locks: dict[str, anyio.Lock] = {}
        self._cache: dict[tuple[str, str, str], _Cached] = {}
        self._hash_locks: dict[tuple[str, str, str], anyio.Lock] = {}
        self._digests: dict[tuple[int, int, int, int], str] = {}
        self._counts = _Counts()

    @property
    def retry_policy(self) -> RetryPolicy:
        """The policy this uploader retries by."""
        return self._retry

    def with_retry_policy(self, policy: RetryPolicy) -> Uploader:
        """This uploader retrying by ``policy``: the same cache, slots and counters
        (``self`` when ``policy`` is already its own)."""
        if policy == self._retry:
            return self
        other = copy.copy(self)
        other._retry = policy
        return other

    def statistics(self) -> UploaderStatistics:
        """A snapshot of the counters."""
        n = self._counts
        return UploaderStatistics(
            uploads=n.uploads,
            bytes_uploaded=n.bytes,
            cache_hits=n.hits,
            policies_fetched=n.policies_fetched,
            policy_rejections=n.rejections,
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
            await run_all(
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

        await run_all([functools.partial(one, f) for f in files])
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
            self._counts.policies_fetched += 1
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
                self._counts.hits += 1
            else:
                async with self._limiter:
                    url = await self._upload(model, f, digest)
                self._cache[key] = _Cached(url=url, uploaded_at=anyio.current_time())
        out[f.index] = url

    async def _upload(self, model: str, f: _LocalFile, digest: str) -> str:
        policy = await self._policy(model)
        refreshed = False
        retries = 0
        async with await anyio.open_file(f.path, "rb") as fh:
            while True:
                key = self._key(policy, f, digest)
                try:
                    await self._post(policy, key, f, fh)
                except _PolicyRejected as rej:
                    self._counts.rejections += 1
                    if refreshed:
                        raise self._host_error(rej.response) from None
                    refreshed = True
                    policy = await self._policy(model, rejected=policy)
                    continue  # a policy refresh is not a retry
                except _FileChanged:
                    field = f"input.reference_urls[{f.index}]"
                    raise InvalidRequestError(
                        f"{field}: local file {str(f.path)!r} changed while it was being "
                        "uploaded: try again once it is written.",
                        field=field,
                    ) from None
                except HostRetryable as exc:  # 429, 500, 502, 503, 504
                    if retries >= self._retry.max_retries:
                        raise self._host_error(exc.response) from None
                    await anyio.sleep(self._retry.backoff(retries, exc.retry_after))
                    retries += 1
                    continue
                except TransportError as exc:
                    if retries >= self._retry.max_retries or not retryable_error(exc):
                        raise
                    await anyio.sleep(self._retry.backoff(retries, None))
                    retries += 1
                    continue
                self._counts.uploads += 1
                self._counts.bytes += f.size
                return f"oss://{key}"

    @staticmethod
    def _key(policy: UploadPolicy, f: _LocalFile, digest: str) -> str:
        name = safe_name(f.path.name, default=f"file{f.path.suffix.lower()}")
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
        request = self._host.build(
            "POST",
            policy.upload_host,
            content=body,
            headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + f.size + len(tail)),
            },
        )
        try:
            response = await self._host.send(request)
        except httpx.TransportError as exc:
            if body.changed:
                raise _FileChanged from None
            raise transport_error(exc, "POST", policy.upload_host) from exc
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
        if retryable_status(status):
            raise HostRetryable(response)
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
