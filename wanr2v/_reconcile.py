"""Finding the task a lost create made, before anything is sent again.

The guarantee and its limits (also in docs/errors.md):

- A create whose answer was lost is matched against the account's tasks of the same
  model listed by the service (its default window, the last 24 h), minus every task
  already claimed by this client or by the journal. Each unclaimed task is fetched
  and compared by prompt (``orig_prompt``, cut at 1500 characters like the service).
- Exactly one match: it is adopted; nothing is sent again.
- No unclaimed task at all after a complete listing, once the grace period has
  passed: the service provably made nothing, and the create is sent once more.
- A candidate whose prompt the service does not show yet (it shows it once a task is
  final) is waited for, up to ``reconcile_wait`` seconds; one that ends FAILED or
  CANCELED is ignored, since failed tasks are not billed.
- Anything else (several matches, a prompt never shown, a listing that failed):
  :class:`SubmitOutcomeUnknownError` with the candidates.

What it cannot see: a create that commits on the service *after* the grace period
and the listing (a server stuck for longer than ``reconcile_grace``), and another
process of the same account submitting the same prompt at the same time without a
shared journal. Both would be needed for a duplicate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ._exceptions import SubmitOutcomeUnknownError, WanError
from ._models import Task, TaskStatus
from ._wire import fingerprint

if TYPE_CHECKING:
    from ._client import AsyncWanClient

PROMPT_LIMIT = 1500


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
    try:
        rows = client.list_tasks(model=model, base_url=base_url)
        async for row in rows:
            if row.task_id not in claimed and row.status is not TaskStatus.UNKNOWN:
                unclaimed.append(row.task_id)
    except WanError as exc:
        error.candidates = ()  # type: ignore[attr-defined]
        error.message += f" Reconciliation could not list tasks: {exc}"
        raise error from exc
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
    error.candidates = tuple(matches + unverified)  # type: ignore[attr-defined]
    error.message += (
        f" Reconciliation found {len(matches)} matching and {len(unverified)} unverifiable "
        f"unclaimed task(s): {', '.join(error.candidates)}."  # type: ignore[attr-defined]
    )
    raise error
