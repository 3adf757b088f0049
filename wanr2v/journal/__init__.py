"""Durable records of batch submissions, so a crashed batch resumes without paying twice.

The client and the batch runner talk to a `JournalStore`; `SQLiteJournal`
(one local file, WAL mode) is the store for one machine; `RedisJournal` is shared
by a fleet of workers (any of them can resume another's batch). Another store
(Postgres) only has to implement the protocol.
"""

from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
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

# The stores are imported on first use: a program that never opens a journal does not
# load sqlite3 and the stores' code (the batch runner needs only the records and errors).
_STORES = {"RedisJournal": "._redis", "SQLiteJournal": "._sqlite"}

# Tracebacks and reprs name the public location, not the private module.
for _name in __all__:
    if _name not in _STORES:
        _obj = globals()[_name]
        if isinstance(_obj, type) or callable(_obj):
            _obj.__module__ = __name__
del _name, _obj


def __getattr__(name: str) -> object:
    if name in _STORES:
        import importlib

        store = getattr(importlib.import_module(_STORES[name], __name__), name)
        store.__module__ = __name__
        globals()[name] = store
        return store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
