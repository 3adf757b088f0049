"""wanr2v: an asyncio-native (anyio) client for Wan 2.6 reference-to-video.

Layers, bottom up:

- ``_config`` (regions, env vars), ``_models`` (attrs requests and results) and
  ``_wire`` (the one cattrs converter: wire JSON <-> models);
- ``_http``: one request path with auth, the safe-retry rule and error mapping
  (``_exceptions`` draws the error tree);
- ``_limits``: the account `Governor` that paces every call, and
  ``_polling``: the one `PollScheduler` shared by every ``wait``;
- ``_client``: `AsyncWanClient`, the verbs; ``_batch``: many tasks at once;
  ``_files``: local uploads and result downloads; ``journal``: durable records;
- ``testing``: the emulator of the DashScope task API, for your own tests too.
"""

import logging

from ._aiohttp import AioHttpClient
from ._batch import BatchItem, BatchRunner, BatchSummary, BudgetExceededError
from ._client import AsyncWanClient, ClientStatistics, RegionEndpoint, raise_for_status
from ._config import REGION_BASE_URLS
from ._events import TaskEvent
from ._exceptions import (
    APIError,
    ArrearageError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConnectError,
    ContentModerationError,
    DownloadError,
    InvalidParameterError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExhaustedError,
    RateLimitError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ResultExpiredError,
    ServerError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskCanceledError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    TransportError,
    UnsupportedOperationError,
    UploadError,
    WaitTimeoutError,
    WanError,
)
from ._limits import Governor, GovernorStatistics, Limits, RateStatistics
from ._models import Task, TaskResult, TaskStatus, TaskSummary, Usage, VideoRequest
from ._polling import PollPolicy, PollScheduler, SchedulerStatistics
from ._retry import RetryPolicy
from ._storage import SharedStorageError
from ._sync import WanClient
from ._version import __version__

__all__ = [
    "REGION_BASE_URLS",
    "APIError",
    "AioHttpClient",
    "ArrearageError",
    "AsyncWanClient",
    "AuthenticationError",
    "BadRequestError",
    "BatchItem",
    "BatchRunner",
    "BatchSummary",
    "BudgetExceededError",
    "ClientStatistics",
    "ConfigurationError",
    "ConnectError",
    "ContentModerationError",
    "DownloadError",
    "Governor",
    "GovernorStatistics",
    "InvalidParameterError",
    "InvalidRequestError",
    "Limits",
    "NotFoundError",
    "PermissionDeniedError",
    "PollPolicy",
    "PollScheduler",
    "QuotaExhaustedError",
    "RateLimitError",
    "RateStatistics",
    "RegionEndpoint",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ResultExpiredError",
    "RetryPolicy",
    "SchedulerStatistics",
    "ServerError",
    "ServiceUnavailableError",
    "SharedStorageError",
    "SubmitOutcomeUnknownError",
    "Task",
    "TaskCanceledError",
    "TaskError",
    "TaskEvent",
    "TaskFailedError",
    "TaskNotFoundError",
    "TaskResult",
    "TaskStatus",
    "TaskSummary",
    "TransportError",
    "UnsupportedOperationError",
    "UploadError",
    "Usage",
    "VideoRequest",
    "WaitTimeoutError",
    "WanClient",
    "WanError",
    "__version__",
    "raise_for_status",
]

# A library is silent until its user configures logging: without this handler, Python's
# last-resort handler would print the ``wanr2v`` logger's warnings to stderr.
logging.getLogger("wanr2v").addHandler(logging.NullHandler())

# Tracebacks and reprs say ``wanr2v.RateLimitError``, not ``wanr2v._exceptions...``.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("wanr2v._"):
        _obj.__module__ = "wanr2v"
del _name, _obj


def __getattr__(name: str) -> object:
    # ``wanr2v.TimeoutError`` was renamed: it shadowed the builtin on ``import *``.
    if name == "TimeoutError":
        import warnings

        warnings.warn(
            "wanr2v.TimeoutError is deprecated; use wanr2v.RequestTimeoutError "
            "(a subclass of the builtin TimeoutError).",
            DeprecationWarning,
            stacklevel=2,
        )
        return RequestTimeoutError
    raise AttributeError(f"module 'wanr2v' has no attribute {name!r}")
