"""Durable records of batch submissions, so a crashed batch resumes without paying twice.

The client and the batch runner talk to a `JournalStore`; `SQLiteJournal`
(one local file, WAL mode) is the store for one machine; `RedisJournal` is shared
by a fleet of workers (any of them can resume another's batch). Another store
(Postgres) only has to implement the protocol.
"""

from ._base import (
    FROZEN_FIELDS,
    UPDATABLE_FIELDS,
    DuplicateRequestError,
    JournalAccountError,
    JournalBusyError,
    JournalConflictError,
    JournalError,
    JournalOwner,
    JournalStore,
    JournalVanishedError,
    LeasedJournal,
    SubmissionRecord,
    SubmissionState,
    account_fingerprint,
    check_no_secrets,
    check_requests,
    request_from_dict,
    request_to_dict,
    result_to_dict,
)
from ._redis import RedisJournal
from ._sqlite import SCHEMA_VERSION, SQLiteJournal

__all__ = [
    "FROZEN_FIELDS",
    "DuplicateRequestError",
    "JournalAccountError",
    "JournalBusyError",
    "JournalConflictError",
    "JournalError",
    "JournalOwner",
    "JournalStore",
    "JournalVanishedError",
    "LeasedJournal",
    "account_fingerprint",
    "check_requests",
    "RedisJournal",
    "SCHEMA_VERSION",
    "SQLiteJournal",
    "SubmissionRecord",
    "SubmissionState",
    "UPDATABLE_FIELDS",
    "check_no_secrets",
    "request_from_dict",
    "request_to_dict",
    "result_to_dict",
]

# Tracebacks and reprs name the public location, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = __name__
del _name, _obj
