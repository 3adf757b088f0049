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

This module holds the protocol and the URI parsing (the error, the statistics record
and ``redact_uri`` live in ``wanr2v._storage_base``, which the Redis backend shares
without importing this module back); it imports no Redis client.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from ._exceptions import ConfigurationError
from ._storage_base import SharedStorageError, StorageStatistics, redact_uri

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


def account_fingerprint(api_key: str) -> str:
    """A stable, non-reversible name for an account's key (16 hex digits of SHA-256).

    Processes using the same key share budgets under this name; the key itself is
    never sent to the store.
    """
    return hashlib.sha256(b"wanr2v-account\0" + api_key.encode()).hexdigest()[:16]


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
