"""Reconciliation in worlds less kind than the default emulator: never pay twice.

A create whose answer is lost is reconciled: its task is found and adopted, or the
service is proven to have made none (and the create is sent once more), or the
client refuses with ``SubmitOutcomeUnknownError``. In each less kind world (tasks
listed late, dropped creates committed late, prompts echoed normalized, small list
pages, queries that lag) a lost create must end with **0 duplicate creates** and
either adoption or that error. A young task that answers UNKNOWN is polled again
for ``PollPolicy.unknown_grace`` before ``TaskNotFoundError``; an old one is not.

The emulator runs 50x faster than real time: a 5 s lag is 0.1 s here.
"""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import attrs
import httpx
import pytest

from wanr2v import ConfigurationError, SubmitOutcomeUnknownError, TaskNotFoundError
from wanr2v._polling import PollPolicy
from wanr2v._reconcile import echo_conflict, normalize_prompt, prompts_match
from wanr2v._wire import fingerprint, parse_result
from wanr2v.testing import (
    Emulator,
    EmulatorConfig,
    Endpoint,
    FaultKind,
    FaultRule,
    Quotas,
    client_for,
    serve,
)

pytestmark = pytest.mark.anyio

SCALE = 50.0
LAG = 5.0
"""Emulator seconds of every lag and delay (the issue's worst case)."""
FIELDS: dict[str, Any] = {
    "model": "wan2.6-r2v-flash",
    "prompt": "character1 waves at character2",
    "reference_urls": ["https://cdn.example.com/me.mp4", "https://cdn.example.com/dog.png"],
    "duration": 5,
    "size": "1280*720",
}


def world(seed: int, **knobs: Any) -> EmulatorConfig:
    """50x time, quotas off, 20 s generation, the given knobs."""
    return EmulatorConfig(
        time_scale=SCALE, seed=seed, generation_time=(20.0, 20.0), quotas=Quotas.off(), **knobs
    )


def lose_next_create(emu: Emulator) -> None:
    emu.faults.add(FaultRule(kind=FaultKind.DROP_AFTER_COMMIT, endpoint=Endpoint.CREATE, count=1))


async def call_with_lost_create(emu: Emulator, fields: dict[str, Any]) -> tuple[str, int]:
    """Lose the create's answer, then run the call to its end: (task id, reconciled)."""
    lose_next_create(emu)
    async with client_for(emu, reconcile_grace=0.01) as client:
        with anyio.fail_after(30):
            task = await client.async_call(**fields)
            result = await client.wait(task)
        assert result.succeeded
        return task.task_id, client.statistics().reconciled


# --- the pure parts -----------------------------------------------------------------


def test_prompts_are_compared_after_the_services_normalization() -> None:
    """NFC, trimmed, whitespace runs collapsed, cut at 1500 (before or after): same prompt;
    a different word is not."""
    ours = "  Cafe\u0301   waves\n\tat  character2 "
    assert normalize_prompt(ours) == "Caf\u00e9 waves at character2"
    assert prompts_match(ours, "Caf\u00e9 waves at character2")
    assert prompts_match(ours, ours)
    assert not prompts_match(ours, "Caf\u00e9 waves at character3")
    long = "x" * 1499 + "  y" + "z" * 100
    assert prompts_match(long, long[:1500])
    assert prompts_match(long, normalize_prompt(long)[:1500])
    assert not prompts_match(long, "x" * 1500)


def test_echoed_parameters_disprove_a_candidate() -> None:
    """A candidate whose ``usage`` shows another size or duration is someone else's."""
    body = {
        "model": "m",
        "input": {"prompt": "p"},
        "parameters": {"size": "1280*720", "duration": 5},
    }

    def answer(size: str, duration: int) -> Any:
        usage = {"size": size, "output_video_duration": duration, "duration": duration}
        data = {"output": {"task_id": "t", "task_status": "SUCCEEDED"}, "usage": usage}
        return parse_result(data, task_id="t", base_url=None)

    assert echo_conflict(body, answer("1280*720", 5)) is None
    assert "size" in str(echo_conflict(body, answer("960*960", 5)))
    assert "duration" in str(echo_conflict(body, answer("1280*720", 10)))


def test_settle_and_grace_settings_are_checked() -> None:
    """``reconcile_settle`` defaults to 15 s of service time and refuses negatives;
    ``PollPolicy.unknown_grace`` defaults to 30 s and refuses negatives."""
    with serve(world(1)) as emu:
        client = client_for(emu)
        assert client._creator.settle == 15.0
        assert client._scheduler.policy.unknown_grace == 30.0
        with pytest.raises(ConfigurationError, match="reconcile_settle"):
            client_for(emu, reconcile_settle=-1.0)
    with pytest.raises(ValueError, match="unknown_grace"):
        PollPolicy(unknown_grace=-1.0)


