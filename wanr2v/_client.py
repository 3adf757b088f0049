"""AsyncWanClient: the verbs (create, fetch, wait, call, cancel, list, download)."""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import attrs
import httpx

from . import _config
from ._batch import BatchItem, BatchRunner, CancelPolicy, Requests
from ._events import EventHub, TaskEvent
from ._exceptions import (
    APIError,
    ConfigurationError,
    InvalidRequestError,
    ServerError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskCanceledError,
    TaskFailedError,
    TaskNotFoundError,
    TransportError,
    WaitTimeoutError,
    WanError,
)
from ._http import ApiSession, RetryPolicy, lean_cookies
from ._lean import LeanAsyncClient
from ._limits import Governor, GovernorStatistics, Limits, check_pool
from ._models import Task, TaskResult, TaskStatus, TaskSummary, VideoRequest
from ._polling import PollPolicy, PollScheduler, SchedulerStatistics, Watch, event_name
from ._wire import (
    UploadPolicy,
    fingerprint,
    format_list_time,
    parse_created,
    parse_list,
    parse_policy,
    parse_result,
    request_body,
)

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream

    from ._files import Downloader, Uploader
    from .journal import JournalStore

__all__ = ["AsyncWanClient", "ClientStatistics"]

logger = logging.getLogger("wanr2v")

TaskLike = Task | TaskResult | TaskSummary | str

MAX_CREATE_ROUNDS = 3
"""Sends of one submission whose earlier outcome was proven empty by reconciliation."""


@attrs.frozen(kw_only=True)
class RegionEndpoint:
    """One more region a client may send to, with its own key (and limits).

    Args:
        api_key: the key of that region (a key belongs to one region).
        base_url: default: the region's vendor URL (``REGION_BASE_URLS``).
        limits: that region's account limits (default: the client's); each region
            gets its own governor, as the service counts quotas per region.
    """

    api_key: str = attrs.field(repr=lambda k: repr(_config.mask_key(k)))
    base_url: str | None = None
    limits: Limits | None = None


