"""Finding the task a lost create made, before anything is sent again.

The guarantee and its limits (also in docs/errors.md):

- A create whose answer was lost is matched against the account's tasks of the same
  model listed by the service (its default window, the last 24 h), minus every task
  already claimed by this client or by the journal, and minus every task created
  before the create was sent (judged on the service's own clock: its ``Date`` header,
  less the local time elapsed since the send; no header, no such filter). Each
  remaining task is fetched and compared by prompt (``orig_prompt``, cut at 1500
  characters like the service).
- Exactly one match: it is adopted; nothing is sent again.
- No unclaimed task at all after a complete listing, once the grace period has
  passed: the service provably made nothing, and the create is sent once more.
- A candidate whose prompt the service does not show yet (it shows it once a task is
  final) is waited for, up to ``reconcile_wait`` seconds; one that ends FAILED or
  CANCELED is ignored, since failed tasks are not billed.
- Anything else (several matches, a prompt never shown, a listing that failed):
  :class:`SubmitOutcomeUnknownError` with the candidates.

What it cannot see: a create that commits on the service *after* the grace period
and the listing (a server stuck for longer than ``reconcile_grace``): a duplicate;
and another process of the same account submitting the same prompt at the same
moment without a shared journal: the wrong task could be adopted. It assumes the
service's ``Date`` and its task timestamps come from clocks that agree within a few
seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ._exceptions import SubmitOutcomeUnknownError, WanError, collapsing_groups
from ._models import Task, TaskStatus
from ._wire import fingerprint

if TYPE_CHECKING:
    from ._client import AsyncWanClient

PROMPT_LIMIT = 1500
DATE_MARGIN_S = 5.0
"""Server seconds allowed for ``Date``'s one-second resolution and clock noise."""
LOCAL_NOISE_S = 0.2
"""Local seconds allowed for scheduling noise around the send (scaled by time_scale)."""


def _server_time_at(
    server_clock: tuple[float, float] | None, sent_at: float, time_scale: float
) -> float | None:
    """The earliest server time the lost create can have been stamped with.

    From the listing answer's ``Date`` header: the service stamped it at ``server``
    when our clock read ``local``; our create left at ``sent_at`` by our clock, so it
    cannot have reached the service before ``server - (local - sent_at) x time_scale``
    (less a margin). ``None`` without a ``Date`` header: then the whole 24 h window
    counts.
    """
    if server_clock is None:
        return None
    local, server = server_clock
    elapsed = max(0.0, local - sent_at)
    return server - (elapsed + LOCAL_NOISE_S) * time_scale - DATE_MARGIN_S


async def _compare(client: AsyncWanClient, task_id: str, base_url: str | None, prompt: str) -> str:
    """``match``, ``other`` (not ours, or failed: free, so harmless), ``wait`` (prompt not
    shown yet) or ``unverified`` (could not be read)."""
    try:
        result = await client._fetch(task_id, base_url, priority=-math.inf)
    except WanError:
        return "unverified"
    if result.orig_prompt is not None:
        return "match" if result.orig_prompt[:PROMPT_LIMIT] == prompt else "other"
    if result.status in (TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.UNKNOWN):
        return "other"  # failed and canceled tasks are not billed: no money at stake
    if result.status is TaskStatus.SUCCEEDED:
        return "unverified"
    return "wait"


async def find_lost_task(
    client: AsyncWanClient,
    body: Mapping[str, Any],
    *,
    sent_at: float,
    error: SubmitOutcomeUnknownError,
    claimed: set[str],
    base_url: str | None,
) -> Task | None:
    """Return the adopted task, ``None`` when provably none exists, or raise ``error``."""
    model = str(body.get("model"))
    inp = body.get("input")
    prompt = str(inp.get("prompt", "")) if isinstance(inp, Mapping) else ""
    prompt = prompt[:PROMPT_LIMIT]
    unclaimed: list[str] = []
    session = client._session_for(base_url)
    try:
        rows = [row async for row in client.list_tasks(model=model, base_url=base_url)]
    except WanError as exc:
        raise error.evolve(
            candidates=(), detail=f"Reconciliation could not list tasks: {exc}"
        ) from exc
    floor = _server_time_at(session.server_clock, sent_at, client.scheduler.policy.time_scale)
    for row in rows:
        if row.task_id in claimed or row.status is TaskStatus.UNKNOWN:
            continue
        if floor is not None and row.gmt_create is not None and row.gmt_create.timestamp() < floor:
            continue  # created before this create was sent: another submission's
        unclaimed.append(row.task_id)
    matches: list[str] = []
    unverified: list[str] = []
    pending: list[str] = []
    for task_id in unclaimed:
        verdict = await _compare(client, task_id, base_url, prompt)
        {"match": matches, "unverified": unverified, "wait": pending}.get(verdict, []).append(
            task_id
        )
    if pending:
        # The service shows a task's prompt once it is final: wait for those that are not
        # (sharing the scheduler's polls), up to ``reconcile_wait``.
        async def settle(task_id: str) -> None:
            with anyio.move_on_after(client.reconcile_wait):
                await client.scheduler.wait(task_id, base_url)
            verdict = await _compare(client, task_id, base_url, prompt)
            if verdict == "match":
                matches.append(task_id)
            elif verdict != "other":
                unverified.append(task_id)

        with collapsing_groups():  # no ExceptionGroup reaches a caller
            async with anyio.create_task_group() as tg:
                for task_id in pending:
                    tg.start_soon(settle, task_id)
    if len(matches) == 1 and not unverified:
        session = client._session_for(base_url)
        return Task(
            task_id=matches[0],
            status=TaskStatus.PENDING,
            base_url=session.base_url,
            region=client._region_of(session.base_url),
            model=model,
            submitted_at=sent_at,
            fingerprint=fingerprint(body),
        )
    if not matches and not unverified:
        return None
    candidates = tuple(matches + unverified)
    raise error.evolve(
        candidates=candidates,
        detail=f"Reconciliation found {len(matches)} matching and {len(unverified)} "
        f"unverifiable unclaimed task(s): {', '.join(candidates)}.",
    )
