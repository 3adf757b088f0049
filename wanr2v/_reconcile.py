"""Finding the task a lost create made, before anything is sent again.

The guarantee and its limits (also in docs/errors.md):

- A create whose answer was lost is matched against the account's tasks of the same
  model listed by the service (its default window, the last 24 h), minus every task
  already claimed by this client or by the journal. Each unclaimed task is fetched
  and compared by prompt (``orig_prompt``, cut at 1500 characters like the service).
- Exactly one match: it is adopted; nothing is sent again.
- No unclaimed task at all after a complete listing, once the grace period has
  passed: the service provably made nothing, and the create is sent once more.
- Anything else (several matches, a task whose prompt the service does not show, a
  listing that failed): :class:`SubmitOutcomeUnknownError` with the candidates.

What it cannot see: a create that commits on the service *after* the grace period
and the listing (a server stuck for longer than ``reconcile_grace``), and another
process of the same account submitting the same prompt at the same time without a
shared journal. Both would be needed for a duplicate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._exceptions import SubmitOutcomeUnknownError, WanError
from ._models import Task, TaskStatus
from ._wire import fingerprint

if TYPE_CHECKING:
    from ._client import AsyncWanClient

PROMPT_LIMIT = 1500


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
        rows = await client.list_tasks(model=model, base_url=base_url)
        async for row in rows:
            if row.task_id not in claimed and row.status is not TaskStatus.UNKNOWN:
                unclaimed.append(row.task_id)
    except WanError as exc:
        error.candidates = ()  # type: ignore[attr-defined]
        error.message += f" Reconciliation could not list tasks: {exc}"
        raise error from exc
    matches: list[str] = []
    unverified: list[str] = []
    for task_id in unclaimed:
        try:
            result = await client._fetch(task_id, base_url, priority=-math.inf)
        except WanError:
            unverified.append(task_id)
            continue
        if result.orig_prompt is None:
            unverified.append(task_id)
        elif result.orig_prompt[:PROMPT_LIMIT] == prompt:
            matches.append(task_id)
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