@attrs.frozen(kw_only=True)
class ClientStatistics:
    """What a client has sent and seen (for progress displays and benchmarks)."""

    requests: Mapping[str, int]
    statuses: Mapping[int, int]
    rate_limited: int
    created: int
    reconciled: int
    governor: GovernorStatistics
    scheduler: SchedulerStatistics
    regions: Mapping[str, GovernorStatistics] = attrs.field(factory=dict)


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
        base_url: any base URL (wins over ``region``); default ``DASHSCOPE_HTTP_BASE_URL``.
        workspace: sent as ``X-DashScope-WorkSpace``.
        timeout: seconds for one HTTP request.
        max_retries: retries of one safe request.
        http_client: your own ``httpx.AsyncClient`` (never closed by this client). Auth
            is added per request, so its default headers should carry no key.
        limits: the account's :class:`Limits` (rates, tasks in flight, connections).
        governor: a :class:`Governor` shared with other clients of the same account.
        poll_policy: how :meth:`wait` spaces its queries.
        retry_policy: backoff of safe retries (``max_retries`` overrides its count).
        reconcile: when a create's answer is lost, look the task up before anything else
            (default ``True``); see :meth:`async_call`.
        reconcile_grace: seconds to let a lost create land before the lookup.
        reconcile_wait: seconds to wait for a candidate task to show its prompt.
        allow_insecure: allow plain ``http://`` to a host that is not loopback (the key
            would cross the network in clear).
        regions: more regions, ``{name: key}`` or ``{name: RegionEndpoint(...)}``. Each
            task remembers the region that made it, and ``fetch``/``wait``/``cancel``/
            ``download`` always go there; ``async_call(region=...)`` picks one, and a
            request a region cannot serve (virginia: ``wan2.6-r2v`` only, 5 or 10 s,
            no pictures) goes to one that can, or is refused before anything is sent.
            ``run_many(spread=True)`` spreads a batch over them, least loaded first.
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
        allow_insecure: bool = False,
        regions: Mapping[str, str | RegionEndpoint] | None = None,
    ) -> None:
        extra_regions = {
            name: spec if isinstance(spec, RegionEndpoint) else RegionEndpoint(api_key=spec)
            for name, spec in (regions or {}).items()
        }
        self.region: str
        self.base_url: str
        self.region, self.base_url = _config.resolve_base_url(region, base_url)
        if (
            api_key is None
            and self.region in extra_regions
            and not os.environ.get(_config.ENV_API_KEY)
        ):
            api_key = extra_regions[self.region].api_key
        key = _config.resolve_api_key(api_key)
        _check_scheme(self.base_url, allow_insecure)
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}.")
        if max_retries < 0:
            raise ConfigurationError(f"max_retries must be >= 0, got {max_retries!r}.")
        self.limits: Limits = governor.limits if governor is not None else (limits or Limits())
        self.governor: Governor = governor or Governor(self.limits)
        self._owns_http = http_client is None
        self._http = http_client or LeanAsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=self.limits.max_connections,
                max_keepalive_connections=self.limits.max_connections,
            ),
        )
        if http_client is not None:
            check_pool(http_client, self.limits)  # the governor's slots must fit its pool
        else:
            lean_cookies(self._http)
        self._retry = (
            attrs.evolve(retry_policy, max_retries=max_retries)
            if retry_policy is not None and max_retries != _config.DEFAULT_MAX_RETRIES
            else retry_policy or RetryPolicy(max_retries=max_retries)
        )
        self.workspace = workspace
        self._keys: dict[str, str] = {}
        self._sessions: dict[str, ApiSession] = {}
        self._names: dict[str, str] = {}
        self._session = self._add_session(self.base_url, key, self.region, self.governor)
        for name, spec in extra_regions.items():
            if name == self.region:
                continue
            _, url = _config.resolve_base_url(name, spec.base_url)
            _check_scheme(url, allow_insecure)
            if url in self._sessions:
                raise ConfigurationError(f"regions: {name!r} has the same base URL as another.")
            self._add_session(url, spec.api_key, name, Governor(spec.limits or self.limits))
        self.events: EventHub = EventHub()
        self.scheduler: PollScheduler = PollScheduler(
            self._poll,
            poll_policy,
            running_slots=self.limits.running_slots,
            on_status=self._on_status,
        )
        self.reconcile_enabled = reconcile
        self.reconcile_grace = reconcile_grace
        self.reconcile_wait = reconcile_wait
        self._claimed: set[str] = set()
        self.unresolved: list[SubmitOutcomeUnknownError] = []
        """Creates whose outcome stayed unknown (reconciliation failed or was cancelled):
        each may have made a task this client does not know. A journal keeps them as
        AMBIGUOUS, and ``resume`` looks again."""
        self._reconcile_lock = anyio.Lock()
        self._created = 0
        self._reconciled = 0
        self._uploaders: dict[str, Uploader] = {}
        self._downloader: Downloader | None = None
        self._closed = False

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
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
        if self._closed:
            return
        self._closed = True
        if self._owns_http:
            await self._http.aclose()

    def __repr__(self) -> str:
        return (
            f"AsyncWanClient(region={self.region!r}, base_url={self.base_url!r}, "
            f"api_key={_config.mask_key(self._keys[self.base_url])!r})"
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying ``httpx.AsyncClient`` (carries no key in its defaults)."""
        return self._http

    def _add_session(self, base_url: str, key: str, name: str, governor: Governor) -> ApiSession:
        self._keys[base_url] = key
        session = ApiSession(
            http=self._http,
            api_key=key,
            base_url=base_url,
            governor=governor,
            retry=self._retry,
            workspace=self.workspace,
        )
        self._sessions[base_url] = session
        self._names[base_url] = name
        return session

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this client can send to, its default first."""
        return tuple(self._names.values())

    def session_for_region(self, region: str) -> ApiSession:
        """The session of a configured region (by name or base URL)."""
        for url, name in self._names.items():
            if region in (name, url):
                return self._sessions[url]
        raise ConfigurationError(
            f"Region {region!r} is not configured on this client (have "
            f"{', '.join(self.regions)}); pass regions={{...: key}}."
        )

    def _refusal(self, session: ApiSession, request: VideoRequest) -> str | None:
        from ._models import reference_kind

        has_images = any(reference_kind(os.fspath(r)) == "image" for r in request.reference_urls)
        caps = _config.capabilities_for(self._names[session.base_url])
        return caps.refusal(request.model, request.duration, has_images)

    def eligible_sessions(self, request: VideoRequest) -> list[ApiSession]:
        """The configured regions that can serve ``request``, the default first."""
        return [s for s in self._sessions.values() if self._refusal(s, request) is None]

    def route(self, request: VideoRequest, region: str | None = None) -> ApiSession:
        """Where ``request`` goes: ``region`` if given, else the default region, else the
        first configured region that can serve it.

        Raises:
            InvalidRequestError: no configured region can serve it (nothing was sent).
        """
        if region is not None:
            session = self.session_for_region(region)
            why = self._refusal(session, request)
            if why is not None:
                raise InvalidRequestError(
                    f"Region {self._names[session.base_url]}: {why}; pick another region.",
                    field="region",
                )
            return session
        eligible = self.eligible_sessions(request)
        if not eligible:
            reasons = "; ".join(
                f"{self._names[s.base_url]}: {self._refusal(s, request)}"
                for s in self._sessions.values()
            )
            raise InvalidRequestError(
                f"No configured region can serve this request ({reasons}).", field="region"
            )
        return eligible[0]

    def _session_for(self, base_url: str | None) -> ApiSession:
        if not base_url or base_url.rstrip("/") == self.base_url:
            return self._session
        base_url = base_url.rstrip("/")
        session = self._sessions.get(base_url)
        if session is None:
            raise ConfigurationError(
                f"This task lives at {base_url}, but the client has no key for it; "
                "create a client for that region (a task id lives only where it was made)."
            )
        return session

    # --- create -------------------------------------------------------------------------

    def _build_request(
        self, request: VideoRequest | None, fields: Mapping[str, Any]
    ) -> VideoRequest:
        if request is not None:
            if fields:
                raise TypeError(
                    "Pass either a VideoRequest or keyword fields, not both "
                    f"(got extra {', '.join(sorted(fields))})."
                )
            if not isinstance(request, VideoRequest):
                raise TypeError(f"request must be a VideoRequest, got {type(request).__name__}.")
            return request
        try:
            return VideoRequest(**fields)
        except TypeError as exc:
            raise TypeError(f"async_call: {exc}") from None

    async def prepare(
        self, request: VideoRequest, *, base_url: str | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The wire body and extra headers for ``request`` (local files uploaded first,
        to the temporary storage of the region at ``base_url``)."""
        headers: dict[str, str] = {}
        refs: list[str] | None = None
        if request.local_references:
            refs, uses_oss = await self._get_uploader(base_url).resolve(request)
        else:
            refs = [os.fspath(r) for r in request.reference_urls]
            uses_oss = any(r.startswith("oss://") for r in refs)
        if uses_oss:
            headers["X-DashScope-OssResourceResolve"] = "enable"
        return request_body(request, refs), headers

    async def async_call(
        self,
        request: VideoRequest | None = None,
        /,
        *,
        submission_id: str | None = None,
        claimed: Callable[[], Any] | None = None,
        region: str | None = None,
        **fields: Any,
    ) -> Task:
        """Create a task; return its handle (id, status, request id, where it lives).

        Takes a :class:`VideoRequest` or its fields as keywords (``model``, ``prompt``,
        ``reference_urls``, ``negative_prompt``, ``size``, ``duration``, ``shot_type``,
        ``audio``, ``watermark``, ``seed``, ``extra_input``, ``extra_parameters``).

        The create is re-sent only when the service provably made nothing: no
        connection, or a 429 / 503 answer. When the answer is lost after the request
        may have arrived (or is a 500 / 502 / 504, which may hide a made task), the
        client lists the account's tasks of that model, matches
        the unclaimed ones by prompt, and adopts a match; when the service provably has
        no such task it sends once more; otherwise it raises
        :class:`SubmitOutcomeUnknownError` — never a blind duplicate.

        ``region`` picks one of the configured regions (see ``regions``).

        Raises:
            InvalidRequestError: a field is out of its limits, or no configured region
                can serve the request (nothing was sent).
            SubmitOutcomeUnknownError: a task may or may not exist.
            APIError: the service refused the create.
        """
        req = self._build_request(request, fields)
        session = self.route(req, region)
        body, headers = await self.prepare(req, base_url=session.base_url)
        return await self.submit_body(
            body,
            headers=headers,
            submission_id=submission_id,
            claimed=claimed,
            base_url=session.base_url,
        )

    async def submit_body(
        self,
        body: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        submission_id: str | None = None,
        claimed: Callable[[], Any] | None = None,
        on_sent: Callable[[float], Any] | None = None,
        base_url: str | None = None,
        key: object = None,
    ) -> Task:
        """Send a prepared create body with the safe-create rule (see :meth:`async_call`).

        Args:
            claimed: returns task ids already owned by other submissions (the journal's),
                excluded when reconciling.
            on_sent: awaited with the UNIX time just before each send goes out, after the
                governor's pacing (journals record the create as sent there).
            key: a batch item's key, carried by the task's lifecycle events.
        """
        session = self._session_for(base_url)
        fp = fingerprint(body)
        sid = submission_id or uuid.uuid4().hex
        model = str(body.get("model"))
        last: SubmitOutcomeUnknownError | None = None
        for _round in range(MAX_CREATE_ROUNDS):
            sent = [time.time()]

            async def before_send(sent: list[float] = sent) -> None:
                sent[0] = time.time()
                if on_sent is not None:
                    await _maybe_await(on_sent(sent[0]))

            try:
                # A create that went out is seen through to its answer even if the
                # caller is cancelled meanwhile: otherwise a paid task could exist that
                # nobody knows (and a cancel policy could not reach). The exchange is
                # bounded by the request timeout; the cancellation lands right after.
                _, data = await session.request(
                    "create",
                    "POST",
                    _config.PATH_CREATE,
                    json=dict(body),
                    headers=headers,
                    priority=anyio.current_time(),
                    before_send=before_send,
                    shield_exchange=True,
                )
            except (TransportError, ServerError) as exc:
                if isinstance(exc, TransportError) and not getattr(exc, "maybe_sent", True):
                    raise  # nothing reached the service (already retried)
                if isinstance(exc, ServiceUnavailableError):
                    raise  # a 503 refuses the create: nothing was made (already retried)
                unknown: WanError = exc  # a lost answer, or a 500/502/504
            else:
                try:
                    task = parse_created(
                        data,
                        base_url=session.base_url,
                        region=self._region_of(session.base_url),
                        model=model,
                        submitted_at=sent[0],
                        fp=fp,
                    )
                except APIError as exc:  # a 200 we cannot read: a task was made, id unknown
                    unknown = exc
                else:
                    self._adopt(task, key)
                    return task
            # The task may or may not exist: look it up before anything else.
            last = SubmitOutcomeUnknownError(
                f"The create for submission {sid} was sent but its outcome is unknown "
                f"({unknown}); a task may exist. It was not re-sent blindly.",
                fingerprint=fp,
                submission_id=sid,
                sent_at=sent[0],
                cause=unknown,
            )
            if not self.reconcile_enabled:
                raise last from unknown
            try:
                found = await self.reconcile(
                    body,
                    sent_at=sent[0],
                    error=last,
                    claimed=claimed,
                    base_url=session.base_url,
                    key=key,
                )
            except BaseException:
                # Cancelled (or failed) while looking: a task may exist that this client
                # does not know. Kept for the caller (see ``unresolved``).
                self.unresolved.append(last)
                raise
            if found is not None:
                return found
            logger.info("submission %s: the service has no such task; sending again", sid)
        raise SubmitOutcomeUnknownError(
            f"Submission {sid}: the create's outcome was unknown {MAX_CREATE_ROUNDS} times and "
            "each time the service provably had no task; giving up without sending again.",
            fingerprint=fp,
            submission_id=sid,
            cause=last,
        )

    def _region_of(self, base_url: str) -> str:
        if base_url in self._names:
            return self._names[base_url]
        for name, url in _config.REGION_BASE_URLS.items():
            if url == base_url:
                return name
        return "custom"

    def _adopt(self, task: Task, key: object = None) -> None:
        if key is not None:
            self.events.keys[task.task_id] = key
        self._claimed.add(task.task_id)
        self._created += 1
        self.scheduler.register_submission(task.task_id, task.base_url)
        self.events.emit("created", task.task_id)

    async def reconcile(
        self,
        body: Mapping[str, Any],
        *,
        sent_at: float,
        error: SubmitOutcomeUnknownError,
        claimed: Callable[[], Any] | None = None,
        base_url: str | None = None,
        key: object = None,
    ) -> Task | None:
        """Find the task a lost create made; ``None`` when provably none exists.

        Lists the account's tasks of the model (the last 24 h), skips those already
        claimed by this client or ``claimed()``, fetches the rest and matches the prompt
        (cut at 1500 characters as the service does).

        Raises:
            SubmitOutcomeUnknownError: with ``candidates`` when no single task matches
                and the absence cannot be proven.
        """
        from ._reconcile import find_lost_task

        # Lookups run in parallel (a candidate may take minutes to show its prompt);
        # only the claim is serialized, so two lost creates never adopt one task.
        await anyio.sleep(self.reconcile_grace)
        for _ in range(3):
            extra = set(await _maybe_await(claimed())) if claimed is not None else set()
            task = await find_lost_task(
                self,
                body,
                sent_at=sent_at,
                error=error,
                claimed=self._claimed | extra,
                base_url=base_url,
            )
            async with self._reconcile_lock:
                if task is None:
                    return None
                if task.task_id not in self._claimed:
                    self._reconciled += 1
                    self._adopt(task, key)
                    return task
            # Claimed meanwhile by another reconciliation: look again without it.
        raise error

    # --- query --------------------------------------------------------------------------

    def _ref(self, task: TaskLike) -> tuple[str, str | None]:
        if isinstance(task, str):
            if not task.strip():
                raise ValueError("task id is empty.")
            return task.strip(), None
        if isinstance(task, (Task, TaskResult)):
            return task.task_id, task.base_url
        if isinstance(task, TaskSummary):
            return task.task_id, None
        raise TypeError(f"expected a task id, Task or TaskResult, got {type(task).__name__}.")

    def task(self, task_id: str, *, region: str | None = None) -> Task:
        """A handle for a task id known from elsewhere (a log, a database).

        A task id lives only in the region that created it, and the id alone does not
        say which: the handle assumes ``region`` if given, else this client's default
        region (``handle.region`` says which), and every call on it goes there.
        """
        if not isinstance(task_id, str) or not task_id.strip():
            raise ValueError("task_id must be a non-empty string.")
        session = self.session_for_region(region) if region is not None else self._session
        return Task(
            task_id=task_id.strip(),
            status=TaskStatus.UNRECOGNIZED,
            base_url=session.base_url,
            region=self._names[session.base_url],
        )

    async def fetch(self, task: TaskLike) -> TaskResult:
        """Query a task once (``GET /tasks/{id}``), where it lives.

        A task id alone is assumed to live at this client's ``base_url``.
        """
        task_id, base = self._ref(task)
        result = await self._fetch(task_id, base, priority=-math.inf)
        self.scheduler.observe(result)
        return result

    async def _fetch(
        self, task_id: str, base_url: str | None, *, priority: float, max_retries: int | None = None
    ) -> TaskResult:
        session = self._session_for(base_url)
        _, data = await session.request(
            "query",
            "GET",
            f"{_config.PATH_TASKS}/{task_id}",
            priority=priority,
            task_id=task_id,
            max_retries=max_retries,
        )
        return parse_result(data, task_id=task_id, base_url=session.base_url)

    async def _poll(self, watch: Watch, priority: float) -> TaskResult:
        return await self._fetch(watch.task_id, watch.base_url, priority=priority, max_retries=0)

    def _on_status(self, result: TaskResult, previous: TaskStatus | None) -> None:
        self.events.emit(event_name(result.status), result.task_id, result)  # type: ignore[arg-type]

    async def wait(
        self, task: TaskLike, *, timeout: float | None = None, raise_on_failure: bool = True
    ) -> TaskResult:
        """Poll until the task is final (through the shared scheduler); return on SUCCEEDED.

        Deadlines belong to the caller: ``with anyio.fail_after(600): await
        client.wait(t)``. ``timeout=`` is a convenience that raises
        :class:`WaitTimeoutError` (the task goes on, on the server).

        Raises:
            TaskFailedError: FAILED (``code`` and ``message`` say why).
            TaskCanceledError: CANCELED.
            TaskNotFoundError: UNKNOWN (never existed here, or expired after 24 h).
        """
        task_id, base = self._ref(task)
        if base is None and isinstance(task, str):
            base = self.base_url
        if timeout is None:
            result = await self.scheduler.wait(task_id, base)
        else:
            with anyio.move_on_after(timeout) as scope:
                result = await self.scheduler.wait(task_id, base)
            if scope.cancelled_caught:
                raise WaitTimeoutError(
                    f"Task {task_id} was not final after {timeout}s; it goes on on the server.",
                    task_id=task_id,
                )
        if raise_on_failure:
            raise_for_status(result)
        return result

    async def call(
        self,
        request: VideoRequest | None = None,
        /,
        *,
        timeout: float | None = None,
        region: str | None = None,
        **fields: Any,
    ) -> TaskResult:
        """Create a task and wait for it, holding one of the governor's task slots."""
        req = self._build_request(request, fields)
        session = self.route(req, region)
        async with session.governor.task_slot():
            task = await self.async_call(req, region=self._names[session.base_url])
            return await self.wait(task, timeout=timeout)

    async def cancel(self, task: TaskLike) -> None:
        """Cancel a task; the service allows it only while PENDING.

        Raises:
            UnsupportedOperationError: the task is no longer PENDING.
        """
        task_id, base = self._ref(task)
        session = self._session_for(base)
        await session.request(
            "cancel", "POST", f"{_config.PATH_TASKS}/{task_id}/cancel", task_id=task_id
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
    ) -> AsyncIterator[TaskSummary]:
        """Iterate over every page of the task list (default: the last 24 h)::

            async for row in client.list_tasks(model="wan2.6-r2v-flash"):
                print(row.task_id, row.status)

        Arguments are checked at once; pages are fetched as you iterate.

        Args:
            start_time, end_time: a window of at most 24 h (naive values mean UTC).
            model: ``model_name`` filter; ``status``: a status filter.
        """
        if start_time is not None and end_time is not None:
            if end_time < start_time:
                raise ValueError("list_tasks: end_time is before start_time.")
            if (end_time - start_time).total_seconds() > 24 * 3600:
                raise ValueError("list_tasks: the window may be at most 24 hours.")
        if not 1 <= page_size <= 100:
            raise ValueError(f"list_tasks: page_size must be 1 to 100, got {page_size}.")
        params: dict[str, Any] = {"page_size": page_size}
        if task_id:
            params["task_id"] = task_id
        if model:
            params["model_name"] = model
        if status:
            params["status"] = status.value if isinstance(status, TaskStatus) else status
        if start_time is not None:
            params["start_time"] = format_list_time(start_time)
        if end_time is not None:
            params["end_time"] = format_list_time(end_time)
        return self._list_pages(params, max_items, base_url)

    async def _list_pages(
        self, params: dict[str, Any], max_items: int | None, base_url: str | None
    ) -> AsyncIterator[TaskSummary]:
        session = self._session_for(base_url)
        page_no, seen = 1, 0
        while True:
            _, data = await session.request(
                "list", "GET", _config.PATH_TASKS, params={**params, "page_no": page_no}
            )
            page = parse_list(data)
            for item in page.items:
                yield item
                seen += 1
                if max_items is not None and seen >= max_items:
                    return
            total_page = page.total_page
            if not page.items or (total_page is not None and page_no >= total_page):
                return
            if total_page is None and len(page.items) < params["page_size"]:
                return
            page_no += 1

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
    ) -> list[BatchItem]:
        """Run many requests at once under the governor; outcomes in input order.

        ``requests`` is a list (keys are indexes) or a mapping (keys are yours) of
        :class:`VideoRequest` or field dicts. Each outcome holds a result or an error;
        one failure does not cancel the rest unless ``fail_fast``. Never more than
        ``Limits.max_in_flight`` tasks are in flight. With a ``journal``, every
        submission is recorded before its create is sent (see :meth:`resume`).

        Args:
            on_cancel: when your scope is cancelled, ``"detach"`` leaves remote tasks
                running; ``"cancel_pending"`` cancels those still PENDING.
            spread: spread the items over every configured region that can serve
                them, least loaded first.
        """
        runner = BatchRunner(
            self,
            journal=journal,
            download_to=download_to,
            fail_fast=fail_fast,
            on_cancel=on_cancel,
            spread=spread,
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
    ) -> AbstractAsyncContextManager[AsyncIterator[BatchItem]]:
        """Like :meth:`run_many`, yielding each outcome as it completes::

        async with client.as_completed(requests) as results:
            async for item in results:
                print(item.key, item.ok)
        """
        runner = BatchRunner(
            self,
            journal=journal,
            download_to=download_to,
            fail_fast=fail_fast,
            on_cancel=on_cancel,
            spread=spread,
        )
        return runner.as_completed(requests)

    async def resume(
        self,
        journal: JournalStore,
        *,
        download_to: str | os.PathLike[str] | None = None,
        on_cancel: CancelPolicy = "detach",
    ) -> list[BatchItem]:
        """Finish a journaled batch after a crash: poll the tasks it knows, reconcile
        creates whose answer was lost (never re-sending one that exists), download."""
        runner = BatchRunner(self, journal=journal, download_to=download_to, on_cancel=on_cancel)
        return await runner.resume()

    # --- files --------------------------------------------------------------------------

    async def get_upload_policy(self, model: str, *, base_url: str | None = None) -> UploadPolicy:
        """A temporary-upload policy for ``model`` (``GET /uploads?action=getPolicy``)."""
        asked_at = anyio.current_time()  # its life counts from before the request
        _, data = await self._session_for(base_url).request(
            "policy", "GET", _config.PATH_UPLOADS, params={"action": "getPolicy", "model": model}
        )
        return parse_policy(data, obtained_at=asked_at)

    def _get_uploader(self, base_url: str | None = None) -> Uploader:
        session = self._session_for(base_url)
        uploader = self._uploaders.get(session.base_url)
        if uploader is None:
            from ._files import Uploader

            async def get_policy(model: str) -> UploadPolicy:
                return await self.get_upload_policy(model, base_url=session.base_url)

            uploader = Uploader(http=self._http, get_policy=get_policy)
            self._uploaders[session.base_url] = uploader
        return uploader

    def _get_downloader(self) -> Downloader:
        if self._downloader is None:
            from ._files import Downloader

            self._downloader = Downloader(http=self._http)
        return self._downloader

    async def download(self, task: TaskLike, dest: str | os.PathLike[str] = ".") -> Path:
        """Stream a succeeded task's video to ``dest`` (a file, or a folder: ``{task_id}.mp4``).

        A temporary file, then an atomic rename; a dropped connection resumes with
        ``Range``; an expired URL is refreshed by fetching the task again.

        Raises:
            ResultExpiredError: the URL expired and the task id is gone too.
            DownloadError: the video could not be saved.
        """
        if isinstance(task, TaskResult) and task.video_url:
            result = task
        else:
            result = await self.fetch(task)
            raise_for_status(result)

        async def refresh(old: TaskResult) -> TaskResult:
            fresh = await self._fetch(old.task_id, old.base_url, priority=-math.inf)
            return fresh

        path: Path = await self._get_downloader().download(result, Path(dest), refresh=refresh)
        return path

    # --- observation --------------------------------------------------------------------

    def subscribe(self, callback: Callable[[TaskEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every lifecycle event; returns an unsubscribe function."""
        return self.events.subscribe(callback)

    def event_stream(
        self, buffer: float = math.inf
    ) -> AbstractAsyncContextManager[MemoryObjectReceiveStream[TaskEvent]]:
        """``async with client.event_stream() as events: async for ev in events: ...``"""
        return self.events.stream(buffer)

    def statistics(self) -> ClientStatistics:
        """Requests sent by kind, answers by status, 429s, creates, reconciliations."""
        req: dict[str, int] = {}
        statuses: dict[int, int] = {}
        limited = 0
        for s in self._sessions.values():
            for k, v in s.requests_sent.items():
                req[k] = req.get(k, 0) + v
            for k2, v2 in s.status_counts.items():
                statuses[k2] = statuses.get(k2, 0) + v2
            limited += s.rate_limited
        return ClientStatistics(
            requests=req,
            statuses=statuses,
            rate_limited=limited,
            created=self._created,
            reconciled=self._reconciled,
            governor=self.governor.statistics(),
            scheduler=self.scheduler.statistics(),
            regions={
                self._names[url]: s.governor.statistics() for url, s in self._sessions.items()
            },
        )


def raise_for_status(result: TaskResult) -> TaskResult:
    """Return a SUCCEEDED (or unfinished) result; raise the typed error of a bad end."""
    common: dict[str, Any] = {
        "task_id": result.task_id,
        "request_id": result.request_id,
        "result": result,
    }
    if result.status is TaskStatus.FAILED:
        raise TaskFailedError(
            f"Task {result.task_id} FAILED: {result.code or 'no code'}: "
            f"{result.message or 'no message'}",
            status="FAILED",
            code=result.code,
            **common,
        )
    if result.status is TaskStatus.CANCELED:
        raise TaskCanceledError(f"Task {result.task_id} was CANCELED.", status="CANCELED", **common)
    if result.status is TaskStatus.UNKNOWN:
        raise TaskNotFoundError(
            f"Task {result.task_id} is UNKNOWN to the service: it never existed in this "
            "region, or it expired (task ids live 24 h).",
            status="UNKNOWN",
            **common,
        )
    return result


def _check_scheme(url: str, allow_insecure: bool) -> None:
    parsed = httpx.URL(url)
    if parsed.scheme == "http" and not allow_insecure and not _is_loopback(parsed.host):
        raise ConfigurationError(
            f"Refusing plain http:// to {parsed.host}: the API key would cross the network "
            "in clear. Use https://, or pass allow_insecure=True if you mean it."
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value