# --- a lost create in each less kind world ------------------------------------------


@pytest.mark.parametrize(
    "knobs",
    [
        pytest.param({"list_lag": LAG}, id="list_lag"),
        pytest.param({"commit_delay": LAG}, id="commit_delay"),
        pytest.param({"prompt_normalization": True}, id="normalization"),
        pytest.param({"query_lag": LAG}, id="query_lag"),
        pytest.param({"page_size_cap": 1}, id="page_size_cap"),
        pytest.param(
            {
                "list_lag": LAG,
                "commit_delay": LAG,
                "query_lag": LAG,
                "prompt_normalization": True,
                "page_size_cap": 2,
            },
            id="all",
        ),
    ],
)
async def test_lost_create_is_adopted_never_paid_twice(knobs: dict[str, Any]) -> None:
    """A lost create, in a world where the task shows late (or its prompt comes back
    normalized, or pages are small): found and adopted; one task, 0 duplicates."""
    fields = {**FIELDS, "prompt": "  character1   waves at Cafe\u0301 character2 "}
    with serve(world(11, **knobs)) as emu:
        task_id, reconciled = await call_with_lost_create(emu, fields)
        st = emu.stats()
        records = emu.task_records()
    assert st.duplicate_creates == 0 and st.tasks_created == 1
    assert reconciled == 1
    assert task_id == records[0].task_id


async def test_small_pages_are_all_read() -> None:
    """With pages capped at 3, a lost task on the last of several pages of other
    candidates (another process's, created after the send) is still found."""
    with serve(world(12, page_size_cap=3)) as emu:
        async with client_for(emu) as other, client_for(emu, reconcile_grace=0.01) as client:
            lose_next_create(emu)
            sent_at = time.time()
            with pytest.raises(SubmitOutcomeUnknownError) as err:
                async with client_for(emu, reconcile=False) as once:
                    await once.async_call(**FIELDS)
            for i in range(8):  # newer, so listed first: the lost one is last
                await other.async_call(**{**FIELDS, "prompt": f"another take {i}"})
            with anyio.fail_after(30):
                found = await client._creator.reconcile(
                    _body(FIELDS), sent_at=sent_at, error=err.value
                )
        st = emu.stats()
        first = emu.task_records()[0]
    assert found is not None and found.task_id == first.task_id
    assert st.tasks_created == 9 and st.duplicate_creates == 0
    assert st.requests["list"][200] >= 3  # at least three pages of three


def _body(fields: dict[str, Any]) -> dict[str, Any]:
    from wanr2v._models import VideoRequest
    from wanr2v._wire import request_body

    return request_body(VideoRequest(**fields))


async def test_absence_is_proven_only_after_the_settle_period() -> None:
    """A create dropped before anything was made: the create is sent again only after
    an empty listing sent ``reconcile_settle`` after the loss (emulator time), once."""
    with serve(world(13, list_lag=LAG, commit_delay=LAG)) as emu:
        emu.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.CREATE, count=1))
        lost_at = emu.now()
        async with client_for(emu, reconcile_grace=0.01) as client:
            with anyio.fail_after(30):
                task = await client.async_call(**FIELDS)
        st = emu.stats()
        (record,) = emu.task_records()
    assert st.tasks_created == 1 and st.duplicate_creates == 0
    assert record.task_id == task.task_id
    assert st.requests["list"][200] >= 2  # a first look, then the settled one
    assert record.submit_time - lost_at >= 15.0 - 0.5


async def test_a_late_commit_beyond_an_unsettled_look_is_not_paid_twice() -> None:
    """The settle period is what saves money: with ``reconcile_settle=0`` a create that
    commits late is re-sent (a duplicate); with the default it is adopted. (Time runs
    10x here, so the unsettled look surely comes before the late commit.)"""
    results = {}
    for settle in (0.0, 15.0):
        config = attrs.evolve(world(14, commit_delay=LAG), time_scale=10.0)
        with serve(config) as emu:
            lose_next_create(emu)
            async with client_for(emu, reconcile_grace=0.01, reconcile_settle=settle) as client:
                with anyio.fail_after(30):
                    await client.async_call(**FIELDS)
            results[settle] = emu.stats().duplicate_creates
    assert results == {0.0: 1, 15.0: 0}


def lost(body: dict[str, Any]) -> SubmitOutcomeUnknownError:
    return SubmitOutcomeUnknownError("lost", fingerprint=fingerprint(body))


