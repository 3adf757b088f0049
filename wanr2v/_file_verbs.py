"""The file verbs of `AsyncWanClient`: ``upload``, ``download``, ``stream_video``.

A mixin: the uploads and downloads themselves are ``wanr2v._upload`` and ``wanr2v._download``'s (streamed,
resumed with ``Range``, atomic renames, an expired URL refreshed by fetching the task
again); what it uses of the client is declared below.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, overload

import anyio

from . import _config
from ._exceptions import InvalidRequestError
from ._helpers import TaskLike, raise_for_status
from ._models import ModelName, TaskResult, VideoRequest
from ._wire import UploadPolicy, parse_policy

if TYPE_CHECKING:
    import httpx

    from ._download import Downloader
    from ._routing import Router
    from ._upload import Uploader

__all__ = ["DEFAULT_MAX_VIDEO_BYTES", "FileVerbs"]

DEFAULT_MAX_VIDEO_BYTES = 1024**3
"""Cap of one downloaded video: 1 GiB (a 15 s 1080p result is a few tens of MB)."""


class FileVerbs:
    """Upload references, download and stream videos (mixed into `AsyncWanClient`)."""

    _routing: Router

    if TYPE_CHECKING:
        _http: httpx.AsyncClient

        def _get_uploader(self, base_url: str | None = None) -> Uploader: ...

        def _get_downloader(self) -> Downloader: ...

        async def fetch(self, task: TaskLike) -> TaskResult: ...

        async def _fetch(
            self,
            task_id: str,
            base_url: str | None,
            *,
            priority: float,
            max_retries: int | None = None,
        ) -> TaskResult: ...

    async def _get_upload_policy(self, model: str, *, base_url: str | None = None) -> UploadPolicy:
        """A temporary-upload policy for ``model`` (``GET /uploads?action=getPolicy``)."""
        asked_at = anyio.current_time()  # its life counts from before the request
        _, data = await self._routing.session_for(base_url).request(
            "policy", "GET", _config.PATH_UPLOADS, params={"action": "getPolicy", "model": model}
        )
        return parse_policy(data, obtained_at=asked_at)

    async def upload(
        self, path: str | os.PathLike[str], *, model: ModelName | str, region: str | None = None
    ) -> str:
        """Upload a local file to the vendor's temporary storage; return its ``oss://`` URL.

        The URL can be passed as a reference to any request for the same ``model`` in the
        same region for 48 hours (the storage's life); the same content is uploaded once
        per client. Requests that carry such a URL get the
        ``X-DashScope-OssResourceResolve`` header for you.

        Raises:
            InvalidRequestError: the file is missing, unreadable, too large or not a
                picture or video the service takes.
            APIError, TransportError: the policy or upload host refused or was unreachable.
        """
        ref = os.fspath(path)
        if ref.startswith(("http://", "https://", "oss://")):
            raise InvalidRequestError(f"upload: {ref!r} is already a URL; pass a local file.")
        request = VideoRequest(model=model, prompt="upload", reference_urls=[ref])
        routing = self._routing
        session = routing.default if region is None else routing.for_region(region)
        refs, _ = await self._get_uploader(session.base_url).resolve(request)
        return refs[0]

    @overload
    async def download(self, task: TaskLike, dest: str | os.PathLike[str] = ".") -> Path: ...

    @overload
    async def download(self, task: TaskLike, dest: BinaryIO) -> int: ...

    async def download(
        self, task: TaskLike, dest: str | os.PathLike[str] | BinaryIO = "."
    ) -> Path | int:
        """Save a succeeded task's video to ``dest``.

        ``dest`` is a folder (the file is ``{task_id}.mp4``), a file name (a path with
        an extension, such as ``my-video.mp4``), or a binary file-like object (anything
        with ``write``: an open file, ``io.BytesIO``), which gets the bytes from its
        current position and is neither flushed nor closed; then the number of bytes
        written is returned.

        To a path: a temporary file, then an atomic rename; a dropped connection
        resumes with ``Range``; an expired URL is refreshed by fetching the task again.
        To a file-like object: the same retries; the rare restart from byte 0 (a host
        that ignores ``Range``) needs a seekable object.

        Raises:
            ResultExpiredError: the URL expired and the task id is gone too.
            DownloadError: the video could not be saved.
        """
        self._routing.check_open()
        result = await self._downloadable(task)
        if not isinstance(dest, (str, os.PathLike)):
            if not hasattr(dest, "write"):
                raise TypeError(
                    f"download: dest must be a path or a binary file object, got "
                    f"{type(dest).__name__}."
                )
            return await self._get_downloader().to_file(result, dest, refresh=self._refresh)
        path: Path = await self._get_downloader().download(
            result, Path(dest), refresh=self._refresh
        )
        return path

    def stream_video(self, task: TaskLike) -> AbstractAsyncContextManager[AsyncIterator[bytes]]:
        """The video's bytes as they arrive, without touching the disk::

            async with client.stream_video(result) as chunks:
                async for chunk in chunks:
                    sink.write(chunk)

        A dropped connection resumes with ``Range`` and an expired URL is refreshed, as
        for `download`; a host that forces a restart after bytes were handed out
        raises `DownloadError` (they cannot be taken back).
        """
        return self._stream_video(task)

    @asynccontextmanager
    async def _stream_video(self, task: TaskLike) -> AsyncIterator[AsyncIterator[bytes]]:
        self._routing.check_open()
        result = await self._downloadable(task)
        async with self._get_downloader().stream(result, refresh=self._refresh) as chunks:
            yield chunks

    async def _downloadable(self, task: TaskLike) -> TaskResult:
        if isinstance(task, TaskResult) and task.video_url:
            return task
        result = await self.fetch(task)
        raise_for_status(result)
        return result

    async def _refresh(self, old: TaskResult) -> TaskResult:
        return await self._fetch(old.task_id, old.base_url, priority=-math.inf)
