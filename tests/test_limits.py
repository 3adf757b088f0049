"""The governor under virtual time (trio's MockClock): rates, priority, AIMD, slots."""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio.testing

from wanr2v import Governor, Limits
from wanr2v._limits import Kind

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """trio with an autojumping virtual clock: sleeps take no real time."""
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


def max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best = 0
    j = 0
    for i, t in enumerate(times):
        while times[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_creates_never_exceed_rate() -> None:
    """100 creates fired at once are granted at most 5 in any one-second window."""
    g = Governor(Limits())
    times: list[float] = []

    async def one() -> None:
        await g.acquire("create")
        times.append(trio.current_time())

    async with trio.open_nursery() as n:
        for _ in range(100):
            n.start_soon(one)
    assert len(times) == 100
    assert max_in_window(times) <= 5
    # ... and not much slower than the rate allows (5/s with the safety margin).
    assert max(times) - min(times) == pytest.approx(99 / (5 * 0.92), rel=0.02)


async def test_queries_budget_and_share() -> None:
    """Queries keep to 20/s, and to half of it with query_share=0.5."""
    for share, cap in ((1.0, 20), (0.5, 10)):
        g = Governor(Limits(query_share=share))
        times: list[float] = []

        async def one(g: Governor = g, times: list[float] = times) -> None:
            await g.acquire("query")
            times.append(trio.current_time())

        async with trio.open_nursery() as n:
            for _ in range(200):
                n.start_soon(one)
        assert max_in_window(times) <= cap


async def test_priority_order() -> None:
    """Waiters are served by priority, lowest first, FIFO among equals."""
    g = Governor(Limits(creates_per_second=1))
    await g.acquire("create")  # spend the burst
    order: list[int] = []

    async def one(p: int) -> None:
        await g.acquire("create", priority=p)
        order.append(p)

    async with trio.open_nursery() as n:
        for p in (5, 3, 9, 1, 3):
            n.start_soon(one, p)
            await trio.sleep(0.01)
    # A more urgent newcomer takes over from a head that sleeps for its token.
    assert order == [1, 3, 3, 5, 9]


async def test_throttle_halves_then_recovers() -> None:
    """A 429 halves the rate and pauses for Retry-After; the rate recovers gradually."""
    g = Governor(Limits())
    base = g.statistics().rates["query"].current_rate
    assert base is not None
    g.throttled("query", retry_after=2.0)
    st = g.statistics().rates["query"]
    assert st.current_rate == pytest.approx(base / 2) and st.paused_for == pytest.approx(2.0)
    start = trio.current_time()
    await g.acquire("query")
    assert trio.current_time() - start >= 2.0
    await trio.sleep(1)
    mid = g.statistics().rates["query"].current_rate
    assert mid is not None and base / 2 < mid < base
    await trio.sleep(10)
    assert g.statistics().rates["query"].current_rate == pytest.approx(base)
    assert g.statistics().throttled_total == 1


async def test_cancelled_waiter_does_not_block_others() -> None:
    """A waiter cancelled in the middle of the queue hands its turn on."""
    g = Governor(Limits(creates_per_second=1))
    await g.acquire("create")
    got: list[str] = []

    async def one(name: str) -> None:
        await g.acquire("create")
        got.append(name)

    async with trio.open_nursery() as n:
        n.start_soon(one, "head")
        await trio.sleep(0.01)
        async with trio.open_nursery() as inner:
            inner.start_soon(one, "x")
            await trio.sleep(0.01)
            n.start_soon(one, "a")
            await trio.sleep(0.01)
            inner.cancel_scope.cancel()
    assert got == ["head", "a"]
    assert g.statistics().rates["create"].waiting == 0


async def test_cancel_head_hands_over() -> None:
    """Cancelling the sleeping head lets the next waiter through on time."""
    g = Governor(Limits(creates_per_second=1))
    await g.acquire("create")
    got: list[float] = []

    async def one() -> None:
        await g.acquire("create")
        got.append(trio.current_time())

    async with trio.open_nursery() as n, trio.open_nursery() as head:
        head.start_soon(one)
        await trio.sleep(0.1)
        n.start_soon(one)
        await trio.sleep(0.1)
        head.cancel_scope.cancel()
    assert len(got) == 1 and got[0] < 1.5


async def test_task_slots_cap_in_flight() -> None:
    """task_slot never lets more than max_in_flight through."""
    g = Governor(Limits(max_in_flight=3))
    peak = 0
    live = 0

    async def one() -> None:
        nonlocal peak, live
        async with g.task_slot():
            live += 1
            peak = max(peak, live)
            await trio.sleep(1)
            live -= 1

    async with trio.open_nursery() as n:
        for _ in range(10):
            n.start_soon(one)
        await trio.sleep(0.5)
        st = g.statistics()
        assert st.tasks_in_flight == 3 and st.tasks_waiting == 7
    assert peak == 3


def test_limits_validation() -> None:
    """Nonsense limits are refused with the option's name."""
    with pytest.raises(ValueError, match="creates_per_second"):
        Limits(creates_per_second=0)
    with pytest.raises(ValueError, match="query_share"):
        Limits(query_share=1.5)
    assert Limits().scaled(10).creates_per_second == 50


# --- HTTP slots: polls before creates -------------------------------------------------


async def test_http_slots_serve_polls_before_creates() -> None:
    """A freed HTTP slot goes to a waiting query before any waiting create: queries by
    priority (a poll's due time), then creates in arrival order."""
    g = Governor(Limits.unlimited(max_connections=1))
    order: list[str] = []
    release = trio.Event()

    async def holder() -> None:
        async with g.http_slot("create", 0.0):
            await release.wait()

    async def one(name: str, kind: Kind, priority: float) -> None:
        async with g.http_slot(kind, priority):
            order.append(name)
            await trio.sleep(0.1)

    async with trio.open_nursery() as n:
        n.start_soon(holder)
        await trio.sleep(0.01)
        # A burst of creates arrives first, then polls that fall due one after another.
        for i in range(3):
            n.start_soon(one, f"create{i}", "create", float(i))
            await trio.sleep(0.01)
        for name, due in (("poll-late", 9.0), ("poll-early", 1.0), ("cancel", 5.0)):
            n.start_soon(one, name, "query" if name.startswith("poll") else "cancel", due)
            await trio.sleep(0.01)
        st = g.statistics()
        assert st.http_in_flight == 1 and st.http_waiting == 6
        release.set()
    assert order == ["poll-early", "cancel", "poll-late", "create0", "create1", "create2"]
    st = g.statistics()
    assert st.http_in_flight == 0 and st.http_waiting == 0


async def test_http_slot_free_is_taken_without_a_checkpoint() -> None:
    """Uncontended, a slot is taken at once: not even a cancelled scope interrupts it
    (no checkpoint, as anyio's Semaphore(fast_acquire=True))."""
    g = Governor(Limits.unlimited(max_connections=2))
    with trio.CancelScope() as scope:
        scope.cancel()
        async with g.http_slot("create"), g.http_slot("query"):
            assert g.statistics().http_in_flight == 2
    assert g.statistics().http_in_flight == 0


async def test_http_slot_cancelled_waiter_is_skipped() -> None:
    """A waiter cancelled in the queue is skipped: the slot goes to the next one."""
    g = Governor(Limits.unlimited(max_connections=1))
    got: list[str] = []

    async def one(name: str, kind: Kind = "query") -> None:
        async with g.http_slot(kind):
            got.append(name)
            await trio.sleep(0.1)

    async with trio.open_nursery() as n:
        n.start_soon(one, "first")
        await trio.sleep(0.01)
        async with trio.open_nursery() as doomed:
            doomed.start_soon(one, "cancelled", "query")
            await trio.sleep(0.01)
            n.start_soon(one, "create", "create")
            await trio.sleep(0.01)
            doomed.cancel_scope.cancel()
    assert got == ["first", "create"]
    st = g.statistics()
    assert st.http_in_flight == 0 and st.http_waiting == 0


def test_http_slot_granted_then_cancelled_passes_it_on() -> None:
    """Under asyncio a waiter can be cancelled after its slot was handed to it but
    before it ran: the slot then goes to the next waiter instead of being lost."""

    async def main() -> list[str]:
        g = Governor(Limits.unlimited(max_connections=1))
        got: list[str] = []

        async def one(name: str) -> None:
            async with g.http_slot():
                got.append(name)

        slot = g.http_slot()
        await slot.__aenter__()
        raced = asyncio.ensure_future(one("raced"))
        nxt = asyncio.ensure_future(one("next"))
        await asyncio.sleep(0)  # both wait now
        await slot.__aexit__(None, None, None)  # handed to "raced"...
        raced.cancel()  # ...which is cancelled before it runs
        await asyncio.wait_for(asyncio.gather(raced, nxt, return_exceptions=True), 5)
        assert raced.cancelled()
        st = g.statistics()
        assert st.http_in_flight == 0 and st.http_waiting == 0
        return got

    assert asyncio.run(main()) == ["next"]


def test_http_slot_cancelled_in_queue_under_asyncio() -> None:
    """Under asyncio a waiter cancelled in the queue (its wait already cancelled when
    the slot frees) is skipped: the next waiter gets the slot, none is lost."""

    async def main() -> list[str]:
        g = Governor(Limits.unlimited(max_connections=1))
        got: list[str] = []

        async def one(name: str) -> None:
            async with g.http_slot():
                got.append(name)

        slot = g.http_slot()
        await slot.__aenter__()
        doomed = asyncio.ensure_future(one("doomed"))
        nxt = asyncio.ensure_future(one("next"))
        await asyncio.sleep(0)
        doomed.cancel()  # its wait is cancelled now; its cleanup runs later
        await slot.__aexit__(None, None, None)
        await asyncio.wait_for(asyncio.gather(doomed, nxt, return_exceptions=True), 5)
        st = g.statistics()
        assert st.http_in_flight == 0 and st.http_waiting == 0
        return got

    assert asyncio.run(main()) == ["next"]
