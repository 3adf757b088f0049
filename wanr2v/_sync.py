"""WanClient: the blocking client, for scripts and notebooks.

The same verbs as `AsyncWanClient`, the same typed models and errors,
without ``async``. Each ``WanClient`` runs one event loop of its own in one thread
(anyio's blocking portal) and an `AsyncWanClient` inside it; every method
hands its work to that loop and blocks until it is done.

Guarantees and limits:

- It works where an event loop already runs in the calling thread (Jupyter, an
  ``async def`` that calls blocking code): its loop is in another thread. Calling
  it blocks the calling thread, as any blocking call does.
- One ``WanClient`` may be used from several threads at once: calls from them run
  concurrently in its loop, sharing one governor, one poll scheduler and one
  connection pool (the account's limits hold across them).
- Close it (``with WanClient() as client:`` or ``client.close()``); a client left
  open is closed when it is garbage collected or at interpreter exit.
- Callbacks given to `subscribe` run in the client's loop thread: keep them
  short and thread-safe.
- Ctrl-C while a method blocks raises ``KeyboardInterrupt`` in the calling thread;
  the work in the loop thread is cancelled (a create already sent is seen through to
  its answer, as in the async client).
- ``http_client`` is not accepted: an ``httpx.AsyncClient`` belongs to one event loop.
"""

from __future__ import annotations

import contextlib
import os
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Self, TypeVar, overload

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import _config
from ._batch_records import BatchItem, CancelPolicy, Requests
from ._client import AsyncWanClient
from ._events import TaskEvent
from ._helpers import ClientStatistics, TaskLike
from ._models import (
    ModelName,
    Reference,
    ShotType,
    Size,
    Task,
    TaskResult,
    TaskStatus,
    TaskSummary,
    VideoRequest,
    keyword_hints,
)
from ._routing import RegionEndpoint

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._limits import Governor, Limits
    from ._polling import PollPolicy
    from ._retry import RetryPolicy
    from .journal import JournalStore

__all__ = ["WanClient"]

T = TypeVar("T")

_DONE = object()


def _shutdown(
    portal_cm: AbstractContextManager[BlockingPortal],
    portal: BlockingPortal,
    client: AsyncWanClient,
) -> None:
    """Close the async client and stop the loop thread (run once; never raises)."""
    with contextlib.suppress(Exception):  # the loop is gone already, or this is its thread
        portal.call(client.aclose)
    with contextlib.suppress(Exception):  # best effort at exit
        portal_cm.__exit__(None, None, None)


@contextlib.asynccontextmanager
async def _journal(
    journal: JournalStore | str | os.PathLike[str] | None,
) -> AsyncIterator[JournalStore | None]:
    """A journal given by path is opened here and closed after the call; a
    `SQLiteJournal` the call opened is disconnected after it (a blocking caller has no
    ``async with`` to close it, and its connection would be left to the garbage
    collector), and opens again on its next use."""
    if journal is None or not isinstance(journal, (str, os.PathLike)):
        # A SQLiteJournal object means its module is loaded: no import for other stores.
        sqlite = sys.modules.get("wanr2v.journal._sqlite")
        opened_here = (
            journal
            if sqlite is not None
            and isinstance(journal, sqlite.SQLiteJournal)
            and not journal._is_connected()  # one the caller opened is the caller's
            else None
        )
        try:
            yield journal
        finally:
            if opened_here is not None:
                with anyio.CancelScope(shield=True):
                    await opened_here._release()
        return
    from .journal import SQLiteJournal

    store = await SQLiteJournal.open(journal)
    async with store:
        yield store


