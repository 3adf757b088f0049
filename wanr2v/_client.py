"""AsyncWanClient: construction and the verbs (create, fetch, wait, call, cancel, list,
run many, upload, download).

The client wires its parts together and keeps each verb thin; the parts live in their
own modules, each depending on a narrow protocol (``wanr2v._protocols``), never on
the client: routing between regions (``wanr2v._routing``), the safe create and its
reconciliation (``wanr2v._create``, ``wanr2v._reconcile``), the batch runner
(``wanr2v._batch``), the task list (``wanr2v._listing``), the poll scheduler
(``wanr2v._polling``) and the governor (``wanr2v._limits``).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self, overload

import anyio
import attrs
import httpx

from . import _config, _listing
from ._batch import BatchItem, BatchRunner, CancelPolicy, Requests
from ._create import Creator
from ._events import EventHub, TaskEvent
from ._exceptions import (
    ConfigurationError,
    InvalidRequestError,
    SubmitOutcomeUnknownError,
    WaitTimeoutError,
)
from ._helpers import (
    ClientStatistics,
    TaskLike,
    build_request,
    check_client_options,
    only,
    raise_for_status,
    task_ref,
)
from ._http import DEFAULT_MAX_RESPONSE_BYTES, RetryPolicy, lean_cookies, task_segment
from ._lean import LeanAsyncClient
from ._limits import Governor, Limits, check_pool
from ._models import (
    ModelName,
    Reference,
    ShotType,
    Size,
    Task,
    TaskResult,
    TaskStatus,
    TaskSummary,
    VideoRequest,
    keyword_hints,
)
from ._polling import PollPolicy, PollScheduler, Watch, event_name
from ._routing import RegionEndpoint, Router, check_scheme, is_loopback
from ._wire import UploadPolicy, parse_policy, parse_result

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from ._files import Downloader, Uploader
    from .journal import JournalStore

__all__ = ["AsyncWanClient", "ClientStatistics", "RegionEndpoint", "raise_for_status"]

_is_loopback = is_loopback  # the CLI's name for it

DEFAULT_MAX_VIDEO_BYTES = 1024**3
"""Cap of one downloaded video: 1 GiB (a 15 s 1080p result is a few tens of MB)."""


class AsyncWanClient:
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
        reconcile_settle: seconds on the service's clock (divided by
            ``poll_policy.time_scale``) after a create's answer was lost before an
            empty task list proves that no task was made (default 15: a task may show
            in the list, or a dropped create commit, late; this covers 5 s of each,
            with 5 s to spare). An earlier empty look is followed by another.
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
            --time-scale``): the account's rates, the poll spacing and the
            reconciliation wait are scaled to match (explicit ``limits`` and
            ``poll_policy`` are scaled too). The single switch for emulator users.
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
        from ._files import local_files_policy
        from ._storage import resolve_storage_uri

        check_client_options(
            time_scale, timeout, max_retries, max_response_bytes, max_video_bytes, reconcile_settle
        )
        if time_scale != 1:
            # An emulator running time_scale x faster: rates, polling and waits to match.
            limits = (limits or Limits()).scaled(time_scale) if governor is None else limits
            poll_policy = (poll_policy or PollPolicy()).scaled(time_scale)
            reconcile_wait = reconcile_wait / time_scale
        self._time_scale = float(time_scale)
        extra = {
            name: spec if isinstance(spec, RegionEndpoint) else RegionEndpoint(api_key=spec)
            for name, spec in (regions or {}).items()
        }
        self._region, self._base_url = _config.resolve_base_url(region, base_url)
        if api_key is None and self._region in extra and not os.environ.get(_config.ENV_API_KEY):
            api_key = extra[self._region].api_key
        key = _config.resolve_api_key(api_key)
        check_scheme(self._base_url, allow_insecure)
        self._limits = governor.limits if governor is not None else (limits or Limits())
        self._governor = governor or Governor(self._limits)
        self._owns_http = http_client is None
        self._http = http_client or LeanAsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=self._limits.max_connections,
                max_keepalive_connections=self._limits.max_connections,
            ),
        )
        if http_client is not None:
            check_pool(http_client, self._limits)  # the governor's slots must fit its pool
        else:
            lean_cookies(self._http)
        self._retry = (
            attrs.evolve(retry_policy, max_retries=max_retries)
            if retry_policy is not None and max_retries != _config.DEFAULT_MAX_RETRIES
            else retry_policy or RetryPolicy(max_retries=max_retries)
        )
        self._max_video_bytes = max_video_bytes
        files_policy = local_files_policy(local_files)
        self._storage_uri = resolve_storage_uri(storage_uri)
        self._routing = Router(
            http=self._http,
            retry=self._retry,
            workspace=workspace,
            max_response_bytes=max_response_bytes,
            storage_uri=self._storage_uri,
        )
        self._routing.add(self._base_url, key, self._region, self._governor)
        for name, spec in extra.items():
            if name != self._region:
                _, url = _config.resolve_base_url(name, spec.base_url, env=False)
                check_scheme(url, allow_insecure)
                self._routing.add(url, spec.api_key, name, Governor(spec.limits or self._limits))
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
            local_files=files_policy,
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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
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
        """Creates whose outcome stayed unknown (reconciliation failed or was cancelled):
        each may have made a task this client does not know. A journal keeps them as
        AMBIGUOUS, and ``resume`` looks again."""
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
        if timeout is not None and not timeout > 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}.")
        if max_retries is not None and max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries!r}.")
        other = copy.copy(self)
        other._owns_http = False  # the original closes what it made
        if max_retries is not None:
            other._retry = attrs.evolve(self._retry, max_retries=max_retries)
        other._routing = self._routing.with_options(other._retry, timeout)
        other._creator = self._creator.rebind(other._routing, other._query, other._get_uploader)
        return other

    # --- create -------------------------------------------------------------------------

    @keyword_hints
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
        req = build_request("async_call", request, locals())
        session = self._routing.route(req, region)
        body, headers = await self._creator.prepare(req, base_url=session.base_url)
        return await self._creator.submit(
            body,
            headers=headers,
            submission_id=submission_id,
            claimed=claimed,
            base_url=session.base_url,
        )

    @keyword_hints
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
        req = build_request("call", request, locals())
        session = self._routing.route(req, region)
        async with session.governor.task_slot():
            task = await self.async_call(req, region=self._routing.name_of(session))
            if on_event is not None:
                on_event(TaskEvent(kind="created", task_id=task.task_id, at=time.time()))
            return await self.wait(task, timeout=timeout, on_event=on_event)

    # --- query --------------------------------------------------------------------------

    def task(self, task_id: str, *, region: str | None = None) -> Task:
        """A handle for a task id known from elsewhere (a log, a database).

        A task id lives only in the region that created it, and the id alone does not
        say which: the handle assumes ``region`` if given, else this client's default
        region (``handle.region`` says which), and every call on it goes there.
        """
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError("task_id must be a non-empty string.")
        routing = self._routing
        session = routing.for_region(region) if region is not None else routing.default
        return Task(
            task_id=task_id.strip(),
            status=TaskStatus.UNRECOGNIZED,
            base_url=session.base_url,
            region=routing.name_of(session),
        )

    async def fetch(self, task: TaskLike) -> TaskResult:
        """Query a task once (``GET /tasks/{id}``), where it lives.

        A task id alone is assumed to live at this client's ``base_url``.
        """
        task_id, base = task_ref(task)
        result = await self._fetch(task_id, base, priority=-math.inf)
        self._scheduler.observe(result)
        return result

    async def _fetch(
        self, task_id: str, base_url: str | None, *, priority: float, max_retries: int | None = None
    ) -> TaskResult:
        session = self._routing.session_for(base_url)
        _, data = await session.request(
            "query",
            "GET",
            f"{_config.PATH_TASKS}/{task_segment(task_id)}",
            priority=priority,
            task_id=task_id,
            max_retries=max_retries,
        )
        return parse_result(data, task_id=task_id, base_url=session.base_url)

    async def _query(self, task_id: str, base_url: str | None) -> TaskResult:
        return await self._fetch(task_id, base_url, priority=-math.inf)

    async def _poll(self, watch: Watch, priority: float) -> TaskResult:
        session = self._routing.session_for(watch.base_url)
        shared = session.governor.shared
        if shared is None:
            return await self._fetch(
                watch.task_id, watch.base_url, priority=priority, max_retries=0
            )
        # A fleet shares its polls: an answer another worker got less than min_interval
        # ago (the scheduler's own floor between two polls of a task) is used as is.
        fresh = self._scheduler.policy.min_interval / self._scheduler.policy.time_scale
        data = await shared.recent_poll(watch.task_id, fresh)
        if data is None:
            _, data = await session.request(
                "query",
                "GET",
                f"{_config.PATH_TASKS}/{watch.task_id}",
                priority=priority,
                task_id=watch.task_id,
                max_retries=0,
            )
            shared.publish_poll(watch.task_id, data, fresh)
        return parse_result(data, task_id=watch.task_id, base_url=session.base_url)

    def _on_status(self, result: TaskResult, previous: TaskStatus | None) -> None:
        self._events.emit(event_name(result.status), result.task_id, result)  # type: ignore[arg-type]

    async def wait(
        self,
        task: TaskLike,
        *,
        timeout: float | None = None,
        raise_on_failure: bool = True,
        on_event: Callable[[TaskEvent], object] | None = None,
    ) -> TaskResult:
        """Poll until the task is final (through the shared scheduler); return on SUCCEEDED.

        Deadlines belong to the caller: ``with anyio.fail_after(600): await
        client.wait(t)``. ``timeout=`` is a convenience that raises
        `WaitTimeoutError` (the task goes on, on the server).

        Raises:
            TaskFailedError: FAILED (``code`` and ``message`` say why).
            TaskCanceledError: CANCELED.
            TaskNotFoundError: UNKNOWN (never existed here, or expired after 24 h).

        ``on_event`` is called (synchronously, from the poll scheduler) with each of
        this task's `TaskEvent` s while the wait lasts: a request handler
        streams its own task's states without subscribing to the whole client.
        """
        task_id, base = task_ref(task)
        if base is None and isinstance(task, str):
            base = self._base_url
        if on_event is not None:
            unsubscribe = self.subscribe(only(task_id, on_event))
            try:
                return await self.wait(task, timeout=timeout, raise_on_failure=raise_on_failure)
            finally:
                unsubscribe()
        with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
            result = await self._scheduler.wait(task_id, base)
        if scope.cancelled_caught:
            raise WaitTimeoutError(
                f"Task {task_id} was not final after {timeout}s; it goes on on the server.",
                task_id=task_id,
            )
        return raise_for_status(result) if raise_on_failure else result

    async def cancel(self, task: TaskLike) -> None:
        """Cancel a task; the service allows it only while PENDING.

        Raises:
            UnsupportedOperationError: the task is no longer PENDING.
        """
        task_id, base = task_ref(task)
        await self._routing.session_for(base).request(
            "cancel",
            "POST",
            f"{_config.PATH_TASKS}/{task_segment(task_id)}/cancel",
            task_id=task_id,
        )

    def list_tasks(
        self,
        *,
        task_id: str | None = None,
        model: str | None = None,
        status: str | TaskStatus | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 100,
        max_items: int | None = None,
        base_url: str | None = None,
        max_pages: int = _listing.DEFAULT_MAX_LIST_PAGES,
    ) -> AsyncIterator[TaskSummary]:
        """Iterate over every page of the task list (default: the last 24 h)::

            async for row in client.list_tasks(model="wan2.6-r2v-flash"):
                print(row.task_id, row.status)

        Arguments are checked at once; pages are fetched as you iterate.

        Args:
            start_time, end_time: a window of at most 24 h (naive values mean UTC).
            model: ``model_name`` filter; ``status``: a status filter.
            max_pages: pages to fetch at most. A listing that would need more, or a
                page the service repeats, raises `APIError`
                (``code="MalformedResponse"``): a listing cut short must never pass
                for a complete one (reconciliation relies on it).
        """
        params = _listing.list_params(
            task_id=task_id,
            model=model,
            status=status,
            start_time=start_time,
            end_time=end_time,
            page_size=page_size,
            max_pages=max_pages,
        )
        return _listing.pages(self._routing, base_url, params, max_items, max_pages)

    # --- batches ------------------------------------------------------------------------

    async def run_many(
        self,
        requests: Requests,
        *,
        journal: JournalStore | None = None,
        download_to: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
        on_cancel: CancelPolicy = "detach",
        spread: bool = False,
        retry_failed: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
        allow_duplicates: bool = False,
    ) -> list[BatchItem]:
        """Run many requests at once under the governor; outcomes in input order.

        ``requests`` is a list (keys are indexes) or a mapping (keys are yours) of
        `VideoRequest` or field dicts. Each outcome holds a result or an error;
        one failure does not cancel the rest unless ``fail_fast``. Never more than
        ``Limits.max_in_flight`` tasks are in flight. With a ``journal``, every
        submission is recorded before its create is sent (see `resume`).

        Args:
            on_cancel: when your scope is cancelled, ``"detach"`` leaves remote tasks
                running; ``"cancel_pending"`` cancels those still PENDING.
            spread: spread the items over every configured region that can serve
                them, least loaded first.
            retry_failed: run again the journal's items that failed without creating a
                task (a missing reference file, a budget stop); a task that failed on
                the service is never re-created.
            name: the file name template of the videos in ``download_to``: ``{key}``,
                ``{task_id}``, ``{model}``; default ``{key}.mp4`` for a mapping of
                requests, ``{task_id}.mp4`` for a list.
            budget_usd: a spending cap: no task is created whose estimated cost would
                take the batch (what the journal's tasks billed or may bill included)
                over it; those items end with `BudgetExceededError`.
            allow_duplicates: with a ``journal``, let one request be recorded (and
                paid) under several keys; by default that raises
                `DuplicateRequestError`, and a changed request
                under a known key raises `JournalConflictError`
                (both before anything is sent).
        """
        runner = self._runner(
            journal=journal,
            download_to=download_to,
            fail_fast=fail_fast,
            on_cancel=on_cancel,
            spread=spread,
            retry_failed=retry_failed,
            name=name,
            budget_usd=budget_usd,
            allow_duplicates=allow_duplicates,
        )
        return await runner.run(requests)

    def as_completed(
        self,
        requests: Requests,
        *,
        journal: JournalStore | None = None,
        download_to: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
        on_cancel: CancelPolicy = "detach",
        spread: bool = False,
        retry_failed: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
        allow_duplicates: bool = False,
    ) -> AbstractAsyncContextManager[AsyncIterator[BatchItem]]:
        """Like `run_many`, yielding each outcome as it completes::

        async with client.as_completed(requests) as results:
            async for item in results:
                print(item.key, item.ok)
        """
        runner = self._runner(
            journal=journal,
            download_to=download_to,
            fail_fast=fail_fast,
            on_cancel=on_cancel,
            spread=spread,
            retry_failed=retry_failed,
            name=name,
            budget_usd=budget_usd,
            allow_duplicates=allow_duplicates,
        )
        return runner.as_completed(requests)

    async def resume(
        self,
        journal: JournalStore,
        *,
        download_to: str | os.PathLike[str] | None = None,
        on_cancel: CancelPolicy = "detach",
        retry_failed: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
    ) -> list[BatchItem]:
        """Finish a journaled batch after a crash: poll the tasks it knows, reconcile
        creates whose answer was lost (never re-sending one that exists), download.

        ``retry_failed``, ``name`` and ``budget_usd`` as for `run_many`; ``name``
        defaults to the template the batch's run recorded in the journal (so a video is
        never saved twice under two names), else ``{task_id}.mp4``.
        """
        runner = self._runner(
            journal=journal,
            download_to=download_to,
            on_cancel=on_cancel,
            retry_failed=retry_failed,
            name=name,
            budget_usd=budget_usd,
        )
        return await runner.resume()

    def _runner(self, **options: Any) -> BatchRunner:
        return BatchRunner(
            self,
            routing=self._routing,
            create=self._creator,
            scheduler=self._scheduler,
            events=self._events,
            **options,
        )

    # --- files --------------------------------------------------------------------------

    async def _get_upload_policy(self, model: str, *, base_url: str | None = None) -> UploadPolicy:
        """A temporary-upload policy for ``model`` (``GET /uploads?action=getPolicy``)."""
        asked_at = anyio.current_time()  # its life counts from before the request
        _, data = await self._routing.session_for(base_url).request(
            "policy", "GET", _config.PATH_UPLOADS, params={"action": "getPolicy", "model": model}
        )
        return parse_policy(data, obtained_at=asked_at)

    def _get_uploader(self, base_url: str | None = None) -> Uploader:
        session = self._routing.session_for(base_url)
        uploader = self._uploaders.get(session.base_url)
        if uploader is None:
            from ._files import Uploader

            async def get_policy(model: str) -> UploadPolicy:
                return await self._get_upload_policy(model, base_url=session.base_url)

            uploader = Uploader(http=self._http, get_policy=get_policy, check_media=True)
            self._uploaders[session.base_url] = uploader
        return uploader

    def _get_downloader(self) -> Downloader:
        if self._downloader is None:
            from ._files import Downloader

            self._downloader = Downloader(http=self._http, max_bytes=self._max_video_bytes)
        return self._downloader

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

    # --- observation --------------------------------------------------------------------

    def subscribe(self, callback: Callable[[TaskEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every lifecycle event; returns an unsubscribe function."""
        return self._events.subscribe(callback)

    def event_stream(
        self, buffer: float = math.inf
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[TaskEvent]]:
        """``async with client.event_stream() as events: async for ev in events: ...``"""
        return self._events.stream(buffer)

    def statistics(self) -> ClientStatistics:
        """Requests sent by kind, answers by status, 429s, creates, reconciliations."""
        requests, statuses, limited = self._routing.counts()
        return ClientStatistics(
            requests=requests,
            statuses=statuses,
            rate_limited=limited,
            created=self._creator.created,
            reconciled=self._creator.reconciled,
            governor=self._governor.statistics(),
            scheduler=self._scheduler.statistics(),
            regions=self._routing.governor_statistics(),
        )
