"""The wanr2v error tree: classes by what the caller can do.

::

    WanError
    ├── ConfigurationError (ValueError)   no key, bad region, bad base URL: fix your setup
    ├── InvalidRequestError (ValueError)  a request refused locally, before anything is sent
    ├── TransportError                    the HTTP exchange itself broke
    │   ├── ConnectError                  nothing reached the service (safe to retry)
    │   └── TimeoutError                  no answer in time
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

Every API error carries ``status_code``, ``code``, ``message`` and ``request_id``;
every task error carries ``task_id``. Map an answer to a class with :func:`error_for`.
"""

from __future__ import annotations

import builtins
from typing import Any

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
    "RateLimitError",
    "ResultExpiredError",
    "ServerError",
    "ServiceUnavailableError",
    "SubmitOutcomeUnknownError",
    "TaskCanceledError",
    "TaskError",
    "TaskFailedError",
    "TaskNotFoundError",
    "TimeoutError",
    "TransportError",
    "UnsupportedOperationError",
    "UploadError",
    "WaitTimeoutError",
    "WanError",
    "error_for",
]


class WanError(Exception):
    """Base of every error wanr2v raises on purpose."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        for name, value in context.items():
            setattr(self, name, value)

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
        super().__init__(message, field=field)


class TransportError(WanError):
    """The HTTP exchange broke (connection refused, reset, timed out)."""

    request_id: str | None = None
    method: str | None = None
    url: str | None = None


class ConnectError(TransportError):
    """No connection could be made: the request never reached the service."""


class TimeoutError(TransportError):
    """The service did not answer in time."""


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
        super().__init__(
            message, status_code=status_code, code=code, request_id=request_id, task_id=task_id
        )

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
    """429: over a rate limit or a quota; clears within about a minute.

    Attributes:
        retry_after: seconds the service asked to wait, when it said.
    """

    retry_after: float | None

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


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
        cause: the transport error that hid the outcome.
    """

    def __init__(
        self,
        message: str,
        *,
        fingerprint: str,
        submission_id: str | None = None,
        sent_at: float | None = None,
        candidates: tuple[str, ...] = (),
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(
            message,
            fingerprint=fingerprint,
            submission_id=submission_id,
            sent_at=sent_at,
            candidates=candidates,
            cause=cause,
        )


class WaitTimeoutError(WanError, builtins.TimeoutError):
    """``wait(timeout=...)`` ran out before the task was final; the task goes on.

    Attributes:
        task_id: the task.
        last_status: the last status seen, if any.
    """

    def __init__(self, message: str, *, task_id: str, last_status: str | None = None) -> None:
        super().__init__(message, task_id=task_id, last_status=last_status)


class TaskError(WanError):
    """A task ended in a state other than SUCCEEDED.

    Attributes:
        task_id: the task.
        status: its final status.
        result: the last :class:`~wanr2v.TaskResult` seen, when there is one.
    """

    def __init__(
        self,
        message: str,
        *,
        task_id: str,
        status: str,
        code: str | None = None,
        request_id: str | None = None,
        result: Any = None,
    ) -> None:
        super().__init__(
            message,
            task_id=task_id,
            status=status,
            code=code,
            request_id=request_id,
            result=result,
        )


class TaskFailedError(TaskError):
    """The task FAILED; ``code`` and ``message`` say why (failed tasks are not billed)."""


class TaskCanceledError(TaskError):
    """The task was CANCELED."""


class TaskNotFoundError(TaskError):
    """The service says UNKNOWN: the id never existed here, or expired after 24 h."""


class ResultExpiredError(WanError):
    """The video URL has expired and the task can no longer be fetched again."""


class UploadError(WanError):
    """A local reference could not be uploaded (the upload host's answer was unusable)."""


class DownloadError(WanError):
    """A result video could not be saved (length mismatch, I/O error, host refused)."""


_BAD_REQUEST_BY_CODE: dict[str, type[BadRequestError]] = {
    "DataInspectionFailed": ContentModerationError,
    "IPInfringementSuspect": ContentModerationError,
    "UnsupportedOperation": UnsupportedOperationError,
    "Arrearage": ArrearageError,
}


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
    kw: dict[str, Any] = {
        "status_code": status_code,
        "code": code,
        "request_id": request_id,
        "task_id": task_id,
    }
    cls: type[APIError]
    if status_code == 429 or (code or "").startswith("Throttling"):
        return RateLimitError(msg, retry_after=retry_after, **kw)
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
    return cls(msg, **kw)
