"""Where a governor's shared state lives: in this process (the default) or in Redis.

The account's limits (5 creates/s, 20 queries/s, 5 tasks running, per region) belong
to the account, not to a process. A `Governor` keeps one process under
them on its own; several processes of one account (``uvicorn --workers 4``, a queue
of workers on several machines) share them through a `SharedBudget`:

- the rate budget of each kind of call, decided atomically by the store;
- the task slots (tasks in flight), as leases that a live process renews;
- the back-off after a 429 (one worker's 429 slows the whole fleet).

Without ``storage_uri`` nothing is shared: the governor's in-process buckets and
semaphores are the whole story (`open_storage` returns ``None``). With
``storage_uri="redis://host:port/db"`` (or ``WANR2V_STORAGE_URI``), the budgets live in
Redis (`wanr2v._redis`), keyed by account (a fingerprint of the API key, never
the key) and region.

This module holds the protocol, the errors and the URI parsing; it imports no Redis
client.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from ._exceptions import ConfigurationError

if TYPE_CHECKING:
    from ._limits import Kind

__all__ = [
    "ENV_STORAGE_URI",
    "SharedBudget",
    "SharedStorageError",
    "StorageStatistics",
    "account_fingerprint",
    "open_storage",
    "redact_uri",
]

ENV_STORAGE_URI: Final = "WANR2V_STORAGE_URI"
"""Environment variable naming the shared store (``redis://host:port/db``)."""


class SharedStorageError(ConfigurationError):
    """The shared store (``storage_uri``) cannot be used: unreachable at start, or not
    usable here (e.g. the Redis client is asyncio-only and the caller runs trio).

    Once a client has reached the store, losing it later is not an error: the client
    falls back to a conservative in-process share and logs a warning.
    """


@runtime_checkable
class SharedBudget(Protocol):
    """What a governor asks of a store shared by several processes of one account.

    One instance serves one account (key fingerprint) and region.
    """

    async def start(self) -> None:
        """Reach the store (a clear `SharedStorageError` if it cannot) and start
        renewing this process's leases. Called before the first use; idempotent."""
        ...

    async def acquire(self, kind: Kind, rate: float | None, priority: float = 0.0) -> None:
        """Wait for the fleet's token of ``kind`` at ``rate`` per second (``None``: no
        limit); this process's callers are served lowest ``priority`` first."""
        ...

    def throttled(self, kind: Kind, retry_after: float | None, rate: float | None) -> None:
        """Report a 429 of ``kind``: the whole fleet pauses and slows that kind."""
        ...

    def slot(self, capacity: int) -> AbstractAsyncContextManager[None]:
        """Hold one of the fleet's ``capacity`` task slots (a lease) while in the block."""
        ...

    async def recent_poll(self, task_id: str, max_age: float) -> Any:
        """The JSON answer of a query of ``task_id`` another process of the fleet got
        less than ``max_age`` seconds ago, or ``None``."""
        ...

    def publish_poll(self, task_id: str, data: Any, max_age: float) -> None:
        """Share a query's JSON answer with the fleet for ``max_age`` seconds."""
        ...

    def statistics(self) -> StorageStatistics:
        """A snapshot: degraded or not, live processes, slots held here."""
        ...

    async def aclose(self) -> None:
        """Release this process's leases and stop renewing them."""
        ...


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


def account_fingerprint(api_key: str) -> str:
    """A stable, non-reversible name for an account's key (16 hex digits of SHA-256).

    Processes using the same key share budgets under this name; the key itself is
    never sent to the store.
    """
    return hashlib.sha256(b"wanr2v-account\0" + api_key.encode()).hexdigest()[:16]


def redact_uri(uri: str) -> str:
    """The URI with any password replaced by ``***`` (for messages and reprs)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or "@" not in rest:
        return uri
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"


def resolve_storage_uri(uri: str | None) -> str | None:
    """``uri``, else ``WANR2V_STORAGE_URI``, else ``None`` (in-process only).

    Raises:
        ConfigurationError: a scheme other than ``redis://``, ``rediss://`` or ``unix://``.
    """
    if uri is None:
        uri = os.environ.get(ENV_STORAGE_URI) or None
    if uri is None or uri in ("memory", "memory://"):
        return None
    if not uri.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            f"storage_uri {redact_uri(uri)!r} is not supported: use redis://host:port/db "
            "(or rediss:// / unix://), or leave it unset for in-process limits."
        )
    return uri


def open_storage(
    uri: str | None, *, api_key: str, region: str, lease_ttl: float | None = None
) -> SharedBudget | None:
    """A shared budget for one account and region at ``uri`` (``None``: in-process).

    Nothing is contacted here: `SharedBudget.start` reaches the store.

    Raises:
        ConfigurationError: an unsupported URI, or the ``redis`` extra is missing.
    """
    resolved = resolve_storage_uri(uri)
    if resolved is None:
        return None
    try:
        from ._redis import RedisBudget
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "storage_uri needs the Redis client: pip install 'wanr2v[redis]'."
        ) from exc
    if lease_ttl is None:
        return RedisBudget(resolved, account=account_fingerprint(api_key), region=region)
    return RedisBudget(
        resolved, account=account_fingerprint(api_key), region=region, lease_ttl=lease_ttl
    )
