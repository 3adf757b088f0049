"""AsyncWanClient: the verbs (create, fetch, wait, call, cancel, list, download)."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self, overload

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
from ._http import DEFAULT_MAX_RESPONSE_BYTES, ApiSession, lean_cookies, task_segment
from ._lean import LeanAsyncClient
from ._limits import Governor, GovernorStatistics, Limits, check_pool
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
from ._polling import PollPolicy, PollScheduler, SchedulerStatistics, Watch, event_name
from ._retry import RetryPolicy
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

    from ._download import Downloader
    from ._upload import Uploader
    from .journal import JournalStore

__all__ = ["AsyncWanClient", "ClientStatistics"]

logger = logging.getLogger("wanr2v")

TaskLike = Task | TaskResult | TaskSummary | str

MAX_CREATE_ROUNDS = 3
"""Sends of one submission whose earlier outcome was proven empty by reconciliation."""
DEFAULT_MAX_VIDEO_BYTES = 1024**3
"""Cap of one downloaded video: 1 GiB (a 15 s 1080p result is a few tens of MB)."""
DEFAULT_MAX_LIST_PAGES = 200
"""Pages one listing may take (20,000 tasks at 100 a page: more than a day's worth
at the vendor's limit of 5 tasks at once); past it, the listing is refused."""


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
        if not (isinstance(time_scale, (int, float)) and time_scale > 0):
            raise ConfigurationError(f"time_scale must be > 0, got {time_scale!r}.")
        if time_scale != 1:
            # An emulator running time_scale x faster: rates, polling and waits to match.
            limits = (limits or Limits()).scaled(time_scale) if governor is None else limits
            poll_policy = (poll_policy or PollPolicy()).scaled(time_scale)
            reconcile_wait = reconcile_wait / time_scale
        self.time_scale: float = float(time_scale)
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
        if max_response_bytes < 1024:
            raise ConfigurationError(
                f"max_response_bytes must be >= 1024, got {max_response_bytes!r}."
            )
        if max_video_bytes is not None and max_video_bytes < 1:
            raise ConfigurationError(f"max_video_bytes must be >= 1, got {max_video_bytes!r}.")
        self._max_response_bytes = max_response_bytes
        self._max_video_bytes = max_video_bytes
        self._keys: dict[str, str] = {}
        self._sessions: dict[str, ApiSession] = {}
        self._names: dict[str, str] = {}
        from ._hosts import local_files_policy
        from ._storage import resolve_storage_uri

        self.local_files = local_files_policy(local_files)
        self.storage_uri: str | None = resolve_storage_uri(storage_uri)
        self._shared: list[Any] = []
        self._session = self._add_session(self.base_url, key, self.region, self.governor)
        for name, spec in extra_regions.items():
            if name == self.region:
                continue
            _, url = _config.resolve_base_url(name, spec.base_url, env=False)
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
        if not reconcile_settle >= 0:
            raise ConfigurationError(
                f"reconcile_settle must be >= 0 seconds, got {reconcile_settle!r}."
            )
        self.reconcile_settle = reconcile_settle
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
        try:
            for shared in self._shared:
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
        if self._closed:
            return
        self._closed = True
        for shared in self._shared:
            await shared.aclose()
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
        retry = (
            self._retry
            if max_retries is None
            else attrs.evolve(self._retry, max_retries=max_retries)
        )
        other._retry = retry
        sessions: dict[str, ApiSession] = {}
        for url, session in self._sessions.items():
            clone = copy.copy(session)  # shares the counters (dicts) and the governor
            clone.retry = retry
            if timeout is not None:
                clone.timeout = timeout
                clone.deadline = float(timeout)
            sessions[url] = clone
        other._sessions = sessions
        other._session = sessions[self._session.base_url]
        return other

    def _add_session(self, base_url: str, key: str, name: str, governor: Governor) -> ApiSession:
        self._keys[base_url] = key
        if self.storage_uri is not None and governor.shared is None:
            from ._storage import open_storage

            governor.shared = open_storage(self.storage_uri, api_key=key, region=base_url)
            self._shared.append(governor.shared)
        session = ApiSession(
            http=self._http,
            api_key=key,
            base_url=base_url,
            governor=governor,
            retry=self._retry,
            workspace=self.workspace,
            max_response_bytes=self._max_response_bytes,
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

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigurationError(
                "This client is closed (its `async with` block ended, or aclose() was "
                "called): make a new one."
            )

    def _session_for(self, base_url: str | None) -> ApiSession:
        self._check_open()
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

    async def prepare(
        self, request: VideoRequest, *, base_url: str | None = None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The wire body and extra headers for ``request`` (local files uploaded first,
        to the temporary storage of the region at ``base_url``)."""
        headers: dict[str, str] = {}
        refs: list[str] | None = None
        if request.local_references:
            from ._hosts import check_local_files

            await check_local_files(request, self.local_files)
            refs, uses_oss = await self._get_uploader(base_url).resolve(request)
        else:
            refs = [os.fspath(r) for r in request.reference_urls]
            uses_oss = any(r.startswith("oss://") for r in refs)
        if uses_oss:
            headers["X-DashScope-OssResourceResolve"] = "enable"
        return request_body(request, refs), headers

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
        req = _build_request(
            "async_call",
            request,
            dict(
                model=model,
                prompt=prompt,
                reference_urls=reference_urls,
                negative_prompt=negative_prompt,
                size=size,
                duration=duration,
                shot_type=shot_type,
                audio=audio,
                watermark=watermark,
                seed=seed,
                prompt_extend=prompt_extend,
                extra_input=extra_input,
                extra_parameters=extra_parameters,
            ),
        )
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
        """Send a prepared create body with the safe-create rule (see `async_call`).

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
                if isinstance(exc, TransportError) and not exc.maybe_sent:
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
            except BaseException as exc:
                # Cancelled (or failed) while looking: a task may exist that this client
                # does not know. Kept for the caller (see ``unresolved``).
                self.unresolved.append(exc if isinstance(exc, SubmitOutcomeUnknownError) else last)
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

        Lists the account's tasks of the model since the create was sent, skips those
        already claimed by this client or ``claimed()``, fetches the rest and matches
        every signal the service echoes (model, creation time, prompt after the
        service's normalization, size and duration). No task is proof only from a
        listing sent ``reconcile_settle`` after this call (see ``wanr2v._reconcile``).

        Raises:
            SubmitOutcomeUnknownError: with ``candidates`` when no single task matches
                and the absence cannot be proven.
        """
        from ._reconcile import find_lost_task

        # Lookups run in parallel (a candidate may take minutes to show its prompt);
        # only the claim is serialized, so two lost creates never adopt one task.
        settle_until = time.time() + self.reconcile_settle / self.scheduler.policy.time_scale
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
                settle_until=settle_until,
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
            f"{_config.PATH_TASKS}/{task_segment(task_id)}",
            priority=priority,
            task_id=task_id,
            max_retries=max_retries,
        )
        return parse_result(data, task_id=task_id, base_url=session.base_url)

    async def _poll(self, watch: Watch, priority: float) -> TaskResult:
        shared = self._session_for(watch.base_url).governor.shared
        if shared is None:
            return await self._fetch(
                watch.task_id, watch.base_url, priority=priority, max_retries=0
            )
        # A fleet shares its polls: an answer another worker got less than min_interval
        # ago (the scheduler's own floor between two polls of a task) is used as is.
        session = self._session_for(watch.base_url)
        fresh = self.scheduler.policy.min_interval / self.scheduler.policy.time_scale
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
        self.events.emit(event_name(result.status), result.task_id, result)  # type: ignore[arg-type]

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
        task_id, base = self._ref(task)
        if base is None and isinstance(task, str):
            base = self.base_url
        if on_event is not None:
            unsubscribe = self.subscribe(_only(task_id, on_event))
            try:
                return await self.wait(task, timeout=timeout, raise_on_failure=raise_on_failure)
            finally:
                unsubscribe()
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
        req = _build_request(
            "call",
            request,
            dict(
                model=model,
                prompt=prompt,
                reference_urls=reference_urls,
                negative_prompt=negative_prompt,
                size=size,
                duration=duration,
                shot_type=shot_type,
                audio=audio,
                watermark=watermark,
                seed=seed,
                prompt_extend=prompt_extend,
                extra_input=extra_input,
                extra_parameters=extra_parameters,
            ),
        )
        session = self.route(req, region)
        async with session.governor.task_slot():
            task = await self.async_call(req, region=self._names[session.base_url])
            if on_event is not None:
                on_event(TaskEvent(kind="created", task_id=task.task_id, at=time.time()))
            return await self.wait(task, timeout=timeout, on_event=on_event)

    async def cancel(self, task: TaskLike) -> None:
        """Cancel a task; the service allows it only while PENDING.

        Raises:
            UnsupportedOperationError: the task is no longer PENDING.
        """
        task_id, base = self._ref(task)
        session = self._session_for(base)
        await session.request(
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
        max_pages: int = DEFAULT_MAX_LIST_PAGES,
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
        if start_time is not None and end_time is not None:
            if end_time < start_time:
                raise ValueError("list_tasks: end_time is before start_time.")
            if (end_time - start_time).total_seconds() > 24 * 3600:
                raise ValueError("list_tasks: the window may be at most 24 hours.")
        if not 1 <= page_size <= 100:
            raise ValueError(f"list_tasks: page_size must be 1 to 100, got {page_size}.")
        if max_pages < 1:
            raise ValueError(f"list_tasks: max_pages must be >= 1, got {max_pages}.")
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
        return self._list_pages(params, max_items, base_url, max_pages)

    async def _list_pages(
        self, params: dict[str, Any], max_items: int | None, base_url: str | None, max_pages: int
    ) -> AsyncIterator[TaskSummary]:
        session = self._session_for(base_url)
        page_no, seen = 1, 0
        pages_seen: set[tuple[str, ...]] = set()
        while True:
            if page_no > max_pages:
                raise APIError(
                    f"The task list did not end within max_pages={max_pages} pages; "
                    "the listing was stopped (it is incomplete).",
                    status_code=200,
                    code="MalformedResponse",
                )
            _, data = await session.request(
                "list", "GET", _config.PATH_TASKS, params={**params, "page_no": page_no}
            )
            page = parse_list(data)
            ids = tuple(item.task_id for item in page.items)
            if ids and ids in pages_seen:
                raise APIError(
                    f"The task list repeated an earlier page as page {page_no}; the listing "
                    "was stopped (the service's paging cannot be trusted).",
                    status_code=200,
                    code="MalformedResponse",
                )
            pages_seen.add(ids)
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
        runner = BatchRunner(
            self,
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
        runner = BatchRunner(
            self,
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
        runner = BatchRunner(
            self,
            journal=journal,
            download_to=download_to,
            on_cancel=on_cancel,
            retry_failed=retry_failed,
            name=name,
            budget_usd=budget_usd,
        )
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
            from ._upload import Uploader

            async def get_policy(model: str) -> UploadPolicy:
                return await self.get_upload_policy(model, base_url=session.base_url)

            uploader = Uploader(
                http=self._http, get_policy=get_policy, check_media=True, retry_policy=self._retry
            )
            self._uploaders[session.base_url] = uploader
        # Shared by with_options copies (one cache, one set of slots): each uses its policy.
        return uploader.with_retry_policy(self._retry)

    def _get_downloader(self) -> Downloader:
        if self._downloader is None:
            from ._download import Downloader

            self._downloader = Downloader(
                http=self._http, max_bytes=self._max_video_bytes, retry_policy=self._retry
            )
        return self._downloader.with_retry_policy(self._retry)

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
        session = self._session if region is None else self.session_for_region(region)
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
        self._check_open()
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
        self._check_open()
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


def _build_request(
    where: str, request: VideoRequest | None, fields: Mapping[str, Any]
) -> VideoRequest:
    given = {k: v for k, v in fields.items() if v is not None}
    if request is not None:
        if given:
            raise TypeError(
                f"{where}: pass either a VideoRequest or keyword fields, not both "
                f"(got extra {', '.join(sorted(given))})."
            )
        if not isinstance(request, VideoRequest):
            raise TypeError(
                f"{where}: request must be a VideoRequest, got {type(request).__name__}."
            )
        return request
    # The required fields go through even when None: the request's own check names the
    # one missing (InvalidRequestError, nothing sent), as VideoRequest(...) does.
    required = {name: fields.get(name) for name in ("model", "prompt", "reference_urls")}
    return VideoRequest(**{**given, **required})


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


def _only(task_id: str, callback: Callable[[TaskEvent], object]) -> Callable[[TaskEvent], object]:
    def deliver(event: TaskEvent) -> object:
        return callback(event) if event.task_id == task_id else None

    return deliver


async def _maybe_await(value: Any) -> Any:
    if hasattr(value, "__await__"):
        return await value
    return value