class WanClient:
    """A blocking client for Wan 2.6 reference-to-video, beside `AsyncWanClient`.

    Example::

        from wanr2v import WanClient

        with WanClient(region="singapore") as client:  # key from DASHSCOPE_API_KEY
            result = client.call(
                model="wan2.6-r2v-flash",
                prompt="character1 waves at character2 in front of character3",
                reference_urls=["clips/me.mp4", "dog.png", "beach.jpg"],
                duration=5,
            )
            print(client.download(result, "videos/"))

    Takes the arguments of `AsyncWanClient` (except ``http_client``) and offers
    the same verbs, blocking: `call`, `async_call` (create only),
    `fetch`, `wait`, `cancel`, `list_tasks`, `download`,
    `upload`, `iter_video`, `run_many`, `resume`, ... They
    return the same models and raise the same errors. ``client.aio`` is the
    `AsyncWanClient` inside, for what only the async world offers.
    """

    @keyword_hints
    def __init__(
        self,
        *,
        api_key: str | None = None,
        region: str | None = None,
        base_url: str | None = None,
        workspace: str | None = None,
        timeout: float = _config.DEFAULT_TIMEOUT,
        max_retries: int = _config.DEFAULT_MAX_RETRIES,
        limits: Limits | None = None,
        governor: Governor | None = None,
        poll_policy: PollPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        reconcile: bool = True,
        reconcile_grace: float = 2.0,
        reconcile_wait: float = 900.0,
        allow_insecure: bool = False,
        regions: Mapping[str, str | RegionEndpoint] | None = None,
        time_scale: float = 1.0,
    ) -> None:
        options: dict[str, Any] = dict(
            api_key=api_key,
            region=region,
            base_url=base_url,
            workspace=workspace,
            timeout=timeout,
            max_retries=max_retries,
            limits=limits,
            governor=governor,
            poll_policy=poll_policy,
            retry_policy=retry_policy,
            reconcile=reconcile,
            reconcile_grace=reconcile_grace,
            reconcile_wait=reconcile_wait,
            allow_insecure=allow_insecure,
            regions=regions,
            time_scale=time_scale,
        )
        cm = start_blocking_portal(name="wanr2v-loop")
        portal = cm.__enter__()

        async def make() -> AsyncWanClient:
            return AsyncWanClient(**options)

        try:
            client = portal.call(make)
        except BaseException:
            cm.__exit__(None, None, None)
            raise
        self._portal = portal
        self._aio = client
        self._owner: WanClient | None = None
        # Closes at garbage collection or interpreter exit if the caller did not.
        self._finalizer = weakref.finalize(self, _shutdown, cm, portal, client)

    @classmethod
    def _wrapping(cls, portal: BlockingPortal, client: AsyncWanClient, owner: WanClient) -> Self:
        other = cls.__new__(cls)
        other._portal = portal
        other._aio = client
        other._finalizer = owner._finalizer  # closing a copy closes the original
        other._owner = owner  # keeps the loop alive while the copy is in use
        return other

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections and stop the loop thread (idempotent)."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return not self._finalizer.alive

    def __repr__(self) -> str:
        return repr(self._aio).replace("AsyncWanClient(", "WanClient(", 1)

    @property
    def aio(self) -> AsyncWanClient:
        """The `AsyncWanClient` inside (use it only from its own loop thread)."""
        return self._aio

    @property
    def region(self) -> str:
        """The default region's name."""
        return self._aio.region

    @property
    def base_url(self) -> str:
        """The default region's base URL."""
        return self._aio.base_url

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this client can send to, its default first."""
        return self._aio.regions

    def _run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        if self.closed:
            from ._exceptions import ConfigurationError

            raise ConfigurationError("This WanClient is closed; make a new one.")
        return self._portal.call(fn, *args)

    def with_options(self, *, timeout: float | None = None, max_retries: int | None = None) -> Self:
        """This client with another request timeout or retry count, for one call (see
        `AsyncWanClient.with_options`); the copy needs no closing."""
        clone = self._aio.with_options(timeout=timeout, max_retries=max_retries)
        return type(self)._wrapping(self._portal, clone, self)

    # --- create -------------------------------------------------------------------------

    @keyword_hints
    def async_call(
        self,
        request: VideoRequest | None = None,
        /,
        *,
        model: ModelName | str | None = None,
        prompt: str | None = None,
        reference_urls: Sequence[Reference] | Reference | None = None,
        negative_prompt: str | None = None,
        size: Size | str | None = None,
        duration: int | None = None,
        shot_type: ShotType | str | None = None,
        audio: bool | None = None,
        watermark: bool | None = None,
        seed: int | None = None,
        prompt_extend: bool | None = None,
        extra_input: Mapping[str, Any] | None = None,
        extra_parameters: Mapping[str, Any] | None = None,
        region: str | None = None,
    ) -> Task:
        """Create a task and return its handle at once (the vendor's name for it);
        see `AsyncWanClient.async_call`."""

        async def go() -> Task:
            return await self._aio.async_call(
                request,
                model=model,
                prompt=prompt,
                reference_urls=reference_urls,
                negative_prompt=negative_prompt,
                size=size,
                duration=duration,
                shot_type=shot_type,
                audio=audio,
                watermark=watermark,
                seed=seed,
                prompt_extend=prompt_extend,
                extra_input=extra_input,
                extra_parameters=extra_parameters,
                region=region,
            )

        return self._run(go)

    @keyword_hints
    def call(
        self,
        request: VideoRequest | None = None,
        /,
        *,
        model: ModelName | str | None = None,
        prompt: str | None = None,
        reference_urls: Sequence[Reference] | Reference | None = None,
        negative_prompt: str | None = None,
        size: Size | str | None = None,
        duration: int | None = None,
        shot_type: ShotType | str | None = None,
        audio: bool | None = None,
        watermark: bool | None = None,
        seed: int | None = None,
        prompt_extend: bool | None = None,
        extra_input: Mapping[str, Any] | None = None,
        extra_parameters: Mapping[str, Any] | None = None,
        timeout: float | None = None,
        region: str | None = None,
        on_event: Callable[[TaskEvent], object] | None = None,
    ) -> TaskResult:
        """Create a task and wait for it; see `AsyncWanClient.call`.

        ``on_event`` gets this task's events only (``created``, then each status
        change), called in the event loop's thread while the call lasts.

        Raises:
            TaskFailedError, TaskCanceledError, TaskNotFoundError: a bad end.
            WaitTimeoutError: not final within ``timeout`` (the task goes on).
            InvalidRequestError, SubmitOutcomeUnknownError, APIError: as ``async_call``.
        """

        async def go() -> TaskResult:
            return await self._aio.call(
                request,
                model=model,
                prompt=prompt,
                reference_urls=reference_urls,
                negative_prompt=negative_prompt,
                size=size,
                duration=duration,
                shot_type=shot_type,
                audio=audio,
                watermark=watermark,
                seed=seed,
                prompt_extend=prompt_extend,
                extra_input=extra_input,
                extra_parameters=extra_parameters,
                timeout=timeout,
                region=region,
                on_event=on_event,
            )

        return self._run(go)

    # --- query --------------------------------------------------------------------------

    def task(self, task_id: str, *, region: str | None = None) -> Task:
        """A handle for a task id known from elsewhere; see `AsyncWanClient.task`."""
        return self._aio.task(task_id, region=region)

    def fetch(self, task: TaskLike) -> TaskResult:
        """Query a task once."""
        return self._run(self._aio.fetch, task)

    def wait(
        self,
        task: TaskLike,
        *,
        timeout: float | None = None,
        raise_on_failure: bool = True,
        on_event: Callable[[TaskEvent], object] | None = None,
    ) -> TaskResult:
        """Block until the task is final; see `AsyncWanClient.wait`.

        ``on_event`` gets this task's events while the wait lasts (in the event loop's
        thread).
        """

        async def go() -> TaskResult:
            return await self._aio.wait(
                task, timeout=timeout, raise_on_failure=raise_on_failure, on_event=on_event
            )

        return self._run(go)

    def cancel(self, task: TaskLike) -> None:
        """Cancel a PENDING task."""
        self._run(self._aio.cancel, task)

    def list_tasks(
        self,
        *,
        task_id: str | None = None,
        model: str | None = None,
        status: str | TaskStatus | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        page_size: int = 100,
        max_items: int | None = None,
        base_url: str | None = None,
    ) -> Iterator[TaskSummary]:
        """Iterate over the task list, page by page as you go; arguments checked at once."""
        pages = self._aio.list_tasks(
            task_id=task_id,
            model=model,
            status=status,
            start_time=start_time,
            end_time=end_time,
            page_size=page_size,
            max_items=max_items,
            base_url=base_url,
        )

        async def step() -> object:
            try:
                return await pages.__anext__()
            except StopAsyncIteration:
                return _DONE

        async def stop() -> None:
            aclose = getattr(pages, "aclose", None)
            if aclose is not None:
                await aclose()

        def rows() -> Iterator[TaskSummary]:
            try:
                while True:
                    row = self._run(step)
                    if row is _DONE:
                        return
                    assert isinstance(row, TaskSummary)
                    yield row
            finally:
                if not self.closed:
                    self._portal.call(stop)

        return rows()

    # --- files --------------------------------------------------------------------------

    def upload(
        self, path: str | os.PathLike[str], *, model: ModelName | str, region: str | None = None
    ) -> str:
        """Upload a local file; return its reusable ``oss://`` URL (48 h, same model)."""

        async def go() -> str:
            return await self._aio.upload(path, model=model, region=region)

        return self._run(go)

    @overload
    def download(self, task: TaskLike, dest: str | os.PathLike[str] = ".") -> Path: ...

    @overload
    def download(self, task: TaskLike, dest: BinaryIO) -> int: ...

    def download(self, task: TaskLike, dest: str | os.PathLike[str] | BinaryIO = ".") -> Path | int:
        """Save a succeeded task's video: to a folder (``{task_id}.mp4``), a file name
        (``my-video.mp4``) or a binary file object (returns the bytes written); see
        `AsyncWanClient.download`."""

        async def go() -> Path | int:
            return await self._aio.download(task, dest)

        return self._run(go)

    def iter_video(self, task: TaskLike) -> Iterator[bytes]:
        """The video's bytes as they arrive (nothing on disk)::

        for chunk in client.iter_video(result):
            out.write(chunk)
        """
        portal = self._portal
        aio = self._aio

        async def channel() -> tuple[
            MemoryObjectSendStream[bytes], MemoryObjectReceiveStream[bytes]
        ]:
            return anyio.create_memory_object_stream[bytes](2)

        def chunks() -> Iterator[bytes]:
            send, receive = self._run(channel)

            async def pump() -> None:
                # The whole stream lives in one task of the loop; chunks cross over.
                async with send, aio.stream_video(task) as stream:
                    async for chunk in stream:
                        await send.send(chunk)

            future = portal.start_task_soon(pump)
            try:
                while True:
                    try:
                        chunk = portal.call(receive.receive)
                    except anyio.EndOfStream:
                        break
                    yield chunk
                future.result()  # the stream's error, if it ended with one
            finally:
                future.cancel()
                if not self.closed:
                    portal.call(receive.aclose)

        return chunks()

    # --- batches ------------------------------------------------------------------------

    def run_many(
        self,
        requests: Requests,
        *,
        journal: JournalStore | str | os.PathLike[str] | None = None,
        download_to: str | os.PathLike[str] | None = None,
        fail_fast: bool = False,
        on_cancel: CancelPolicy = "detach",
        spread: bool = False,
        retry_failed: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
    ) -> list[BatchItem]:
        """Run many requests at once; outcomes in input order (see
        `AsyncWanClient.run_many`: journals, ``retry_failed``, file ``name``
        templates, ``budget_usd``). ``journal`` may be a path: a
        `SQLiteJournal` there is opened for the call and closed."""

        async def go() -> list[BatchItem]:
            async with _journal(journal) as store:
                return await self._aio.run_many(
                    requests,
                    journal=store,
                    download_to=download_to,
                    fail_fast=fail_fast,
                    on_cancel=on_cancel,
                    spread=spread,
                    retry_failed=retry_failed,
                    name=name,
                    budget_usd=budget_usd,
                )

        return self._run(go)

    def resume(
        self,
        journal: JournalStore | str | os.PathLike[str],
        *,
        download_to: str | os.PathLike[str] | None = None,
        on_cancel: CancelPolicy = "detach",
        retry_failed: bool = False,
        name: str | None = None,
        budget_usd: float | None = None,
    ) -> list[BatchItem]:
        """Finish a journaled batch after a crash; see `AsyncWanClient.resume`."""

        async def go() -> list[BatchItem]:
            async with _journal(journal) as store:
                assert store is not None
                return await self._aio.resume(
                    store,
                    download_to=download_to,
                    on_cancel=on_cancel,
                    retry_failed=retry_failed,
                    name=name,
                    budget_usd=budget_usd,
                )

        return self._run(go)

    # --- observation --------------------------------------------------------------------

    def subscribe(self, callback: Callable[[TaskEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every lifecycle event (in the loop thread)."""
        return self._aio.subscribe(callback)

    def statistics(self) -> ClientStatistics:
        """Requests sent by kind, answers by status, 429s, creates, reconciliations."""
        return self._aio.statistics()
