"""AsyncWanClient: construction, lifecycle, settings and the create verbs.

The client wires its parts together and keeps each verb thin. The other verbs are
mixins by family, each declaring what it uses of the client: ``_task_verbs`` (task,
fetch, wait, cancel, list, events), ``_batch_verbs`` (run_many, as_completed, resume),
``_file_verbs`` (upload, download, stream_video). The parts depend on narrow protocols
(``_protocols``), never on the client: routing between regions (``_routing``), the safe
create and its reconciliation (``_create``, ``_reconcile``), the batch runner
(``_batch``), the task list (``_listing``), the poll scheduler (``_polling``) and the
governor (``_limits``).
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

import attrs
import httpx

from . import _config, _helpers
from ._batch import BatchRunner
from ._batch_verbs import BatchVerbs
from ._create import Creator
from ._events import EventHub, TaskEvent
from ._exceptions import SubmitOutcomeUnknownError
from ._file_verbs import DEFAULT_MAX_VIDEO_BYTES, FileVerbs
from ._helpers import ClientStatistics, raise_for_status
from ._http import DEFAULT_MAX_RESPONSE_BYTES
from ._limits import Governor, Limits
from ._models import (
    ModelName,
    Reference,
    ShotType,
    Size,
    Task,
    TaskResult,
    TaskStatus,
    VideoRequest,
)
from ._polling import PollPolicy, PollScheduler, event_name
from ._retry import RetryPolicy
from ._routing import RegionEndpoint, Router, open_http, resolve_default, retry_policy_for
from ._task_verbs import TaskVerbs
from ._wire import UploadPolicy

if TYPE_CHECKING:
    from ._download import Downloader
    from ._upload import Uploader

__all__ = ["AsyncWanClient", "ClientStatistics", "RegionEndpoint", "raise_for_status"]


class AsyncWanClient(TaskVerbs, BatchVerbs, FileVerbs):
    """An async client for Wan 2.6 reference-to-video (``wan2.6-r2v``, ``wan2.6-r2v-flash``).

    Example::

        async with AsyncWanClient(region="singapore") as client:
            result = await client.call(
                model="wan2.6-r2v-flash",
                prompt="character1 waves at character2 in front of character3",
                reference_urls=["https://…/me.mp4", "https://…/dog.png", "https://…/beach.jpg"],
                duration=5,
            )
            await client.download(result, "videos/")

    Args:
        api_key: the key; default ``DASHSCOPE_API_KEY``.
        region: ``"beijing"`` (default), ``"singapore"`` or ``"virginia"``.
        base_url: any base URL (with ``region``, it names the region that host serves;
            a vendor URL of another region is refused); default
            ``DASHSCOPE_HTTP_BASE_URL`` when no ``region`` is passed either.
        workspace: sent as ``X-DashScope-WorkSpace``.
        timeout: seconds for one whole HTTP exchange (connect, send, read the answer),
            however slowly the server answers; a shielded create waits at most that.
        max_retries: retries of one safe request.
        http_client: your own ``httpx.AsyncClient`` (never closed by this client). Auth
            is added per request, so its default headers should carry no key.
        limits: the account's `Limits` (rates, tasks in flight, connections).
        governor: a `Governor` shared with other clients of the same account.
        poll_policy: how `wait` spaces its queries.
        retry_policy: backoff of safe retries (``max_retries`` overrides its count).
        reconcile: when a create's answer is lost, look the task up before anything else
            (default ``True``); see `async_call`.
        reconcile_grace: seconds to let a lost create land before the lookup.
        reconcile_wait: seconds to wait for a candidate task to show its prompt.
        reconcile_settle: service seconds after a lost create answer before an empty
            task list proves no task was made (default 15: a listing or a commit may
            lag 5 s each, plus 5 s to spare); an earlier empty look is followed by another.
        allow_insecure: allow plain ``http://`` to a host that is not loopback (the key
            would cross the network in clear).
        regions: more regions, ``{name: key}`` or ``{name: RegionEndpoint(...)}``. Each
            task remembers the region that made it, and ``fetch``/``wait``/``cancel``/
            ``download`` always go there; ``async_call(region=...)`` picks one, and a
            request a region cannot serve (virginia: ``wan2.6-r2v`` only, 5 or 10 s,
            no pictures) goes to one that can, or is refused before anything is sent.
            ``run_many(spread=True)`` spreads a batch over them, least loaded first.
        time_scale: for tests against an emulator running this many times faster than
            the service (``EmulatorConfig(time_scale=...)``, ``wanr2v emulator
            --time-scale``): rates, poll spacing and the reconciliation wait (explicit
            ``limits`` and ``poll_policy`` too) are scaled to match.
        max_response_bytes: cap of one API answer (decoded; default 4 MiB); a larger
            one raises `ResponseTooLargeError` without being read further.
        max_video_bytes: cap of one downloaded video (default 1 GiB; ``None``: none); a
            larger one raises `DownloadError` and leaves no file.
        storage_uri: share the account's limits with every process naming the same
            store: ``"redis://host:port/db"`` (default ``WANR2V_STORAGE_URI``; unset:
            in-process only). Rates, task slots and 429 back-off are then shared per
            account (a fingerprint of the key) and region; Redis runs under asyncio
            only. Reached at ``async with`` (or the first call): unreachable there is a
            `SharedStorageError`; lost later, a warning and a ``1/N`` share.
        local_files: whether local paths in ``reference_urls`` may be uploaded:
            ``True`` (default), ``False`` (a web backend: a path is refused before
            anything is sent), or a list of folders the files must be inside.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        region: str | None = None,
        base_url: str | None = None,
        workspace: str | None = None,
        timeout: float = _config.DEFAULT_TIMEOUT,
        max_retries: int = _config.DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        limits: Limits | None = None,
        governor: Governor | None = None,
        poll_policy: PollPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        reconcile: bool = True,
        reconcile_grace: float = 2.0,
        reconcile_wait: float = 900.0,
        reconcile_settle: float = 15.0,
        allow_insecure: bool = False,
        regions: Mapping[str, str | RegionEndpoint] | None = None,
        time_scale: float = 1.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_video_bytes: int | None = DEFAULT_MAX_VIDEO_BYTES,
        storage_uri: str | None = None,
        local_files: bool | Sequence[str | os.PathLike[str]] = True,
    ) -> None:
        from ._hosts import local_files_policy
        from ._storage import resolve_storage_uri

        _helpers.check_client_options(
            time_scale=time_scale,
            timeout=timeout,
            max_retries=max_retries,
            max_response_bytes=max_response_bytes,
            max_video_bytes=max_video_bytes,
            reconcile_settle=reconcile_settle,
        )
        if time_scale != 1:
            # An emulator running time_scale x faster: rates, polling and waits to match.
            limits = (limits or Limits()).scaled(time_scale) if governor is None else limits
            poll_policy = (poll_policy or PollPolicy()).scaled(time_scale)
            reconcile_wait = reconcile_wait / time_scale
        self._time_scale = float(time_scale)
        self._region, self._base_url, key, extra = resolve_default(
            region, base_url, api_key, regions, allow_insecure
        )
        self._limits = governor.limits if governor is not None else (limits or Limits())
        self._governor = governor or Governor(self._limits)
        self._http, self._owns_http = open_http(http_client, self._limits, timeout)
        self._retry = retry_policy_for(retry_policy, max_retries)
        self._max_video_bytes = max_video_bytes
        self._storage_uri = resolve_storage_uri(storage_uri)
        self._routing = Router(
            http=self._http,
            retry=self._retry,
            workspace=workspace,
            max_response_bytes=max_response_bytes,
            storage_uri=self._storage_uri,
        )
        self._routing.add(self._base_url, key, self._region, self._governor)
        self._routing.add_regions(extra, self._limits, allow_insecure)
        self._events = EventHub()
        self._scheduler = PollScheduler(
            self._poll,
            poll_policy,
            running_slots=self._limits.running_slots,
            on_status=self._on_status,
        )
        self._creator = Creator(
            routing=self._routing,
            scheduler=self._scheduler,
            events=self._events,
            query=self._query,
            uploader_for=self._get_uploader,
            local_files=local_files_policy(local_files),
            enabled=reconcile,
            grace=reconcile_grace,
            wait=reconcile_wait,
            settle=reconcile_settle,
        )
        self._uploaders: dict[str, Uploader] = {}
        self._downloader: Downloader | None = None

    # --- lifecycle and settings ---------------------------------------------------------

    async def __aenter__(self) -> Self:
        try:
            for shared in self._routing.shared:
                await shared.start()  # a clear error now if the store is unreachable
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client this client made (never one you passed in)."""
        if self._routing.closed:
            return
        self._routing.closed = True
        for shared in self._routing.shared:
            await shared.aclose()
        if self._owns_http:
            await self._http.aclose()

    def __repr__(self) -> str:
        key = _config.mask_key(self._routing.key_of(self._base_url))
        return (
            f"AsyncWanClient(region={self._region!r}, base_url={self._base_url!r}, api_key={key!r})"
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying ``httpx.AsyncClient`` (carries no key in its defaults)."""
        return self._http

    @property
    def region(self) -> str:
        """The default region's name (``"custom"`` for a base URL of no known region)."""
        return self._region

    @property
    def base_url(self) -> str:
        """The default region's base URL (a task id alone is assumed to live there)."""
        return self._base_url

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this client can send to, its default first."""
        return self._routing.regions

    @property
    def limits(self) -> Limits:
        """The account's `Limits` of the default region (scaled by ``time_scale``)."""
        return self._limits

    @property
    def governor(self) -> Governor:
        """The default region's `Governor` (pass it to another client to share it)."""
        return self._governor

    @property
    def time_scale(self) -> float:
        """How many times faster than the service the world runs (1: the real one)."""
        return self._time_scale

    @property
    def storage_uri(self) -> str | None:
        """The shared store of the account's limits (``None``: this process only)."""
        return self._storage_uri

    @property
    def unresolved(self) -> list[SubmitOutcomeUnknownError]:
        """Creates whose outcome stayed unknown: each may have made a task this client
        does not know (a journal keeps them as AMBIGUOUS; ``resume`` looks again)."""
        return self._creator.unresolved

    def with_options(self, *, timeout: float | None = None, max_retries: int | None = None) -> Self:
        """This client with another request timeout or retry count, for one call::

            await client.with_options(timeout=5, max_retries=0).fetch(task)

        The copy shares everything else (HTTP connections, governor, poll scheduler,
        journal claims) and needs no closing. The options apply to the API requests the
        copy sends itself (create, fetch, cancel, list, upload policy); the polls of
        ``wait`` go through the shared scheduler with the client's own settings.

        Raises:
            ConfigurationError: ``timeout`` not > 0 or ``max_retries`` < 0.
        """
        _helpers.check_client_options(timeout=timeout, max_retries=max_retries)
        other = copy.copy(self)
        other._owns_http = False  # the original closes what it made
        if max_retries is not None:
            other._retry = attrs.evolve(self._retry, max_retries=max_retries)
        other._routing = self._routing.with_options(other._retry, timeout)
        other._creator = self._creator.rebind(other._routing, other._query, other._get_uploader)
        return other

    # --- create -------------------------------------------------------------------------

    @_helpers.request_verb
    async def async_call(
        self,
        request: VideoRequest | None = None,
        /,
        *,
        model: ModelName | str | None = None,
        prompt: str | None = None,
        reference_urls: Sequence[Reference] | Reference | None = None,
        negative_prompt: str | None = None,
        size: Size | str | None = None,
        duration: int | None = None,
        shot_type: ShotType | str | None = None,
        audio: bool | None = None,
        watermark: bool | None = None,
        seed: int | None = None,
        prompt_extend: bool | None = None,
        extra_input: Mapping[str, Any] | None = None,
        extra_parameters: Mapping[str, Any] | None = None,
        submission_id: str | None = None,
        claimed: Callable[[], Any] | None = None,
        region: str | None = None,
    ) -> Task:
        """Create a task; return its handle (id, status, request id, where it lives).

        Takes a `VideoRequest` or its fields as keywords (``model``, ``prompt``,
        ``reference_urls``, ``negative_prompt``, ``size``, ``duration``, ``shot_type``,
        ``audio``, ``watermark``, ``seed``, ``prompt_extend``, ``extra_input``,
        ``extra_parameters``; see `VideoRequest` for their limits). A misspelt
        keyword is a type error under ``mypy`` and a ``TypeError`` naming the closest
        valid one at run time.

        The create is re-sent only when the service provably made nothing: no
        connection, or a 429 / 503 answer. When the answer is lost after the request
        may have arrived (or is a 500 / 502 / 504, which may hide a made task), the
        client lists the account's tasks of that model, matches
        the unclaimed ones by prompt, and adopts a match; when the service provably has
        no such task it sends once more; otherwise it raises
        `SubmitOutcomeUnknownError` — never a blind duplicate.

        ``region`` picks one of the configured regions (see ``regions``).

        Raises:
            InvalidRequestError: a field is out of its limits, or no configured region
                can serve the request (nothing was sent).
            SubmitOutcomeUnknownError: a task may or may not exist.
            APIError: the service refused the create.
        """
        return await self._create(_helpers.the_request(request), region, submission_id, claimed)

    async def _create(
        self, req: VideoRequest, region: str | None, sid: str | None = None, claimed: Any = None
    ) -> Task:
        session = self._routing.route(req, region)
        body, headers = await self._creator.prepare(req, base_url=session.base_url)
        base_url = session.base_url
        return await self._creator.submit(
            body, headers=headers, submission_id=sid, claimed=claimed, base_url=base_url
        )

    @_helpers.request_verb
    async def call(
        self,
        request: VideoRequest | None = None,
        /,
        *,
        model: ModelName | str | None = None,
        prompt: str | None = None,
        reference_urls: Sequence[Reference] | Reference | None = None,
        negative_prompt: str | None = None,
        size: Size | str | None = None,
        duration: int | None = None,
        shot_type: ShotType | str | None = None,
        audio: bool | None = None,
        watermark: bool | None = None,
        seed: int | None = None,
        prompt_extend: bool | None = None,
        extra_input: Mapping[str, Any] | None = None,
        extra_parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        region: str | None = None,
        on_event: Callable[[TaskEvent], object] | None = None,
    ) -> TaskResult:
        """Create a task and wait for it, holding one of the governor's task slots.

        Takes the keywords of `async_call` (or a `VideoRequest`);
        ``timeout`` bounds the wait (`WaitTimeoutError`, the task goes on).
        ``on_event`` gets this task's events only: ``created`` once its create is
        answered, then each status change (see `wait`).

        Raises:
            TaskFailedError: FAILED (``code`` and ``message`` say why).
            TaskCanceledError, TaskNotFoundError: the other bad ends.
            InvalidRequestError, SubmitOutcomeUnknownError, APIError: as `async_call`.
        """
        req = _helpers.the_request(request)
        session = self._routing.route(req, region)
        async with session.governor.task_slot():
            task = await self._create(req, self._routing.name_of(session))
            if on_event is not None:
                on_event(TaskEvent(kind="created", task_id=task.task_id, at=time.time()))
            return await self.wait(task, timeout=timeout, on_event=on_event)

    # --- wiring (the verbs live in _task_verbs, _batch_verbs, _file_verbs) -------------

    def _on_status(self, result: TaskResult, previous: TaskStatus | None) -> None:
        self._events.emit(event_name(result.status), result.task_id, result)  # type: ignore[arg-type]

    def _runner(self, **options: Any) -> BatchRunner:
        return BatchRunner(
            self,
            routing=self._routing,
            create=self._creator,
            scheduler=self._scheduler,
            events=self._events,
            **options,
        )

    def _get_uploader(self, base_url: str | None = None) -> Uploader:
        session = self._routing.session_for(base_url)
        uploader = self._uploaders.get(session.base_url)
        if uploader is None:
            from ._upload import Uploader

            async def get_policy(model: str) -> UploadPolicy:
                return await self._get_upload_policy(model, base_url=session.base_url)

            uploader = Uploader(
                http=self._http, get_policy=get_policy, check_media=True, retry_policy=self._retry
            )
            self._uploaders[session.base_url] = uploader
        # Shared by with_options copies (one cache, one set of slots): each uses its policy.
        return uploader.with_retry_policy(self._retry)

    def _get_downloader(self) -> Downloader:
        if self._downloader is None:
            from ._download import Downloader

            self._downloader = Downloader(http=self._http, max_bytes=self._max_video_bytes)
        return self._downloader.with_retry_policy(self._retry)

    def statistics(self) -> ClientStatistics:
        """Requests sent by kind, answers by status, 429s, creates, reconciliations."""
        return _helpers.client_statistics(
            self._routing, self._creator, self._governor, self._scheduler
        )
