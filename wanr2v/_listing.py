"""The task list (``GET /tasks``): arguments checked at once, pages fetched as iterated.

A listing cut short must never pass for a complete one (reconciliation relies on
it): past ``max_pages`` pages, or on a page the service repeats, the listing raises
`APIError` (``code="MalformedResponse"``) instead of ending quietly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from . import _config
from ._exceptions import APIError
from ._models import TaskStatus, TaskSummary
from ._wire import format_list_time, parse_list

if TYPE_CHECKING:
    from ._protocols import Routing

__all__ = ["DEFAULT_MAX_LIST_PAGES", "list_params", "pages"]

DEFAULT_MAX_LIST_PAGES = 200
"""Pages one listing may take (20,000 tasks at 100 a page: more than a day's worth
at the vendor's limit of 5 tasks at once); past it, the listing is refused."""


def list_params(
    *,
    task_id: str | None,
    model: str | None,
    status: str | TaskStatus | None,
    start_time: datetime | None,
    end_time: datetime | None,
    page_size: int,
    max_pages: int,
) -> dict[str, Any]:
    """The query parameters of a listing (``ValueError`` for an argument out of range)."""
    if start_time is not None and end_time is not None:
        if end_time < start_time:
            raise ValueError("list_tasks: end_time is before start_time.")
        if (end_time - start_time).total_seconds() > 24 * 3600:
            raise ValueError("list_tasks: the window may be at most 24 hours.")
    if not 1 <= page_size <= 100:
        raise ValueError(f"list_tasks: page_size must be 1 to 100, got {page_size}.")
    if max_pages < 1:
        raise ValueError(f"list_tasks: max_pages must be >= 1, got {max_pages}.")
    params: dict[str, Any] = {"page_size": page_size}
    if task_id:
        params["task_id"] = task_id
    if model:
        params["model_name"] = model
    if status:
        params["status"] = status.value if isinstance(status, TaskStatus) else status
    if start_time is not None:
        params["start_time"] = format_list_time(start_time)
    if end_time is not None:
        params["end_time"] = format_list_time(end_time)
    return params


async def pages(
    routing: Routing,
    base_url: str | None,
    params: dict[str, Any],
    max_items: int | None,
    max_pages: int,
) -> AsyncIterator[TaskSummary]:
    """Every row of the listing, page after page, from the region at ``base_url``."""
    session = routing.session_for(base_url)
    page_no, seen = 1, 0
    pages_seen: set[tuple[str, ...]] = set()
    while True:
        if page_no > max_pages:
            raise APIError(
                f"The task list did not end within max_pages={max_pages} pages; "
                "the listing was stopped (it is incomplete).",
                status_code=200,
                code="MalformedResponse",
            )
        _, data = await session.request(
            "list", "GET", _config.PATH_TASKS, params={**params, "page_no": page_no}
        )
        page = parse_list(data)
        ids = tuple(item.task_id for item in page.items)
        if ids and ids in pages_seen:
            raise APIError(
                f"The task list repeated an earlier page as page {page_no}; the listing "
                "was stopped (the service's paging cannot be trusted).",
                status_code=200,
                code="MalformedResponse",
            )
        pages_seen.add(ids)
        for item in page.items:
            yield item
            seen += 1
            if max_items is not None and seen >= max_items:
                return
        total_page = page.total_page
        if not page.items or (total_page is not None and page_no >= total_page):
            return
        if total_page is None and len(page.items) < params["page_size"]:
            return
        page_no += 1
