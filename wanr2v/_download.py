"""Result downloads: streamed to disk, resumed, length-checked, renamed atomically.

``video_url`` is streamed to a hidden temporary file (``.{name}.{random}.part``) beside
the target and renamed into place only when complete, so the target never holds a
partial file; ``.part`` files left by a killed process are swept after an hour (the disk
side lives in ``_partfile``). The
length is checked against ``Content-Length``; a dropped connection resumes with
``Range`` (and ``If-Range``); a host that ignores it restarts the file from byte 0; a
URL the video host refuses (its signature expired) is refreshed by fetching the task
again. ``max_bytes`` caps one video: a host announcing or sending more is stopped at once.

Retries: a broken exchange, a short body, a 429 or a 500 / 502 / 503 / 504 answer is
retried by the client's `RetryPolicy` (``_retry``): ``max_retries`` counts the attempts
in a row that receive no bytes (one that makes progress resets it), ``Retry-After`` is
honoured, and there are never more than ``20 x (max_retries + 1)`` requests in all.

The API key is never sent: requests go through `PlainHTTP` (``_hosts``). Nothing blocks
the event loop: file writes run in worker threads (anyio) while the next chunks arrive,
and memory stays bounded by a few chunks whatever the file size.
"""

from __future__ import annotations

import copy
import os
import re
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Final

import anyio
import anyio.abc
import attrs
import httpx

from ._exceptions import (
    DownloadError,
    ResultExpiredError,
    TaskNotFoundError,
    WanError,
    collapse_group,
    collapsing_groups,
)
from ._hosts import (
    DEFAULT_CHUNK_SIZE,
    HostRetryable,
    PlainHTTP,
    redact,
    safe_join,
    single_error,
    transport_error,
)
from ._models import VIDEO_EXTENSIONS, TaskResult, TaskStatus
from ._partfile import (
    TRUNCATE,
    Offset,
    discard,
    finish,
    open_exclusive,
    part_path,
    seekable,
    sweep_stale_parts,
    writer,
)
from ._retry import RetryPolicy, retryable_status

__all__ = ["Downloader", "DownloaderStatistics", "Refresh"]

DEFAULT_DOWNLOAD_CONCURRENCY: Final = 4
MAX_URL_REFRESHES: Final = 3
"""Fresh video URLs fetched for one download before giving up."""
_CONTENT_RANGE: Final = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE: Final = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)

Refresh = Callable[[TaskResult], Awaitable[TaskResult]]
"""Fetches a task again, for a fresh ``video_url`` (the client's ``fetch``)."""


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


