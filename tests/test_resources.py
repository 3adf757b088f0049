"""Resource safety: cancellation at any await point leaves nothing behind.

``call``, ``run_many`` and ``download`` are cancelled after random delays (real
seconds against a loopback emulator, so the cancel lands in every phase: pacing,
create, reconciliation, polling, download, rename). After each: no event-loop task,
socket or file descriptor survives, no partial file is left in the download folder,
every file there is a complete MP4, the governor's slots are all free, and no
``ResourceWarning`` is raised (pytest turns warnings into errors, and the tests
collect garbage themselves so a warning is pinned on the test that caused it).
"""

from __future__ import annotations

import gc
import itertools
import random
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests import _chaos
from wanr2v.testing import Emulator, EmulatorConfig, Endpoint, FaultKind, FaultRule, serve
from wanr2v.testing._client import client_for

pytestmark = pytest.mark.anyio

ROUNDS = 14
_SEEDS = itertools.count(10_000)
"""Every request of the module gets its own prompt: the emulator is shared, and two
clients sending one prompt make a lost create ambiguous (rightly)."""


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    """One loopback emulator for the module, with a light mix of faults."""
    config = EmulatorConfig(time_scale=_chaos.SCALE, seed=31, generation_time=(20.0, 60.0))
    with serve(config) as emu:
        emu.faults.add(FaultRule(kind=FaultKind.SLOW, probability=0.2, seed=1, delay=0.05))
        emu.faults.add(FaultRule(kind=FaultKind.DROP, probability=0.03, seed=2))
        emu.faults.add(
            FaultRule(
                kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, probability=0.1, seed=3
            )
        )
        emu.faults.add(FaultRule(kind=FaultKind.EXPIRED_URL, probability=0.2, seed=4))
        yield emu


def complete_mp4(path: Path) -> bool:
    """Whether the file is a whole MP4: ``ftyp`` first and top-level boxes that add up."""
    data = path.read_bytes()
    if data[4:8] != b"ftyp":
        return False
    offset = 0
    while offset < len(data):
        if offset + 8 > len(data):
            return False
        (size,) = struct.unpack(">I", data[offset : offset + 4])
        if size < 8:
            return False
        offset += size
    return offset == len(data)


def folder_state(folder: Path) -> tuple[list[str], list[str]]:
    """(partial files, incomplete videos) in ``folder``."""
    if not folder.exists():
        return [], []
    partial = _chaos.part_files(folder)
    broken = [p.name for p in folder.glob("*.mp4") if not complete_mp4(p)]
    return partial, broken


class Baseline:
    """Descriptors and event-loop tasks before a test, to compare with after it."""

    def __init__(self) -> None:
        gc.collect()
        self.fds = _chaos.open_fds()
        self.tasks = _chaos.live_tasks()

    async def check(self) -> None:
        await anyio.lowlevel.checkpoint()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            gc.collect()
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert leaks == [], leaks
        assert _chaos.live_tasks() == self.tasks
        assert await anyio.to_thread.run_sync(_chaos.settle_fds, self.fds) == {}


def governor_idle(client: object) -> None:
    gov = client.governor.statistics()  # type: ignore[attr-defined]
    assert (gov.http_in_flight, gov.http_waiting, gov.tasks_in_flight, gov.tasks_waiting) == (
        0,
        0,
        0,
        0,
    )
    assert all(r.waiting == 0 for r in gov.rates.values()), gov.rates


async def test_run_many_cancelled_anywhere_leaves_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    """run_many (downloading) cancelled at random points: no task, socket, fd or partial file left."""
    rng = random.Random(41)
    base = Baseline()
    folder = tmp_path / "videos"
    for _ in range(ROUNDS):
        delay = rng.uniform(0.0, 1.2)
        async with client_for(emulator, **_chaos.client_kwargs()) as client:
            with anyio.move_on_after(delay):
                await client.run_many(_chaos.requests(4, next(_SEEDS)), download_to=folder)
            governor_idle(client)
        partial, broken = await anyio.to_thread.run_sync(folder_state, folder)
        assert partial == [] and broken == [], (delay, partial, broken)
    await base.check()