async def test_two_look_alike_candidates_refuse() -> None:
    """Another process of the account made the same request (same prompt up to
    whitespace) after our create was lost: two candidates, so
    ``SubmitOutcomeUnknownError`` naming both, and nothing is sent again."""
    body = _body(FIELDS)
    with serve(world(15, prompt_normalization=True)) as emu:
        async with client_for(emu) as other, client_for(emu, reconcile_grace=0.01) as client:
            sent_at = time.time()
            lose_next_create(emu)
            with pytest.raises(SubmitOutcomeUnknownError):
                async with client_for(emu, reconcile=False) as once:
                    await once.async_call(**FIELDS)
            await other.async_call(**{**FIELDS, "prompt": FIELDS["prompt"] + "  "})
            with pytest.raises(SubmitOutcomeUnknownError) as err, anyio.fail_after(30):
                await client._creator.reconcile(body, sent_at=sent_at, error=lost(body))
        st = emu.stats()
        ids = {r.task_id for r in emu.task_records()}
    assert st.tasks_created == 2 and len(ids) == 2
    assert set(err.value.candidates) == ids
    assert "2 matching" in str(err.value)


async def test_same_prompt_other_size_is_someone_elses() -> None:
    """A candidate with our prompt but another size (its ``usage`` says so) is not
    ours: the service is proven to have made nothing for us."""
    body = _body(FIELDS)
    with serve(world(16)) as emu:
        async with client_for(emu) as other, client_for(emu, reconcile_grace=0.01) as client:
            sent_at = time.time()
            theirs = await other.async_call(**{**FIELDS, "size": "960*960"})
            with anyio.fail_after(30):
                found = await client._creator.reconcile(body, sent_at=sent_at, error=lost(body))
            assert (await client.fetch(theirs)).orig_prompt == FIELDS["prompt"]
    assert found is None


# --- UNKNOWN while young --------------------------------------------------------------


async def test_a_young_task_answering_unknown_is_polled_again() -> None:
    """Queries lag 40 s: a task created (not lost) answers UNKNOWN at first, and the
    wait goes on (within a 60 s grace) until it is known, then succeeds."""
    with serve(world(17, query_lag=40.0)) as emu:
        policy = PollPolicy(unknown_grace=60.0).scaled(SCALE)
        async with client_for(emu, poll_policy=policy) as client:
            task = await client.async_call(**FIELDS)
            assert (await client.fetch(task.task_id)).status.value == "UNKNOWN"
            with anyio.fail_after(30):
                result = await client.wait(task)
    assert result.succeeded


def queries(client: Any) -> int:
    return int(client.statistics().requests.get("query", 0))


async def test_the_unknown_grace_is_bounded() -> None:
    """A task that stays UNKNOWN past ``unknown_grace`` ends in ``TaskNotFoundError``
    (after more than one query, and no sooner than the grace); a task of unknown age
    ends at its first UNKNOWN."""
    with serve(world(18, query_lag=10_000.0)) as emu:
        policy = PollPolicy(unknown_grace=60.0).scaled(SCALE)
        async with client_for(emu, poll_policy=policy) as client:
            task = await client.async_call(**FIELDS)
            with anyio.fail_after(30), pytest.raises(TaskNotFoundError):
                await client.wait(task)
            assert queries(client) >= 2
            age = emu.now() - emu.task_records()[0].submit_time
            assert age >= 60.0 - 1.0
            elsewhere = client.task(emu.task_records()[0].task_id)
            before = queries(client)
            with anyio.fail_after(30), pytest.raises(TaskNotFoundError):
                await client.wait(elsewhere)
            assert queries(client) - before == 1


# --- a listing that hides rows ----------------------------------------------------------


class _HidingLists(httpx.AsyncBaseTransport):
    """The emulator, behind a proxy that drops the last row of every list page while
    the page still reports the full ``total``: a service whose listing is inconsistent."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "GET" or not request.url.path.endswith("/tasks"):
            return response
        data = json.loads(await response.aread())
        data["data"] = data.get("data", [])[:-1]
        headers = [
            (k, v)
            for k, v in response.headers.items()
            if k.lower() not in ("content-length", "content-encoding")
        ]
        return httpx.Response(response.status_code, headers=headers, json=data)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_an_incomplete_listing_proves_nothing() -> None:
    """The list shows fewer tasks than its ``total``: the lost create is not proven
    absent, so ``SubmitOutcomeUnknownError`` and nothing sent again."""
    emu = Emulator(world(19))
    lose_next_create(emu)
    http = httpx.AsyncClient(transport=_HidingLists(emu.transport()), timeout=30.0)
    async with client_for(emu, in_process=True, http_client=http, reconcile_grace=0.01) as client:
        with pytest.raises(SubmitOutcomeUnknownError, match="could not list every task"):
            with anyio.fail_after(30):
                await client.async_call(**FIELDS)
    await http.aclose()
    st = emu.stats()
    assert st.tasks_created == 1 and st.duplicate_creates == 0
