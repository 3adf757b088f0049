"""Finding the task a lost create made, before anything is sent again.

Reconciliation either finds the task, or proves that the service made none, or
refuses: it never guesses with money. The guarantee and its limits (also in
docs/errors.md):

- **Where it looks.** The account's tasks of the same model in the task list, minus
  every task already claimed by this client or by the journal, minus every task
  created before the create was sent (judged on the service's own clock: its ``Date``
  header, less the local time elapsed since the send; without a ``Date`` header the
  whole 24 h window counts). The listing asks for tasks from that moment on
  (``start_time`` alone; a service that refuses that gets the default window), pages
  through however small the service makes its pages, and is *complete* only when it
  saw at least as many tasks as the service's ``total``.
- **What makes a candidate ours.** Every signal the service returns must agree: the
  model (``model_name``), the creation time (above), the prompt (``orig_prompt``,
  compared after the service's possible normalization: Unicode NFC, trimmed, runs of
  whitespace collapsed, cut at 1500 characters) and each parameter the query answer
  echoes (``usage.size``, ``usage.output_video_duration`` against the request's
  ``size`` and ``duration``). Any one that differs proves the candidate someone
  else's. A candidate that ends FAILED or CANCELED is ignored (not billed).
- **Waiting.** The service shows a prompt only once a task is final: a candidate not
  final yet is waited for, up to ``reconcile_wait`` seconds (sharing the scheduler's
  polls). A listed candidate that answers UNKNOWN is young (queries may lag the list):
  it is asked again, up to ``PollPolicy.unknown_grace``.
- **Adopted**: exactly one candidate whose signals all agree, and none unverifiable.
- **Provably absent**: a complete listing with no candidate at all, *sent at least
  ``reconcile_settle`` seconds (service time) after the create's outcome became
  unknown*. That period covers a task that shows in the list late and a create that
  commits late after its connection dropped: a first, earlier look that finds
  nothing is never proof; the list is asked again once the settle period is over.
  Only then is the create sent once more.
- **Anything else** (several matches, a prompt never shown, a candidate that stays
  UNKNOWN, an incomplete or failed listing): `SubmitOutcomeUnknownError` with
  the candidates; nothing is sent.

What it cannot see: a create that commits, or shows in the list, later than
``reconcile_settle`` after its answer was lost (a service slower than that: raise
the setting); a task whose echoed prompt the service rewrote beyond the
normalization above (it is then someone else's, and the create is sent again); and
another process of the same account submitting the same prompt at the same moment
without a shared journal (the wrong task could be adopted). Two requests whose
prompts differ only in whitespace or Unicode form look alike: when both are lost,
their reconciliations refuse rather than guess. It assumes the service's ``Date``
and its task timestamps come from clocks that agree within a few seconds.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from . import _config
from ._exceptions import (
    APIError,
    BadRequestError,
    SubmitOutcomeUnknownError,
    WanError,
    collapsing_groups,
)
from ._models import Task, TaskResult, TaskStatus, TaskSummary
from ._wire import fingerprint, format_list_time, parse_list

if TYPE_CHECKING:
    from ._protocols import Lookup

PROMPT_LIMIT = 1500
DATE_MARGIN_S = 5.0
"""Server seconds allowed for ``Date``'s one-second resolution and clock noise."""
LOCAL_NOISE_S = 0.2
"""Local seconds allowed for scheduling noise around the send (scaled by time_scale)."""
MAX_PAGES = 200
"""A listing longer than this many pages is left incomplete (so proves nothing)."""

_WHITESPACE_RUN = re.compile(r"\s+")


def normalize_prompt(prompt: str) -> str:
    """A prompt as a service may echo it: Unicode NFC, every run of whitespace one
    space, trimmed."""
    return _WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", prompt)).strip()


def _forms(prompt: str) -> set[str]:
    # The service may cut before or after it normalizes.
    return {
        normalize_prompt(prompt)[:PROMPT_LIMIT],
        normalize_prompt(prompt[:PROMPT_LIMIT])[:PROMPT_LIMIT],
    }


def prompts_match(ours: str, shown: str) -> bool:
    """Whether ``shown`` (an ``orig_prompt``) can be the service's echo of ``ours``."""
    return bool(_forms(ours) & _forms(shown))


