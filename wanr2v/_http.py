"""One request path to the DashScope API: auth, pacing, retries and error mapping.

httpx exceptions are translated here and nowhere else. The retry rule is about
money: a query, list or cancel may be sent again; a create only when the service
provably made nothing (no connection, or a 429 / 503 answer); the rule and the
backoff live in ``_retry``, shared with uploads and downloads. A create whose
answer was lost raises with ``maybe_sent=True`` and the caller reconciles. A 429
that waiting does not clear (a quota used up, an account in arrears:
`is_quota_exhausted`) is raised at once, never retried.

Bounds that hold whatever the server does (guarantees, not hopes):

- **Time.** One exchange (connect, send, read the whole answer) gets one deadline,
  ``deadline`` seconds (the client's ``timeout``), however slowly the answer
  dribbles in; past it, `RequestTimeoutError` (``maybe_sent=True``).
  A shielded create is bounded the same way: a caller's cancellation waits at most
  that long, then the create's outcome is unknown and is reconciled. A call with
  retries takes at most ``(max_retries + 1) x deadline`` plus the backoffs.
- **Memory.** An answer is read up to ``max_response_bytes`` (default 4 MiB, after
  decompression) and no further: `ResponseTooLargeError`. When the
  server states a ``Content-Length`` (and no compression) the cap is checked before
  reading; otherwise the bytes are counted as they arrive.
- **Secrets.** Server text that an error or a log line is built from is scrubbed of
  the key (and of any ``Bearer`` token) first, so a server echoing the request's
  headers cannot leak the key through an exception.
- **Paths.** A task id goes into a URL as one escaped path segment
  (`task_segment`); ``..`` or a ``/`` never reach another path.
"""

from __future__ import annotations

import builtins
import email.utils
import json as jsonlib
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import anyio
import httpx

from ._config import DEFAULT_TIMEOUT, mask_key
from ._exceptions import (
    APIError,
    ConnectError,
    InvalidRequestError,
    QuotaExhaustedError,
    RequestTimeoutError,
    ResponseTooLargeError,
    TransportError,
    error_for,
    scrub,
)
from ._lean import AnswerTooLarge, read_capped
from ._limits import Governor, Kind
from ._retry import RetryPolicy, parse_retry_after, retryable_error, retryable_status
from ._version import __version__
from ._wire import parse_error_body

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "USER_AGENT",
    "ApiSession",
    "lean_cookies",
    "task_segment",
]

logger = logging.getLogger("wanr2v")

USER_AGENT: Final = f"wanr2v/{__version__} (+httpx/{httpx.__version__})"

URL_CACHE_SIZE: Final = 1024
"""Parsed request URLs kept per session (the create URL, recent tasks' query URLs)."""

DEFAULT_MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
"""Cap of one API answer (decoded). A full list page is about 50 kB; a task about 2 kB."""
MAX_TASK_ID_LENGTH: Final = 256


def translate(
    exc: httpx.HTTPError, *, method: str, url: str, secrets: Iterable[str] = ()
) -> TransportError:
    """An httpx exception as a wanr2v one; ``maybe_sent`` says if the request may have
    reached the service (then a create may have made a task)."""
    text = scrub(f"{type(exc).__name__} on {method} {url}: {exc}".rstrip(": "), secrets)
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):
        return ConnectError(text, method=method, url=url)
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeoutError(text, method=method, url=url)
    return TransportError(text, method=method, url=url)


def task_segment(task_id: str) -> str:
    """``task_id`` as one escaped URL path segment.

    Raises:
        InvalidRequestError: empty, ``.`` or ``..``, a control character, or longer
            than 256 characters: not a task id, and nothing is sent.
    """
    if (
        not task_id
        or task_id in (".", "..")
        or len(task_id) > MAX_TASK_ID_LENGTH
        or not task_id.isprintable()
    ):
        shown = repr(task_id[:60]) + ("..." if len(task_id) > 60 else "")
        raise InvalidRequestError(f"Not a task id: {shown}.", field="task_id")
    return urllib.parse.quote(task_id, safe="-_.~")