async def test_call_cancelled_anywhere_keeps_the_client_clean(emulator: Emulator) -> None:
    """One long-lived client, ``call`` cancelled at random points: slots freed, nothing leaks."""
    rng = random.Random(42)
    base = Baseline()
    async with client_for(emulator, **_chaos.client_kwargs()) as client:
        for _ in range(ROUNDS):
            fields = _chaos.requests(1, next(_SEEDS))["item-0000"]
            with anyio.move_on_after(rng.uniform(0.0, 0.8)):
                await client.call(**fields)
            governor_idle(client)
        # The client still works after all that.
        with anyio.fail_after(120):  # a hang bound only
            result = await client.call(**_chaos.requests(1, next(_SEEDS))["item-0000"])
        assert result.succeeded
    await base.check()


async def test_download_cancelled_anywhere_leaves_no_partial_file(
    emulator: Emulator, tmp_path: Path
) -> None:
    """``download`` cancelled at random points: never a partial file, never an fd left open."""
    rng = random.Random(43)
    async with client_for(emulator, **_chaos.client_kwargs()) as client:
        with anyio.fail_after(120):  # a hang bound only
            results = [await client.call(**f) for f in _chaos.requests(3, next(_SEEDS)).values()]
    base = Baseline()
    async with client_for(emulator, **_chaos.client_kwargs()) as client:
        for i in range(ROUNDS * 2):
            folder = tmp_path / f"round-{i}"
            with anyio.move_on_after(rng.uniform(0.0, 0.15)):
                await client.download(results[i % len(results)], folder)
            partial, broken = await anyio.to_thread.run_sync(folder_state, folder)
            assert partial == [] and broken == [], (i, partial, broken)
    await base.check()


async def test_cancelled_batch_with_cancel_pending_leaves_no_pending_task(
    emulator: Emulator, tmp_path: Path
) -> None:
    """``on_cancel="cancel_pending"``: after the cancel, none of the batch's known tasks is
    PENDING; only a create lost and still being reconciled at the cancel may have left one
    (the client lists those in ``unresolved``; a journal would resume them)."""
    before = {r.task_id for r in emulator.task_records()}
    created_before = emulator.stats().tasks_created

    async def cancel_after_ten_creates(scope: anyio.CancelScope) -> None:
        # The cancel point is progress (ten tasks made, five of them still queued behind
        # the five running slots), not a clock a loaded machine could outrun.
        # (The emulator serves from another thread: no event to wait on, so poll it.)
        while emulator.stats().tasks_created < created_before + 10:  # noqa: ASYNC110
            await anyio.sleep(0.005)
        scope.cancel()

    async with client_for(emulator, **_chaos.client_kwargs()) as client:
        with anyio.fail_after(120):  # a hang bound only
            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel_after_ten_creates, tg.cancel_scope)
                await client.run_many(
                    _chaos.requests(30, next(_SEEDS)),
                    download_to=tmp_path,
                    on_cancel="cancel_pending",
                )
        governor_idle(client)
        unresolved = len(client.unresolved)
    mine = [r for r in emulator.task_records() if r.task_id not in before]
    assert mine, "the batch should have created tasks before the cancel"
    assert len([r.task_id for r in mine if r.status == "PENDING"]) <= unresolved


async def test_abandoned_waits_do_not_accumulate_in_the_scheduler(emulator: Emulator) -> None:
    """``call`` cancelled mid-wait, ten times: the scheduler does not keep ten watches."""
    async with client_for(emulator, **_chaos.client_kwargs()) as client:
        for _ in range(10):
            with anyio.move_on_after(0.05):
                await client.call(**_chaos.requests(1, next(_SEEDS))["item-0000"])
        assert client._scheduler.statistics().watched == 0
