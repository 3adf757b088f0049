"""The hosts that take no API key: what uploads (``_upload``) and downloads (``_download``) share.

Requests to the temporary-storage host (OSS) and to the result video host (a CDN) go
through `PlainHTTP`: the shared httpx client, but every request built without
``Authorization`` (whatever the client's default headers hold) and sent with
``auth=None``, so the API key never reaches those hosts. Errors name such a host's URL
without its query (`redact`): a signed URL carries its credentials there.

Also here: which references are local files (`is_local`, `is_oss`), file names made safe
for a folder (`safe_join`), and which local files a client may upload at all
(`local_files_policy`, `check_local_files`: a web backend refuses paths before anything
is sent). Nothing here blocks the event loop: ``realpath`` runs in a worker thread.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Final

import anyio
import httpx

from ._exceptions import ConfigurationError, DownloadError, InvalidRequestError, TransportError
from ._http import translate
from ._models import Reference, VideoRequest, local_path
from ._retry import parse_retry_after

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MIB",
    "HostRetryable",
    "LocalFiles",
    "PlainHTTP",
    "check_local_files",
    "is_local",
    "is_oss",
    "local_files_policy",
    "redact",
    "run_all",
    "safe_join",
    "safe_name",
    "single_error",
    "transport_error",
]

MIB: Final = 1024 * 1024
DEFAULT_CHUNK_SIZE: Final = MIB
"""Bytes per file read (uploads) and per batch of file writes (downloads)."""

_UNSAFE_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]+")
_REMOTE_SCHEMES: Final = ("http://", "https://", "oss://")


# --- references and names -------------------------------------------------------------------


def is_local(ref: Reference) -> bool:
    """Whether a reference is a local file (a path or a ``file://`` URL) to be uploaded."""
    return not os.fspath(ref).lower().startswith(_REMOTE_SCHEMES)


def is_oss(ref: Reference) -> bool:
    """Whether a reference is an ``oss://`` URL (the create then needs the resolve header)."""
    return os.fspath(ref).lower().startswith("oss://")


def safe_name(name: str, *, default: str, max_length: int = 120) -> str:
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
    candidate = base / safe_name(name, default="video")
    if candidate.parent != base or candidate.name in ("", ".", ".."):
        raise DownloadError(f"Refusing file name {name!r}: it would leave {base}.")
    return candidate


# --- requests to the no-auth hosts ----------------------------------------------------------


class PlainHTTP:
    """The shared httpx client, for the hosts that must never see the API key.

    Args:
        http: the shared client. Never configure auth on it (the API layer adds the key
            per request); should its defaults carry an ``Authorization`` anyway, requests
            built here drop it.
    """

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    def build(self, method: str, url: str | httpx.URL, **kwargs: Any) -> httpx.Request:
        """A request without ``Authorization`` (``kwargs`` as httpx's ``build_request``)."""
        request = self.http.build_request(method, url, **kwargs)
        request.headers.pop("Authorization", None)
        return request

    async def send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        """Send ``request`` with no auth of the client's."""
        return await self.http.send(request, auth=None, stream=stream)


class HostRetryable(Exception):
    """An answer from a host that is worth another attempt (`retryable_status`)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response

    @property
    def retry_after(self) -> float | None:
        """The answer's ``Retry-After``, in seconds, if it gave one."""
        return parse_retry_after(self.response.headers.get("Retry-After"))


def redact(url: str | httpx.URL) -> str:
    """A URL without its query (signed URLs carry credentials there) or fragment."""
    parts = urllib.parse.urlsplit(str(url))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def transport_error(exc: httpx.TransportError, method: str, url: str | httpx.URL) -> TransportError:
    """The wanr2v error for an httpx failure, its URL stripped of any signature."""
    return translate(exc, method=method, url=redact(url))


# --- task groups ----------------------------------------------------------------------------


def single_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
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


async def run_all(calls: Sequence[Callable[[], Coroutine[Any, Any, None]]]) -> None:
    """Run ``calls`` concurrently; a lone failure is raised as itself, not in a group."""
    try:
        async with anyio.create_task_group() as tg:
            for call in calls:
                tg.start_soon(call)
    except BaseExceptionGroup as group:
        err = single_error(group)
        if err is None:
            raise
        raise err from err.__cause__


# --- which local files may be uploaded (web backends) ---------------------------------------

LocalFiles = bool | tuple[Path, ...]
"""``True``: any local path may be uploaded; ``False``: none; folders: files inside them."""


def local_files_policy(value: bool | Sequence[str | os.PathLike[str]]) -> LocalFiles:
    """Normalise the client's ``local_files`` option (folders made absolute).

    Raises:
        ConfigurationError: not a bool or a list of folders.
    """
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
