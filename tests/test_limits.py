"""The governor under virtual time (trio's MockClock): rates, priority, AIMD, slots."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from wanr2v import Governor, Limits

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
