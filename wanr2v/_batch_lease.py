"""A batch's hold on its journal: the lease, kept alive while the batch runs, and the
accounts the journal's tasks belong to.

`JournalOwnership` is what a `BatchRunner` (``_batch``) delegates to before anything
is added or sent: it takes the journal's lease when the store has one
(`LeasedJournal`; a live holder raises `JournalBusyError`), renews it every
``ttl / HEARTBEATS_PER_TTL`` seconds and reports losing it, checks that this client's
keys are the ones that made the journal's tasks (`JournalAccountError` otherwise), and
records the account of each base URL before its first create goes out. It knows the
journal and the client's regions only, never the runner.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from .journal import (
    JournalAccountError,
    JournalError,
    JournalStore,
    LeasedJournal,
    account_fingerprint,
)

if TYPE_CHECKING:
    from ._protocols import Routing

__all__ = ["JournalOwnership"]

logger = logging.getLogger("wanr2v")

ACCOUNTS_META = "accounts"
"""Journal meta key: ``{base_url: account fingerprint}`` of the keys that made its tasks."""

HEARTBEATS_PER_TTL = 6
"""The lease is renewed this many times per ``lease_ttl`` (every 5 s by default)."""


class JournalOwnership:
    """One batch's ownership of its journal (every method does nothing without one).

    Args:
        journal: the batch's `JournalStore`, or ``None``.
        routing: the client's regions; their keys' fingerprints are its accounts.
    """

    def __init__(self, journal: JournalStore | None, routing: Routing) -> None:
        self.journal = journal
        self.routing = routing
        self._lease: LeasedJournal | None = None
        self._lease_interval: float | None = None
        self._last_beat = 0.0
        self._bound: set[str] = set()
        self._bind_lock = anyio.Lock()

    @property
    def leased(self) -> bool:
        """The lease is held and wants heartbeats (`keep_lease`)."""
        return self._lease_interval is not None

    @asynccontextmanager
    async def owning(self) -> AsyncIterator[None]:
        """Hold the journal's lease (when it has one) and check its accounts."""
        journal = self.journal
        if journal is None:
            yield
            return
        # (Through ``object``: mypy cannot narrow one protocol to another.)
        store: object = journal
        lease = store if isinstance(store, LeasedJournal) else None
        if lease is not None:
            owner = await lease.acquire()
            self._lease = lease
            self._lease_interval = owner.ttl / HEARTBEATS_PER_TTL
            self._last_beat = anyio.current_time()
        try:
            await self._check_accounts(journal)
            yield
        finally:
            if lease is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await lease.release()
                    except JournalError as exc:
                        logger.warning("could not release the journal's lease: %s", exc)

    async def beat_if_due(self) -> None:
        """Renew the lease now if a heartbeat is due (before the heartbeat task runs)."""
        if self._lease is None or self._lease_interval is None:
            return
        now = anyio.current_time()
        if now - self._last_beat >= self._lease_interval:
            await self._lease.heartbeat()
            self._last_beat = now

    async def keep_lease(self, on_lost: Callable[[JournalError], None]) -> None:
        """Renew the lease until cancelled; on losing it (or the file), tell ``on_lost``
        and return."""
        lease, interval = self._lease, self._lease_interval
        assert lease is not None and interval is not None
        while True:
            await anyio.sleep(interval)
            try:
                await lease.heartbeat()
            except JournalError as exc:
                on_lost(exc)
                return

    def _accounts(self) -> dict[str, str]:
        """``{base_url: fingerprint}`` of the client's keys (never the keys)."""
        out = {}
        for region in self.routing.regions:
            session = self.routing.for_region(region)
            auth = session.headers("query").get("Authorization", "")
            out[session.base_url] = account_fingerprint(auth.removeprefix("Bearer "))
        return out

    async def _check_accounts(self, journal: JournalStore) -> None:
        """Refuse a client that is not the one the journal's tasks belong to."""
        path = getattr(journal, "path", None)
        path = path if isinstance(path, str) else None
        stored: dict[str, str] = dict(await journal.get_meta(ACCOUNTS_META) or {})
        mine = self._accounts()
        for url, fp in stored.items():
            if url in mine and mine[url] != fp:
                raise JournalAccountError(
                    f"The journal's tasks at {url} were made with another API key (account "
                    f"{fp}, this client's key is {mine[url]}): queried with this key they "
                    "would all look lost. Use the key that made them, or another journal. "
                    "Nothing was sent or changed.",
                    base_url=url,
                    expected=fp,
                    got=mine[url],
                    path=path,
                )
        for rec in await journal.list():
            url = (rec.base_url or "").rstrip("/")
            if rec.is_terminal or not url or url in mine:
                continue
            raise JournalAccountError(
                f"The journal has unfinished tasks at {url} (e.g. key {rec.batch_key!r}), "
                f"but this client only reaches {', '.join(sorted(mine))}: point it at "
                f"{url} (with the key that made them), or use another journal. Nothing "
                "was sent or changed.",
                base_url=url,
                expected=stored.get(url),
                got=None,
                path=path,
            )

    async def bind(self, base_url: str) -> None:
        """Record which account makes tasks at ``base_url`` (refuse another one)."""
        journal = self.journal
        url = base_url.rstrip("/")
        if journal is None or url in self._bound:
            return
        fp = self._accounts().get(url)
        if fp is None:
            return
        async with self._bind_lock:
            stored: dict[str, str] = dict(await journal.get_meta(ACCOUNTS_META) or {})
            known = stored.get(url)
            if known is not None and known != fp:
                raise JournalAccountError(
                    f"The journal's tasks at {url} were made with another API key "
                    f"(account {known}, this client's key is {fp}); nothing was sent.",
                    base_url=url,
                    expected=known,
                    got=fp,
                )
            if known is None:
                stored[url] = fp
                await journal.set_meta(ACCOUNTS_META, stored)
            self._bound.add(url)
