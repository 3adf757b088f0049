"""What the shared store's front (``wanr2v._storage``) and its Redis backend
(``wanr2v._redis``) both use: the error, the statistics record, a URI's redaction.

It sits below both so that neither imports the other back (``_storage`` opens the
Redis backend lazily; the backend imports only this). No I/O here.
"""

from __future__ import annotations

from ._exceptions import ConfigurationError

__all__ = ["SharedStorageError", "StorageStatistics", "redact_uri"]


class SharedStorageError(ConfigurationError):
    """The shared store (``storage_uri``) cannot be used: unreachable at start, or not
    usable here (e.g. the Redis client is asyncio-only and the caller runs trio).

    Once a client has reached the store, losing it later is not an error: the client
    falls back to a conservative in-process share and logs a warning.
    """


class StorageStatistics:
    """A snapshot of a shared budget (plain attributes, for displays and benchmarks).

    Attributes:
        backend: ``"redis"``.
        degraded: the store was lost and the client runs on its in-process share.
        live_processes: the processes of this account and region the store last saw.
        slots_held: task slots this process holds.
        fallbacks: how many times the store was lost mid-run.
        shared_polls: task queries answered by another process's recent answer.
    """

    __slots__ = (
        "backend",
        "degraded",
        "fallbacks",
        "live_processes",
        "shared_polls",
        "slots_held",
    )
    backend: str
    degraded: bool
    live_processes: int
    slots_held: int
    fallbacks: int
    shared_polls: int

    def __init__(
        self,
        *,
        backend: str,
        degraded: bool,
        live_processes: int,
        slots_held: int,
        fallbacks: int,
        shared_polls: int = 0,
    ) -> None:
        self.backend = backend
        self.degraded = degraded
        self.live_processes = live_processes
        self.slots_held = slots_held
        self.fallbacks = fallbacks
        self.shared_polls = shared_polls

    def __repr__(self) -> str:
        return (
            f"StorageStatistics(backend={self.backend!r}, degraded={self.degraded}, "
            f"live_processes={self.live_processes}, slots_held={self.slots_held}, "
            f"fallbacks={self.fallbacks}, shared_polls={self.shared_polls})"
        )


def redact_uri(uri: str) -> str:
    """The URI with any password replaced by ``***`` (for messages and reprs)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return uri
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"