def echo_conflict(body: Mapping[str, Any], result: TaskResult) -> str | None:
    """The first parameter the answer echoes that differs from the request, or ``None``."""
    params = body.get("parameters")
    if not isinstance(params, Mapping) or result.usage is None:
        return None
    usage = result.usage
    size = params.get("size")
    if size is not None and usage.size is not None and str(usage.size) != str(size):
        return f"size {usage.size} != {size}"
    duration = params.get("duration")
    shown = usage.output_video_duration
    if duration is not None and shown is not None:
        try:
            if not math.isclose(float(shown), float(duration), abs_tol=1e-6):
                return f"duration {shown} != {duration}"
        except (TypeError, ValueError):
            return None
    return None


def _server_time_at(
    server_clock: tuple[float, float] | None, sent_at: float, time_scale: float
) -> float | None:
    """The earliest server time the lost create can have been stamped with.

    From an answer's ``Date`` header: the service stamped it at ``server`` when our
    clock read ``local``; our create left at ``sent_at`` by our clock, so it cannot
    have reached the service before ``server - (local - sent_at) x time_scale`` (less
    a margin). ``None`` without a ``Date`` header: then the whole 24 h window counts.
    """
    if server_clock is None:
        return None
    local, server = server_clock
    elapsed = max(0.0, local - sent_at)
    return server - (elapsed + LOCAL_NOISE_S) * time_scale - DATE_MARGIN_S


async def _listing(
    client: Lookup, model: str, base_url: str | None, since: float | None
) -> tuple[list[TaskSummary], bool]:
    """The account's tasks of ``model`` (from ``since``, server time), and whether the
    listing is complete (at least the service's ``total`` seen)."""
    session = client.routing.session_for(base_url)
    params: dict[str, Any] = {"model_name": model}
    if since is not None:
        params["start_time"] = format_list_time(datetime.fromtimestamp(math.floor(since), UTC))
    seen: dict[str, TaskSummary] = {}
    size, page_no, first_total = 100, 1, None
    while page_no <= MAX_PAGES:
        _, data = await session.request(
            "list",
            "GET",
            _config.PATH_TASKS,
            params={**params, "page_size": size, "page_no": page_no},
        )
        page = parse_list(data)
        before = len(seen)
        for row in page.items:
            seen.setdefault(row.task_id, row)
        if page.items and len(seen) == before:
            raise APIError(
                f"The task list repeated an earlier page as page {page_no}; the listing "
                "was stopped (the service's paging cannot be trusted).",
                status_code=200,
                code="MalformedResponse",
            )
        if page_no == 1:
            first_total = page.total
            served = len(page.items)
            if 0 < served < size and (page.total is None or page.total > served):
                # The service caps its pages below what was asked: page on in its size.
                size = served
        if not page.items:
            break
        if page.total is not None and page_no * size >= page.total:
            break
        if page.total is None and len(page.items) < size:
            break
        page_no += 1
    complete = page_no <= MAX_PAGES and (first_total is None or len(seen) >= first_total)
    return list(seen.values()), complete


async def _fetch(client: Lookup, task_id: str, base_url: str | None) -> TaskResult | None:
    try:
        return await client.query(task_id, base_url)
    except WanError:
        return None


def _verdict(result: TaskResult | None, body: Mapping[str, Any], prompt: str) -> str:
    """``match``, ``other`` (someone else's, or failed: not billed), ``wait`` (not final:
    the prompt is not shown yet), ``unknown`` (answers UNKNOWN) or ``unverified``."""
    if result is None:
        return "unverified"
    if result.status is TaskStatus.UNKNOWN:
        return "unknown"
    if result.status in (TaskStatus.FAILED, TaskStatus.CANCELED):
        return "other"  # failed and canceled tasks are not billed: no money at stake
    if echo_conflict(body, result) is not None:
        return "other"
    if result.orig_prompt is not None:
        return "match" if prompts_match(prompt, result.orig_prompt) else "other"
    if result.status is TaskStatus.SUCCEEDED:
        return "unverified"
    return "wait"