@attrs.define
class _Counts:
    """The counters, shared by a `Downloader` and its `with_retry_policy` views."""

    completed: int = 0
    failed: int = 0
    bytes: int = 0
    resumes: int = 0
    restarts: int = 0
    refreshes: int = 0


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
        retry_policy: ``max_retries`` counts the retries in a row that receive no bytes
            (default ``RetryPolicy()``; the client passes its own).
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
        retry_policy: RetryPolicy | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        fsync: bool = True,
        max_bytes: int | None = None,
    ) -> None:
        if max_concurrency < 1 or chunk_size < 1:
            raise ValueError("max_concurrency and chunk_size must be >= 1")
        self._host = PlainHTTP(http)
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._retry = retry_policy or RetryPolicy()
        self._chunk_size = chunk_size
        self._fsync = fsync
        self._max_bytes = max_bytes
        self._counts = _Counts()

    @property
    def retry_policy(self) -> RetryPolicy:
        """The policy this downloader retries by."""
        return self._retry

    def with_retry_policy(self, policy: RetryPolicy) -> Downloader:
        """This downloader retrying by ``policy``: the same slots and counters (``self``
        when ``policy`` is already its own)."""
        if policy == self._retry:
            return self
        other = copy.copy(self)
        other._retry = policy
        return other

    def statistics(self) -> DownloaderStatistics:
        """A snapshot of the counters."""
        n = self._counts
        return DownloaderStatistics(
            downloads_in_flight=int(self._limiter.borrowed_tokens),
            completed=n.completed,
            failed=n.failed,
            bytes_received=n.bytes,
            resumes=n.resumes,
            restarts=n.restarts,
            url_refreshes=n.refreshes,
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
                self._counts.failed += 1
                raise
            self._counts.completed += 1
            return path

    async def to_file(
        self, result: TaskResult, fh: IO[bytes], *, refresh: Refresh | None = None
    ) -> int:
        """Write ``result``'s video into a binary file-like object; return the bytes written.

        Same retries as `download`; the object is neither flushed nor closed. A
        restart from byte 0 (a host ignoring ``Range``) seeks back to where it started.
        """
        async with self._limiter:
            start = fh.tell() if seekable(fh) else 0
            sink = Offset(fh, start)
            try:
                if not result.video_url:
                    result = await self._refreshed(result, refresh, "is missing from the result")
                try:
                    await self._transfer(result, sink, refresh)  # type: ignore[arg-type]
                except BaseExceptionGroup as group:
                    err = single_error(group)
                    if err is None:
                        raise
                    raise err from err.__cause__
            except OSError as exc:
                self._counts.failed += 1
                raise DownloadError(
                    f"Cannot write the video of task {result.task_id}: {exc.strerror or exc}.",
                    task_id=result.task_id,
                ) from exc
            except BaseException:
                self._counts.failed += 1
                raise
            self._counts.completed += 1
            return sink.written

    @asynccontextmanager
    async def stream(
        self, result: TaskResult, *, refresh: Refresh | None = None
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """``result``'s video as an async iterator of byte chunks (nothing on disk).

        Raises:
            DownloadError: while iterating, the host forced a restart after bytes were
                handed out; or, as the ``async with`` block ends (its iteration cancelled),
                the host failed or refused for good, after the retries.
            ResultExpiredError: as for `download`.
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

        # A failed fetch is raised as itself, never inside an ExceptionGroup.
        with collapsing_groups():
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
        await anyio.to_thread.run_sync(sweep_stale_parts, target)
        tmp = part_path(target)
        try:
            fh = await anyio.to_thread.run_sync(open_exclusive, tmp)
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
                await anyio.to_thread.run_sync(finish, fh, self._fsync)
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
                await anyio.to_thread.run_sync(discard, fh, tmp)
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
        self._counts.refreshes += 1
        return fresh

    async def _transfer(self, result: TaskResult, fh: IO[bytes], refresh: Refresh | None) -> None:
        """Fetch the body into ``fh``; a writer task overlaps disk writes with the network."""
        send, receive = anyio.create_memory_object_stream[list[bytes] | str](max_buffer_size=2)
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer, fh, receive)
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
            retry_after: float | None = None
            before = state.written
            headers = {"Accept-Encoding": "identity"}
            if state.written and state.resumable:
                headers["Range"] = f"bytes={state.written}-"
                if state.validator:
                    headers["If-Range"] = state.validator
                self._counts.resumes += 1
            request = self._host.build("GET", url, headers=headers)
            try:
                outcome = await self._attempt(request, state, sink)
            except httpx.TransportError as exc:
                last = transport_error(exc, "GET", url)
                last.__cause__ = exc
                outcome = "retry"
            except httpx.HTTPError as exc:  # e.g. a body that fails to decode
                raise DownloadError(
                    f"The video host sent an unreadable answer for {redact(url)}: "
                    f"{type(exc).__name__}: {exc}",
                    task_id=result.task_id,
                ) from exc
            except HostRetryable as exc:  # 429, 500, 502, 503, 504
                last = DownloadError(
                    f"The video host answered HTTP {exc.response.status_code} for {redact(url)}.",
                    task_id=result.task_id,
                )
                retry_after = exc.retry_after
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
            # "retry": a drop, a short body, a retryable status. ``stalled``: attempts in
            # a row that received nothing (one that made progress uses no retry up).
            stalled = 1 if state.written > before else stalled + 1
            tries = self._retry.max_retries + 1
            if stalled >= tries or attempts >= 20 * tries:
                raise DownloadError(
                    f"Could not download the video of task {result.task_id} from "
                    f"{redact(url)} after {attempts} attempts: {last}",
                    task_id=result.task_id,
                ) from last
            await anyio.sleep(self._retry.backoff(stalled - 1, retry_after))

    async def _attempt(
        self,
        request: httpx.Request,
        state: _Progress,
        sink: anyio.abc.ObjectSendStream[list[bytes] | str],
    ) -> str:
        """One GET; returns ``"done"``, ``"retry"``, ``"restart"`` or ``"expired"``."""
        response = await self._host.send(request, stream=True)
        try:
            status = response.status_code
            if status in (401, 403, 404, 410):
                return "expired"
            if retryable_status(status):
                raise HostRetryable(response)
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
                    f"The video host answered HTTP {status} for {redact(request.url)}."
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
                        f"for {redact(response.url)}."
                    )
                batch.append(chunk)
                size += len(chunk)
                self._counts.bytes += len(chunk)
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
                f"The video at {redact(url)} is larger than max_video_bytes="
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
        await sink.send(TRUNCATE)
        state.written = 0
        state.total = None
        state.validator = None
        if count:
            self._counts.restarts += 1


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
