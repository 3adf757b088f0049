"""wanr2v: an asyncio-native (anyio) client for Wan 2.6 reference-to-video.

Layers, bottom up:

- ``_config`` (regions, env vars), ``_models`` (attrs requests and results) and
  ``_wire`` (the one cattrs converter: wire JSON <-> models);
- ``_http``: one request path with auth, the safe-retry rule and error mapping
  (``_exceptions`` draws the error tree);
- ``_limits``: the account :class:`Governor` that paces every call, and
  ``_polling``: the one :class:`PollScheduler` shared by every ``wait``;
- ``_client``: :class:`AsyncWanClient`, the verbs; ``_batch``: many tasks at once;
  ``_files``: local uploads and result downloads; ``journal``: durable records;
- ``testing``: the emulator of the DashScope task API, for your own tests too.
"""

from ._aiohttp import AioHttpClient
from ._batch import BatchItem, BatchRunner, BatchSummary
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
    RateLimitError,
    ResultExpiredError,
    ServerError,
    ServiceUnavailableError,
    SubmitOutcomeUnknownError,
    TaskCanceledError,
    TaskError,
    TaskFailedError,
    TaskNotFoundError,
    TimeoutError,
    TransportError,
    UnsupportedOperationError,
    UploadError,
    WaitTimeoutError,
    WanError,
)
from ._http import RetryPolicy
from ._limits import Governor, GovernorStatistics, Limits, RateStatistics
from ._models import Task, TaskResult, TaskStatus, TaskSummary, Usage, VideoRequest
from ._polling import PollPolicy, PollScheduler, SchedulerStatistics
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
    "RateLimitError",
    "RateStatistics",
    "RegionEndpoint",
    "ResultExpiredError",
    "RetryPolicy",
    "SchedulerStatistics",
    "ServerError",
    "ServiceUnavailableError",
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
    "TimeoutError",
    "TransportError",
    "UnsupportedOperationError",
    "UploadError",
    "Usage",
    "VideoRequest",
    "WaitTimeoutError",
    "WanError",
    "__version__",
    "raise_for_status",
]

# Tracebacks and reprs say ``wanr2v.RateLimitError``, not ``wanr2v._exceptions...``.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) and _obj.__module__.startswith("wanr2v._"):
        _obj.__module__ = "wanr2v"
del _name, _obj