async def _settle_candidate(
    client: Lookup,
    task_id: str,
    base_url: str | None,
    body: Mapping[str, Any],
    prompt: str,
    verdict: str,
) -> str:
    """Wait for a candidate to answer (UNKNOWN: within ``unknown_grace``) and to be final
    (within ``reconcile_wait``); return its final verdict."""
    policy = client.policy
    if verdict == "unknown":
        # Listed but UNKNOWN to queries: a young task whose queries lag. Ask again.
        step = max(policy.min_interval, 1.0) / policy.time_scale
        with anyio.move_on_after(policy.unknown_grace / policy.time_scale):
            while verdict == "unknown":
                await anyio.sleep(step)
                step = min(step * 2, policy.max_interval / policy.time_scale)
                verdict = _verdict(await _fetch(client, task_id, base_url), body, prompt)
        if verdict == "unknown":  # one last look, once the grace is over
            verdict = _verdict(await _fetch(client, task_id, base_url), body, prompt)
        if verdict == "unknown":
            return "unverified"
    if verdict == "wait":
        with anyio.move_on_after(client.reconcile_wait):
            await client.wait_final(task_id, base_url)
        verdict = _verdict(await _fetch(client, task_id, base_url), body, prompt)
        if verdict in ("wait", "unknown"):
            return "unverified"
    return verdict


async def find_lost_task(
    client: Lookup,
    body: Mapping[str, Any],
    *,
    sent_at: float,
    error: SubmitOutcomeUnknownError,
    claimed: set[str],
    base_url: str | None,
    settle_until: float | None = None,
) -> Task | None:
    """Return the adopted task, ``None`` when provably none exists, or raise ``error``.

    Args:
        settle_until: wall-clock time from which an empty listing proves absence
            (``None``: at once). Until then an empty look is followed by another.
    """
    model = str(body.get("model"))
    inp = body.get("input")
    prompt = str(inp.get("prompt", "")) if isinstance(inp, Mapping) else ""
    session = client.routing.session_for(base_url)
    scale = client.policy.time_scale
    others: set[str] = set()  # proven someone else's (or not billed) in an earlier look
    while True:
        listed_at = time.time()
        floor = _server_time_at(session.server_clock, sent_at, scale)
        try:
            try:
                rows, complete = await _listing(client, model, base_url, floor)
            except BadRequestError:
                if floor is None:
                    raise
                # A service that refuses a window without its end: the default 24 h.
                rows, complete = await _listing(client, model, base_url, None)
        except WanError as exc:
            raise error.evolve(
                candidates=(), detail=f"Reconciliation could not list tasks: {exc}"
            ) from exc
        floor = _server_time_at(session.server_clock, sent_at, scale)
        looks: dict[str, str] = {}
        for row in rows:
            if row.task_id in claimed or row.task_id in others:
                continue
            if row.status is TaskStatus.UNKNOWN:
                continue
            if row.model_name is not None and row.model_name != model:
                continue  # another model's: the service ignored the filter
            if (
                floor is not None
                and row.gmt_create is not None
                and row.gmt_create.timestamp() < floor
            ):
                continue  # created before this create was sent: another submission's
            if row.status in (TaskStatus.FAILED, TaskStatus.CANCELED):
                continue  # not billed: no money at stake
            looks[row.task_id] = ""
        for task_id in looks:
            looks[task_id] = _verdict(await _fetch(client, task_id, base_url), body, prompt)
        slow = [t for t, v in looks.items() if v in ("wait", "unknown")]
        if slow:

            async def settle(task_id: str, looks: dict[str, str] = looks) -> None:
                looks[task_id] = await _settle_candidate(
                    client, task_id, base_url, body, prompt, looks[task_id]
                )

            with collapsing_groups():  # no ExceptionGroup reaches a caller
                async with anyio.create_task_group() as tg:
                    for task_id in slow:
                        tg.start_soon(settle, task_id)
        others.update(t for t, v in looks.items() if v == "other")
        matches = [t for t, v in looks.items() if v == "match"]
        unverified = [t for t, v in looks.items() if v == "unverified"]
        if len(matches) == 1 and not unverified:
            return Task(
                task_id=matches[0],
                status=TaskStatus.PENDING,
                base_url=session.base_url,
                region=client.routing.region_of(session.base_url),
                model=model,
                submitted_at=sent_at,
                fingerprint=fingerprint(body),
            )
        if matches or unverified:
            candidates = tuple(matches + unverified)
            raise error.evolve(
                candidates=candidates,
                detail=f"Reconciliation found {len(matches)} matching and {len(unverified)} "
                f"unverifiable unclaimed task(s): {', '.join(candidates)}.",
            )
        if not complete:
            raise error.evolve(
                candidates=(),
                detail="Reconciliation could not list every task (fewer listed than the "
                "service's total), so it cannot prove that none was made.",
            )
        if settle_until is None or listed_at >= settle_until:
            return None  # a complete, settled listing without any candidate
        # Nothing yet, but a late commit or a lagging list could still show it.
        await anyio.sleep(max(0.0, settle_until - time.time()))
