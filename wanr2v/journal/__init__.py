"""Durable records of batch submissions, so a crashed batch resumes without paying twice.

The client and the batch runner talk to a `JournalStore`; `SQLiteJournal`
(one local file, WAL mode) is the store for one machine; `RedisJournal` is shared
by a fleet of workers (any of them can resume another's batch). Another store
(Postgres) only has to implement the protocol.
"""

from ._base import (
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
)
from ._redis import RedisJournal
from ._sqlite import SQLiteJournal

# What a program needs: the stores, the protocols a new store implements, the records
# and errors it reads. The conversions, field sets, schema version and checks the
# stores and the batch runner share stay in the private modules.
__all__ = [
    "DuplicateRequestError",
    "JournalAccountError",
    "JournalBusyError",
    "JournalConflictError",
    "JournalError",
    "JournalOwner",
    "JournalStore",
    "JournalVanishedError",
    "LeasedJournal",
    "RedisJournal",
    "SQLiteJournal",
    "SubmissionRecord",
    "SubmissionState",
    "account_fingerprint",
]

# Tracebacks and reprs name the public location, not the private module.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type) or callable(_obj):
        _obj.__module__ = __name__
del _name, _obj