def _explain(status: int, message: str | None, base_url: str, kind: str) -> str | None:
    """The service's words, plus what a user can do about a refused key or a wrong URL."""
    host = httpx.URL(base_url).host
    if status == 401:
        return (
            f"{message or 'Unauthorized'} (sent to {host}): an API key belongs to one region; "
            "check that DASHSCOPE_API_KEY is a key of this host's region, or pick the "
            "region of your key (region=... / --region)."
        )
    if status == 404 and kind != "query" and not base_url.endswith("/api/v1"):
        return (
            f"{message or 'Not found'} (from {base_url}): is the base URL right? "
            "DashScope's API lives under /api/v1."
        )
    return message


class _LeanCookies(httpx.Cookies):
    """httpx's cookie jar, minus its per-answer cost when there is nothing to store:
    ``extract_cookies`` builds urllib request and response adapters for every answer
    (about a tenth of httpx's CPU per request), even one without ``Set-Cookie``."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


def lean_cookies(http: httpx.AsyncClient) -> None:
    """Give an http client this package made the lean jar above (cookies kept as is)."""
    jar = getattr(http, "_cookies", None)  # httpx's own attribute: checked, not assumed
    if type(jar) is httpx.Cookies:
        http._cookies = _LeanCookies(jar)


def _header_request_id(resp: httpx.Response) -> str | None:
    rid: str | None = resp.headers.get("x-request-id") or resp.headers.get("x-dashscope-request-id")
    return rid


class ApiSession:
    """Sends API requests for one key and base URL, through a governor.

    Args:
        http: the shared httpx client (its default headers carry no key: auth is added
            per request, so the upload and video hosts never see it).
        api_key: the key (kept private; masked in reprs).
        base_url: ``https://…/api/v1``.
        governor: paces every call.
        retry: the retry policy.
        workspace: sent as ``X-DashScope-WorkSpace``.
        deadline: seconds for one whole exchange (default: ``http``'s read timeout).
        max_response_bytes: cap of one answer's body, decoded.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        api_key: str,
        base_url: str,
        governor: Governor,
        retry: RetryPolicy,
        workspace: str | None = None,
        deadline: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self.http = http
        self._api_key = api_key
        self._secrets = (api_key,)
        self._key_bytes = api_key.encode()
        self.base_url: str = base_url.rstrip("/")
        self.governor = governor
        self.retry = retry
        self.workspace = workspace
        if deadline is None:
            deadline = http.timeout.read or DEFAULT_TIMEOUT
        if not deadline > 0:
            raise ValueError(f"deadline must be > 0 seconds, got {deadline!r}.")
        if max_response_bytes < 1024:
            raise ValueError(f"max_response_bytes must be >= 1024, got {max_response_bytes!r}.")
        self.deadline: float = float(deadline)
        self.max_response_bytes: int = max_response_bytes
        self.requests_sent: dict[str, int] = {}
        self.status_counts: dict[int, int] = {}
        self.rate_limited: int = 0
        self.server_clock: tuple[float, float] | None = None
        """``(local UNIX time, server UNIX time)`` from the last answer's ``Date`` header."""
        self.timeout: float | None = None
        """Seconds for one request instead of the HTTP client's (``with_options``)."""
        # Hot path: the headers of each kind are built once (read-only views), and the
        # last Date header's parse is kept (it changes once a second).
        plain = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT}
        if workspace:
            plain["X-DashScope-WorkSpace"] = workspace
        create = {**plain, "Content-Type": "application/json", "X-DashScope-Async": "enable"}
        self._headers_plain: Mapping[str, str] = MappingProxyType(plain)
        self._headers_create: Mapping[str, str] = MappingProxyType(create)
        self._last_date: tuple[str, float] | None = None
        self._urls: dict[str, httpx.URL] = {}

    def _target(self, url: str) -> httpx.URL:
        """``url`` parsed, kept for its next use: httpx parses a ``str`` URL on every
        request (tens of µs), and a task's query URL recurs at each of its polls."""
        cache = self._urls
        target = cache.get(url)
        if target is None:
            if len(cache) >= URL_CACHE_SIZE:
                del cache[next(iter(cache))]  # the oldest
            target = cache[url] = httpx.URL(url)
        return target

    def __repr__(self) -> str:
        return f"ApiSession(base_url={self.base_url!r}, api_key={mask_key(self._api_key)!r})"

    def scrub(self, text: str) -> str:
        """``text`` without this session's key (nor any ``Bearer`` token)."""
        return scrub(text, self._secrets)

    def _note_date(self, value: str | None) -> None:
        if not value:
            return
        last = self._last_date
        if last is not None and last[0] == value:
            server = last[1]
        else:
            try:
                server = email.utils.parsedate_to_datetime(value).timestamp()
            except (TypeError, ValueError, IndexError, OverflowError):
                return
            self._last_date = (value, server)
        self.server_clock = (time.time(), server)

    def headers(self, kind: Kind, extra: Mapping[str, str] | None = None) -> Mapping[str, str]:
        """The headers of one call of ``kind`` (auth per request, never on the client).

        Without ``extra`` this is a shared read-only mapping, built once.
        """
        base = self._headers_create if kind == "create" else self._headers_plain
        if not extra:
            return base
        return {**base, **extra}

    async def _exchange(
        self,
        method: str,
        url: str,
        json: Any,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str],
    ) -> tuple[httpx.Response, bytes]:
        """Send and read the whole answer, at most ``max_response_bytes`` of it.

        wanr2v's own HTTP clients (``LeanAsyncClient``, ``AioHttpClient``) send a plain
        request on their lean path; any other client, or a request with ``params`` or a
        per-call timeout, takes httpx's streaming path. Both read through the same cap.
        """
        cap = self.max_response_bytes
        try:
            lean = getattr(self.http, "lean_exchange", None)
            if lean is not None and params is None and self.timeout is None:
                done = await lean(
                    method, self._target(url), json=json, headers=headers, max_bytes=cap
                )
                if done is not None:
                    response, content = done
                    return response, content
            request = self.http.build_request(
                method,
                url,
                json=json,
                params=params,
                headers=headers,
                timeout=httpx.USE_CLIENT_DEFAULT if self.timeout is None else self.timeout,
            )
            resp = await self.http.send(request, stream=True)
            try:
                return resp, await read_capped(resp, cap)
            finally:
                if not resp.is_closed:  # a whole read closes it already (the common case)
                    with anyio.CancelScope(shield=True):
                        await resp.aclose()
        except AnswerTooLarge as exc:
            raise self._too_large(method, url, exc.what) from None

    def _too_large(self, method: str, url: str, what: str) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            f"The answer to {method} {url} was too large ({what}; the cap is "
            f"max_response_bytes={self.max_response_bytes}); reading stopped.",
            limit=self.max_response_bytes,
            method=method,
            url=url,
        )

    async def request(
        self,
        kind: Kind,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: float = 0.0,
        task_id: str | None = None,
        max_retries: int | None = None,
        before_send: Callable[[], Awaitable[object]] | None = None,
        shield_exchange: bool = False,
    ) -> tuple[httpx.Response, Any]:
        """Send one API call with the retry rule of its ``kind``; return the answer and JSON.

        ``before_send`` is awaited right before each attempt goes out, after the
        governor's pacing (a journal records a create as sent there, not while it
        still waits for its turn). ``shield_exchange`` sees each exchange through to
        its answer even if the caller is cancelled, for at most ``deadline`` seconds
        (the pacing before it stays cancellable): a create that went out must not
        leave a paid task nobody knows of. The returned response's body has been read
        (and closed); use the returned JSON.

        Raises:
            APIError: (a subclass) for an error answer, after the allowed retries.
            TransportError: when the exchange broke, timed out (``RequestTimeoutError``)
                or answered too much (``ResponseTooLargeError``); ``maybe_sent`` tells
                if it may have reached the service.
        """
        url = f"{self.base_url}/{path.lstrip('/')}"
        tries = self.retry.max_retries if max_retries is None else max_retries
        hdrs = self.headers(kind, headers)
        attempt = 0
        while True:
            await self.governor.acquire(kind, priority=priority)
            started = anyio.current_time()
            err: TransportError | None = None
            try:
                async with self.governor.http_slot(kind, priority):
                    with anyio.CancelScope(shield=shield_exchange):
                        if before_send is not None:
                            await before_send()
                        self.requests_sent[kind] = self.requests_sent.get(kind, 0) + 1
                        # One deadline for the whole exchange (a plain scope: cheaper
                        # than fail_after's generator; the same semantics).
                        with anyio.CancelScope(
                            deadline=anyio.current_time() + self.deadline
                        ) as deadline:
                            resp, body = await self._exchange(method, url, json, params, hdrs)
                        if deadline.cancelled_caught:
                            raise builtins.TimeoutError
            except httpx.HTTPError as exc:
                err = translate(exc, method=method, url=url, secrets=self._secrets)
                cause: BaseException = exc
            except builtins.TimeoutError as exc:  # the exchange's deadline
                err = RequestTimeoutError(
                    f"No whole answer to {method} {url} within {self.deadline:g}s.",
                    method=method,
                    url=url,
                )
                cause = exc
            except ResponseTooLargeError as exc:
                err = exc
                cause = exc
            if err is not None:
                retryable = retryable_error(err, create=kind == "create")
                if retryable and attempt < tries:
                    delay = self.retry.backoff(attempt, None)
                    logger.info(
                        "%s %s: %s; retry %d/%d in %.2fs",
                        method,
                        path,
                        type(cause).__name__,
                        attempt + 1,
                        tries,
                        delay,
                    )
                    attempt += 1
                    await anyio.sleep(delay)
                    continue
                if retryable and tries:  # with no retries asked, the caller decides
                    logger.warning(
                        "%s %s: giving up after %d attempts: %s",
                        method,
                        path,
                        attempt + 1,
                        type(cause).__name__,
                    )
                if err is cause:
                    raise err
                raise err from cause
            elapsed = anyio.current_time() - started
            status = resp.status_code
            if kind != "query" or self.server_clock is None:  # creates matter (reconcile)
                self._note_date(resp.headers.get("date"))
            self.status_counts[status] = self.status_counts.get(status, 0) + 1
            if self._key_bytes and self._key_bytes in body:  # echoed back: never passed on
                body = body.replace(self._key_bytes, b"***")
            if status == 200:
                try:
                    data = jsonlib.loads(body) if body else None
                except (ValueError, RecursionError):  # a deeply nested body is malformed too
                    data = None
                if logger.isEnabledFor(logging.DEBUG):  # no header lookups for nothing
                    rid = _header_request_id(resp)
                    if isinstance(data, dict):
                        rid = data.get("request_id", rid)
                    logger.debug(
                        "%s %s -> %d request_id=%s %.0fms",
                        method,
                        path,
                        status,
                        rid,
                        elapsed * 1000,
                    )
                return resp, data
            rid = _header_request_id(resp)
            code, message, body_rid = parse_error_body(body)
            # Server text: scrubbed before it reaches an error or a log line.
            code = self.scrub(code) if code else code
            message = self.scrub(message) if message else message
            rid = body_rid or rid
            rid = self.scrub(rid) if rid else rid
            retry_after = parse_retry_after(resp.headers.get("retry-after"))
            logger.debug(
                "%s %s -> %d %s request_id=%s %.0fms",
                method,
                path,
                status,
                code,
                rid,
                elapsed * 1000,
            )
            message = _explain(status, message, self.base_url, kind)
            error: APIError = error_for(
                status, code, message, request_id=rid, task_id=task_id, retry_after=retry_after
            )
            if isinstance(error, QuotaExhaustedError):
                self.rate_limited += 1
                logger.warning(
                    "%s %s -> %d %s: not retried (waiting does not clear it)",
                    method,
                    path,
                    status,
                    code,
                )
                raise error
            if status == 429:
                self.rate_limited += 1
                self.governor.throttled(kind, retry_after)
            allowed = retryable_status(status, create=kind == "create")
            if allowed and attempt < tries:
                # A 429's pause is taken by the governor (shared by every caller);
                # the backoff here only spreads the retries.
                delay = 0.0 if status == 429 else self.retry.backoff(attempt, retry_after)
                logger.info(
                    "%s %s -> %d %s; retry %d/%d in %.2fs",
                    method,
                    path,
                    status,
                    code,
                    attempt + 1,
                    tries,
                    delay,
                )
                attempt += 1
                if delay:
                    await anyio.sleep(delay)
                continue
            if allowed and tries:  # with no retries asked, the caller decides
                logger.warning(
                    "%s %s -> %d %s: giving up after %d attempts",
                    method,
                    path,
                    status,
                    code,
                    attempt + 1,
                )
            raise error
