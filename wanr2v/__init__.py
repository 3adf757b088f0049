"""wanr2v: an asyncio-native (anyio) client for Wan 2.6 reference-to-video.

What this package exports is what a program needs, and nothing else (``__all__`` is
pinned by ``tests/test_public_surface.py``):

- the clients: `AsyncWanClient` (and `WanClient`, its blocking twin), `RegionEndpoint`
  for more regions, `AioHttpClient` as an optional transport;
- requests and results: `VideoRequest` (with the literal types `ModelName`, `Size`,
  `ShotType`), `Task`, `TaskResult`, `TaskStatus`, `TaskSummary`, `Usage`,
  `raise_for_status`; batches: `BatchItem`, `BatchSummary`, `read_batch_file` (the
  batch-file format of ``wanr2v run``); events: `TaskEvent`;
- the policies a user sets: `Limits` (and a `Governor` to share between clients of
  one account), `PollPolicy`, `RetryPolicy`; the records ``statistics()`` returns:
  `ClientStatistics`, `GovernorStatistics`, `RateStatistics`, `SchedulerStatistics`;
- the error tree under `WanError`.

``wanr2v.journal`` (durable batches) and ``wanr2v.testing`` (the emulator) are
subpackages with their own ``__all__``. Everything in a module whose name starts with
an underscore is private; docs/architecture.md describes how those modules fit.
"""

import logging
import types as _types

from ._aiohttp import AioHttpClient
from ._batch_records import BatchItem, BatchSummary, BudgetExceededError
from ._batchfile import read_batch_file
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
from ._logs import setup_logging as _setup_logging
from ._models import (
    ModelName,
    ShotType,
    Size,
    Task,
    TaskResult,
    TaskStatus,
    TaskSummary,
    Usage,
    VideoRequest,
)
from ._polling import PollPolicy, SchedulerStatistics
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
    "BatchSummary",
    "BudgetExceededError",
    "ClientStatistics",
    "ConfigurationError",
    "ConnectError",
    "ContentModerationError",
    "DownloadError",
    # Kept: clients of one account share one (docs/batching.md, docs/configuration.md).
    "Governor",
    "GovernorStatistics",
    "InvalidParameterError",
    "InvalidRequestError",
    "Limits",
    "ModelName",
    "NotFoundError",
    "PermissionDeniedError",
    "PollPolicy",
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
    "ShotType",
    "Size",
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
    # Kept: turns a fetched TaskResult into the typed error ``wait`` raises (a failed,
    # canceled or unknown task), for programs that poll with ``fetch`` themselves.
    "raise_for_status",
    "read_batch_file",
]

# A library is silent until its user configures logging: without this handler, Python's
# last-resort handler would print the ``wanr2v`` logger's warnings to stderr.
logging.getLogger("wanr2v").addHandler(logging.NullHandler())
# WANR2V_LOG=debug (info, warning, error) switches it on without code (``_logs``).
_setup_logging()

# Tracebacks and reprs say ``wanr2v.RateLimitError``, not ``wanr2v._exceptions...``.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, (type, _types.FunctionType)) and _obj.__module__.startswith("wanr2v._"):
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
