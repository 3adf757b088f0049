"""The wanr2v error tree: classes by what the caller can do.

::

    WanError
    ├── ConfigurationError (ValueError)   no key, bad region, bad base URL: fix your setup
    ├── InvalidRequestError (ValueError)  a request refused locally, before anything is sent
    ├── TransportError                    the HTTP exchange itself broke
    │   ├── ConnectError                  nothing reached the service (safe to retry)
    │   ├── RequestTimeoutError (TimeoutError)  no whole answer within the deadline
    │   └── ResponseTooLargeError         the answer exceeded its size cap
    ├── APIError                          the service answered with an error code
    │   ├── BadRequestError (400)
    │   │   ├── InvalidParameterError     InvalidParameter*, InvalidFile.*
    │   │   ├── ContentModerationError    DataInspectionFailed, IPInfringementSuspect
    │   │   ├── UnsupportedOperationError cancel of a task that is not PENDING
    │   │   └── ArrearageError            the account is overdue
    │   ├── AuthenticationError (401)     missing, wrong or other-region key
    │   ├── PermissionDeniedError (403)   no access, free tier used up, async header
    │   ├── NotFoundError (404)
    │   ├── RateLimitError (429)          carries ``retry_after`` when the service gave one
    │   │   └── QuotaExhaustedError       a 429 that waiting does not clear (quota, arrears)
    │   └── ServerError (5xx)
    │       └── ServiceUnavailableError (503)
    ├── SubmitOutcomeUnknownError         a create may or may not have made a (paid) task
    ├── WaitTimeoutError (TimeoutError)   ``wait(timeout=...)`` ran out; the task goes on
    ├── TaskError                         a task ended in a state other than SUCCEEDED
    │   ├── TaskFailedError               FAILED, with the task's code and message
    │   ├── TaskCanceledError             CANCELED
    │   └── TaskNotFoundError             UNKNOWN: never existed, or expired (24 h)
    ├── ResultExpiredError                the video URL and the task id are both gone
    ├── UploadError                       a local reference could not be uploaded
    └── DownloadError                     a result could not be saved

Every attribute a class documents is declared on it with its type and set by its
constructor: an exception is built whole, never patched afterwards (use
`SubmitOutcomeUnknownError.evolve` for a richer copy). Every API error carries
``status_code``, ``code``, ``message`` and ``request_id``; every task error carries
``task_id``. Map an answer to a class with `error_for`.

Text that came from the server (an error's ``message`` and ``code``) is scrubbed of
the API key before an error is built (`scrub`): a server that echoes the
request's ``Authorization`` header cannot put the key into an exception, a log line,
a journal or the CLI's output.

Where several errors happen at once (a task group), `collapse_group` raises the
first meaningful one, with the others listed in its ``__notes__``: no
``ExceptionGroup`` reaches a user of the public API.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import TaskResult

__all__ = [
    "APIError",
    "ArrearageError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConnectError",
    "ContentModerationError",
    "DownloadError",
    "InvalidParameterError",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExhaustedError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ResultExpiredError",
    "ServerError",
    "ServiceUnavailableError",
    "SubmitOutcomeUnknownError",
    "TaskCanceledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TransportError",
    "UnsupportedOperationError",
    "UploadError",
    "WaitTimeoutError",
    "WanError",
    "collapse_group",
    "collapsing_groups",
    "error_for",
    "is_quota_exhausted",
    "scrub",
]


class WanError(Exception):
    """Base of every error wanr2v raises on purpose.

    Attributes:
        message: what happened and, where it helps, what to do.
    """

    message: str

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigurationError(WanError, ValueError):
    """The client is set up wrongly (no key, unknown region, bad URL)."""


class InvalidRequestError(WanError, ValueError):
    """A request was refused locally, before anything was sent.

    Attributes:
        field: the offending field, e.g. ``"parameters.duration"``.
    """

    field: str | None

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TransportError(WanError):
    """The HTTP exchange broke (connection refused, reset, timed out, answer too big).

    Attributes:
        method: the HTTP method, when known.
        url: the URL (never carries the key: auth travels in a header).
        maybe_sent: whether the request may have reached the service. For a create,
            ``True`` means a (paid) task may exist: reconcile, never re-send blindly.
        request_id: always ``None`` (no answer was read); here so that every error a
            call raises can be asked for it.
    """

    method: str | None
    url: str | None
    maybe_sent: bool
    request_id: str | None

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        maybe_sent: bool = True,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.url = url
        self.maybe_sent = maybe_sent
        self.request_id = None


class ConnectError(TransportError):
    """No connection could be made: the request never reached the service."""

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(message, method=method, url=url, maybe_sent=maybe_sent)


class RequestTimeoutError(TransportError, builtins.TimeoutError):
    """No whole answer within the request's deadline (``timeout``), however the server
    dribbled it. Also a builtin `TimeoutError`, so ``except TimeoutError`` catches
    it. (Formerly ``wanr2v.TimeoutError``, which shadowed the builtin.)"""


class ResponseTooLargeError(TransportError):
    """The answer was larger than its cap (``max_response_bytes`` for the API, the
    downloader's ``max_video_bytes`` for a video); reading stopped at the cap.

    Attributes:
        limit: the cap, bytes.
    """

    limit: int

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        method: str | None = None,
        url: str | None = None,
        maybe_sent: bool = True,
    ) -> None:
        super().__init__(message, method=method, url=url, maybe_sent=maybe_sent)
        self.limit = limit


class APIError(WanError):
    """The service answered with an error code.

    Attributes:
        status_code: the HTTP status.
        code: DashScope's error code, e.g. ``"InvalidParameter"``.
        request_id: the service's request id, for support tickets.
        task_id: the task concerned, where there is one.
    """

    status_code: int
    code: str | None
    request_id: str | None
    task_id: str | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.request_id = request_id
        self.task_id = task_id

    def __str__(self) -> str:
        parts = [f"HTTP {self.status_code}"]
        if self.code:
            parts.append(self.code)
        text = f"{' '.join(parts)}: {self.message}"
        if self.request_id:
            text += f" (request_id={self.request_id})"
        return text


class BadRequestError(APIError):
    """400: the request is wrong; sending it again will not help."""


class InvalidParameterError(BadRequestError):
    """400 ``InvalidParameter*`` or ``InvalidFile.*``: a field or a reference is out of bounds."""


class ContentModerationError(BadRequestError):
    """400 ``DataInspectionFailed`` / ``IPInfringementSuspect``: content was refused."""


class UnsupportedOperationError(BadRequestError):
    """400 ``UnsupportedOperation``: e.g. cancel of a task that is no longer PENDING."""


class ArrearageError(BadRequestError):
    """400 ``Arrearage``: the account is overdue."""


class AuthenticationError(APIError):
    """401: the key is missing, wrong, or belongs to another region."""


class PermissionDeniedError(APIError):
    """403: no access to the model, free tier used up, or a synchronous call."""


class NotFoundError(APIError):
    """404: unknown model or resource."""


class RateLimitError(APIError):
    """429: over a rate limit; clears within about a minute (retried before it is raised).

    Attributes:
        retry_after: seconds the service asked to wait, when it said.
    """

    retry_after: float | None

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 429,
        code: str | None = None,
        request_id: str | None = None,
        task_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            message, status_code=status_code, code=code, request_id=request_id, task_id=task_id
        )
        self.retry_after = retry_after


class QuotaExhaustedError(RateLimitError):
    """429 that waiting does not clear: a quota used up (free, hourly or longer) or an
    account in arrears. Never retried; top up, raise the quota or wait for its window."""


class ServerError(APIError):
    """5xx: the service failed; safe requests are retried before this is raised."""


class ServiceUnavailableError(ServerError):
    """503: the model is overloaded."""


class SubmitOutcomeUnknownError(WanError):
    """A create was sent but its answer was lost: a (paid) task may or may not exist.

    wanr2v never re-sends such a create blindly. Look the task up (the journal's
    reconciliation does so) before deciding to submit again.

    Attributes:
        fingerprint: the request's fingerprint (model, input, parameters).
        submission_id: the client-side id of the logical submission.
        sent_at: UNIX time when the create was sent.
        candidates: task ids that might be this submission's (may be empty).
        cause: the error that hid the outcome.
    """

    fingerprint: str
    submission_id: str | None
    sent_at: float | None
    candidates: tuple[str, ...]
    cause: BaseException | None

    def __init__(
        self,
        message: str,
        *,
        fingerprint: str,
        submission_id: str | None = None,
        sent_at: float | None = None,
        candidates: Iterable[str] = (),
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint
        self.submission_id = submission_id
        self.sent_at = sent_at
        self.candidates = tuple(candidates)
        self.cause = cause

    def evolve(
        self, *, candidates: Iterable[str] | None = None, detail: str | None = None
    ) -> SubmitOutcomeUnknownError:
        """A new error like this one, with other ``candidates`` and ``detail`` appended
        to the message (errors are built whole, never patched)."""
        return SubmitOutcomeUnknownError(
            f"{self.message} {detail}" if detail else self.message,
            fingerprint=self.fingerprint,
            submission_id=self.submission_id,
            sent_at=self.sent_at,
            candidates=self.candidates if candidates is None else candidates,
            cause=self.cause,
        )


class WaitTimeoutError(WanError, builtins.TimeoutError):
    """``wait(timeout=...)`` ran out before the task was final; the task goes on.

    Attributes:
        task_id: the task.
        last_status: the last status seen, if any.
    """

    task_id: str
    last_status: str | None

    def __init__(self, message: str, *, task_id: str, last_status: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.last_status = last_status


class TaskError(WanError):
    """A task ended in a state other than SUCCEEDED.

    Attributes:
        task_id: the task.
        status: its final status (``"FAILED"``, ``"CANCELED"``, ``"UNKNOWN"``).
        code: the task's error code, for a FAILED task.
        request_id: the request id of the answer that showed the status.
        result: the last `TaskResult` seen, when there is one.
    """

    task_id: str
    status: str
    code: str | None
    request_id: str | None
    result: TaskResult | None

    def __init__(
        self,
        message: str,
        *,
        task_id: str,
        status: str,
        code: str | None = None,
        request_id: str | None = None,
        result: TaskResult | None = None,
    ) -> None:
        super().__init__(message)
        self.task_id = task_id
        self.status = status
        self.code = code
        self.request_id = request_id
        self.result = result


class TaskFailedError(TaskError):
    """The task FAILED; ``code`` and ``message`` say why (failed tasks are not billed)."""


class TaskCanceledError(TaskError):
    """The task was CANCELED."""


class TaskNotFoundError(TaskError):
    """The service says UNKNOWN: the id never existed here, or expired after 24 h."""


class ResultExpiredError(WanError):
    """The video URL has expired and the task can no longer be fetched again.

    Attributes:
        task_id: the task, when known.
    """

    task_id: str | None

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class UploadError(WanError):
    """A local reference could not be uploaded (the upload host's answer was unusable)."""


class DownloadError(WanError):
    """A result video could not be saved (length mismatch, I/O error, host refused, too big).

    Attributes:
        task_id: the task whose video it is, when known.
    """

    task_id: str | None

    def __init__(self, message: str, *, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


_BAD_REQUEST_BY_CODE: dict[str, type[BadRequestError]] = {
    "DataInspectionFailed": ContentModerationError,
    "IPInfringementSuspect": ContentModerationError,
    "UnsupportedOperation": UnsupportedOperationError,
    "Arrearage": ArrearageError,
}

QUOTA_EXHAUSTED_CODES: frozenset[str] = frozenset(
    {
        "Arrearage",
        "PrepaidBillOverdue",
        "PostpaidBillOverdue",
        "AllocationQuota.FreeTierOnly",
        "Throttling.FreeTierOnly",
    }
)
"""429 codes that no wait clears: an account in arrears, a free tier used up."""

_EXHAUSTED_MESSAGE = re.compile(
    r"\b(?:free|hour|hourly|day|daily|week|weekly|month|monthly)\b[\w\s]{0,20}?"
    r"allocated quota exceeded|arrear|overdue|insufficient balance|in good standing",
    re.IGNORECASE,
)
"""Messages of a 429 that no wait clears. ``Throttling.AllocationQuota`` is both a
per-minute allocation (clears: retried) and a free or hourly allocation used up
("Free allocated quota exceeded": does not clear); only the message tells them apart."""


def is_quota_exhausted(code: str | None, message: str | None) -> bool:
    """Whether a 429 says something that waiting does not clear (see
    `QUOTA_EXHAUSTED_CODES`): such a 429 is raised at once, never retried."""
    if code in QUOTA_EXHAUSTED_CODES:
        return True
    return bool(message) and _EXHAUSTED_MESSAGE.search(message or "") is not None


def error_for(
    status_code: int,
    code: str | None,
    message: str | None,
    *,
    request_id: str | None = None,
    task_id: str | None = None,
    retry_after: float | None = None,
) -> APIError:
    """Map an HTTP status and a DashScope code to the error class a caller can act on."""
    msg = message or f"HTTP {status_code}"
    cls: type[APIError]
    if status_code == 429 or (code or "").startswith("Throttling"):
        limit_cls = QuotaExhaustedError if is_quota_exhausted(code, message) else RateLimitError
        return limit_cls(
            msg,
            status_code=status_code,
            code=code,
            request_id=request_id,
            task_id=task_id,
            retry_after=retry_after,
        )
    if status_code == 400:
        c = code or ""
        if c in _BAD_REQUEST_BY_CODE:
            cls = _BAD_REQUEST_BY_CODE[c]
        elif c.startswith(("InvalidParameter", "InvalidFile")):
            cls = InvalidParameterError
        else:
            cls = BadRequestError
    elif status_code == 401:
        cls = AuthenticationError
    elif status_code == 403:
        cls = PermissionDeniedError
    elif status_code == 404:
        cls = NotFoundError
    elif status_code == 503:
        cls = ServiceUnavailableError
    elif status_code >= 500:
        cls = ServerError
    elif 400 <= status_code < 500:
        cls = BadRequestError
    else:
        cls = APIError
    return cls(msg, status_code=status_code, code=code, request_id=request_id, task_id=task_id)


# --- secrets --------------------------------------------------------------------------

_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',;]+")
MASK = "***"


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without any of ``secrets`` and without any ``Bearer <token>``.

    Applied to all server text an error or a log line is built from. Cheap when there
    is nothing to hide (two substring scans).
    """
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    if "earer" in text or "EARER" in text:
        text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    return text


# --- exception groups -----------------------------------------------------------------


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def _rank(exc: BaseException) -> int:
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return 0  # the user (or the system) said stop: that wins
    if isinstance(exc, SubmitOutcomeUnknownError):
        return 1  # money may be at stake: the caller must hear of it first
    if isinstance(exc, WanError):
        return 2
    if isinstance(exc, Exception):
        return 3
    return 9  # cancellation and other BaseExceptions: never chosen over an error


def first_meaningful(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The error of ``group`` a caller should see: a ``KeyboardInterrupt``, else the
    first `SubmitOutcomeUnknownError`, else the first `WanError`, else
    the first other ``Exception``; ``None`` when the group holds only cancellations."""
    best: BaseException | None = None
    for leaf in _leaves(group):
        if best is None or _rank(leaf) < _rank(best):
            best = leaf
    if best is None or _rank(best) == 9:
        return None
    return best


def collapse_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception to raise instead of ``group`` (or ``group`` itself when it holds
    only cancellations, which must propagate untouched).

    The others are listed in the chosen exception's ``__notes__`` (one line each,
    ``"also: Type: message"``), so nothing is hidden::

        try:
            async with anyio.create_task_group() as tg: ...
        except BaseExceptionGroup as group:
            raise collapse_group(group) from None
    """
    chosen = first_meaningful(group)
    if chosen is None:
        return group
    for leaf in _leaves(group):
        if leaf is not chosen and _rank(leaf) != 9:
            chosen.add_note(f"also: {type(leaf).__name__}: {leaf}")
    return chosen


@contextmanager
def collapsing_groups() -> Iterator[None]:
    """Raise the first meaningful error of an ``ExceptionGroup`` escaping the block
    instead of the group (see `collapse_group`); its own cause is kept."""
    try:
        yield
    except BaseExceptionGroup as group:
        chosen = collapse_group(group)
        if chosen is group:
            raise
        raise chosen from chosen.__cause__
