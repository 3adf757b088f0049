"""The client end to end against the emulator on a real loopback socket."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import wanr2v
from wanr2v import AsyncWanClient, TaskStatus
from wanr2v._polling import PollPolicy
from wanr2v.testing import Emulator, EmulatorConfig, Endpoint, FaultKind, FaultRule, serve
from wanr2v.testing._client import client_for

pytestmark = pytest.mark.anyio

FIELDS: dict[str, Any] = {
    "model": "wan2.6-r2v-flash",
    "prompt": "character1 waves at character2 in front of character3",
    "reference_urls": [
        "https://cdn.example.com/role1.mp4",
        "https://cdn.example.com/dog.png",
        "https://cdn.example.com/beach.jpg",
    ],
    "duration": 5,
    "size": "1280*720",
}


async def test_call_succeeds_with_usage(wan_client: AsyncWanClient, wan_emulator: Emulator) -> None:
    """call() creates, waits and returns a SUCCEEDED result with a video URL and usage."""
    result = await wan_client.call(**FIELDS)
    assert result.status is TaskStatus.SUCCEEDED and result.video_url
    assert result.usage is not None and result.usage.output_video_duration == 5
    assert result.orig_prompt == FIELDS["prompt"]
    stats = wan_emulator.stats()
    assert stats.tasks_created == 1 and stats.duplicate_creates == 0


async def test_gather_many_no_429() -> None:
    """Twelve calls fired at once under the vendor's quotas all succeed, 429s are rare.

    The quotas run at real time (a one-second window; short tasks keep the test fast):
    at 60x one emulator second is 17 ms of real time, and the scheduling jitter of a
    loaded machine alone would bunch requests that left evenly spaced into one window."""
    config = EmulatorConfig(time_scale=1.0, generation_time=(0.5, 1.0), seed=2)
    polls = PollPolicy(min_interval=0.1, prior=(0.5, 1.0))
    with serve(config) as emu:
        async with client_for(emu, poll_policy=polls) as c:
            results: list[wanr2v.TaskResult] = []

            async def one(i: int) -> None:
                results.append(await c.call(**{**FIELDS, "seed": i}))

            async with anyio.create_task_group() as tg:
                for i in range(12):
                    tg.start_soon(one, i)
            assert len(results) == 12 and all(r.succeeded for r in results)
            st = c.statistics()
        assert st.rate_limited <= 2
        assert emu.stats().tasks_created == 12


async def test_two_waits_share_polls(wan_client: AsyncWanClient, wan_emulator: Emulator) -> None:
    """Two waits on one task share its queries."""
    task = await wan_client.async_call(**FIELDS)
    out: list[wanr2v.TaskResult] = []
    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(lambda: _append(out, wan_client.wait(task)))
    assert len(out) == 2 and out[0] is out[1]
    assert wan_client.statistics().scheduler.shared_waits == 1


async def _append(out: list[wanr2v.TaskResult], coro: object) -> None:
    out.append(await coro)  # type: ignore[misc]


async def test_wait_raises_typed_failed(wan_client: AsyncWanClient, wan_emulator: Emulator) -> None:
    """A task that ends FAILED raises TaskFailedError with its code and task id."""
    wan_emulator.faults.add(
        FaultRule(
            kind=FaultKind.FAIL_TASK,
            endpoint=Endpoint.CREATE,
            count=1,
            code="InternalError.Algo",
            message="algo broke",
        )
    )
    task = await wan_client.async_call(**FIELDS)
    with pytest.raises(wanr2v.TaskFailedError) as ei:
        await wan_client.wait(task)
    assert ei.value.task_id == task.task_id and ei.value.code == "InternalError.Algo"


async def test_unknown_task_raises_not_found(wan_client: AsyncWanClient) -> None:
    """A task id the service never made is UNKNOWN: TaskNotFoundError."""
    with pytest.raises(wanr2v.TaskNotFoundError):
        await wan_client.wait("0000-not-a-task")


async def test_cancel_pending_then_wait_canceled(wan_emulator: Emulator) -> None:
    """A PENDING task (queue full) can be canceled; its wait raises TaskCanceledError.

    The sixth task is also held PENDING by poll count: a machine slow enough for a slot
    to free before the cancel cannot start it first."""
    async with client_for(wan_emulator) as c:
        tasks = [await c.async_call(**{**FIELDS, "seed": i}) for i in range(5)]
        wan_emulator.script_polls(("PENDING", 10**9), "SUCCEEDED")
        tasks.append(await c.async_call(**{**FIELDS, "seed": 5}))
        await c.cancel(tasks[-1])
        with pytest.raises(wanr2v.TaskCanceledError):
            await c.wait(tasks[-1])
        with pytest.raises(wanr2v.UnsupportedOperationError):
            await c.cancel(tasks[0])


async def test_wait_timeout_and_fail_after(
    wan_client: AsyncWanClient, wan_emulator: Emulator
) -> None:
    """wait(timeout=) raises WaitTimeoutError; anyio.fail_after around wait works too.

    The task stays PENDING (by poll count, not by clock) until both timeouts have
    struck, so a slow machine cannot let it finish first; then it succeeds."""
    wan_emulator.script_polls(("PENDING", 10**9), "SUCCEEDED")
    task = await wan_client.async_call(**FIELDS)
    with pytest.raises(wanr2v.WaitTimeoutError):
        await wan_client.wait(task, timeout=0.05)
    with pytest.raises(TimeoutError), anyio.fail_after(0.05):
        await wan_client.wait(task)
    wan_emulator.script_polls("SUCCEEDED", task_id=task.task_id)
    assert (await wan_client.wait(task)).succeeded


async def test_list_tasks_against_emulator(wan_client: AsyncWanClient) -> None:
    """list_tasks sees the tasks this key made."""
    made = {(await wan_client.async_call(**{**FIELDS, "seed": i})).task_id for i in range(3)}
    listed = {t.task_id async for t in wan_client.list_tasks(model=FIELDS["model"], page_size=2)}
    assert made <= listed


async def test_read_timeout_create_reconciled_no_duplicate() -> None:
    """A create dropped after commit is found by reconciliation: one task, no duplicate."""
    with serve(EmulatorConfig(time_scale=60, generation_time=(60, 120), seed=3)) as emu:
        emu.faults.add(
            FaultRule(kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, count=1)
        )
        async with client_for(emu, reconcile_grace=0.05) as c:
            task = await c.async_call(**FIELDS)
            result = await c.wait(task)
        assert result.succeeded
        st = emu.stats()
        assert st.tasks_created == 1 and st.duplicate_creates == 0
        assert c.statistics().reconciled == 1


async def test_drop_before_commit_resent_once() -> None:
    """A create dropped before anything was made is proven absent and sent again once."""
    with serve(EmulatorConfig(time_scale=60, generation_time=(60, 120), seed=4)) as emu:
        emu.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.CREATE, count=1))
        async with client_for(emu, reconcile_grace=0.05) as c:
            task = await c.async_call(**FIELDS)
            assert (await c.wait(task)).succeeded
        st = emu.stats()
        assert st.tasks_created == 1 and st.duplicate_creates == 0


async def test_poll_errors_never_end_a_wait() -> None:
    """Three 5xx in a row on polls do not end the wait (the vendor's SDK lost tasks so)."""
    with serve(EmulatorConfig(time_scale=60, generation_time=(60, 120), seed=5)) as emu:
        async with client_for(emu) as c:
            task = await c.async_call(**FIELDS)
            emu.faults.add(FaultRule(kind=FaultKind.SERVER_ERROR, endpoint=Endpoint.QUERY, count=3))
            emu.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.QUERY, count=2))
            assert (await c.wait(task)).succeeded
            assert c.statistics().scheduler.transient_errors >= 3
