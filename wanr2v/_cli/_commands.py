"""The single-task commands: ``submit``, ``status``, ``wait``, ``cancel``, ``list``,
``download``; one function per command, each returning the exit code.

Each takes a `Context` and runs inside the command's one ``anyio.run``. Several task
ids are handled at once (one coroutine each); what one of them fails with is reported
on its row and in the exit code, not raised, except for an error of the service or
the setup that ends the whole command.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import anyio

from .._batch_records import BatchItem
from .._batchfile import absolute_refs
from .._exceptions import (
    DownloadError,
    InvalidRequestError,
    ResultExpiredError,
    TaskError,
    UnsupportedOperationError,
)
from .._models import TaskStatus, TaskSummary, VideoRequest
from .._wire import result_json, summary_json, task_json
from ._context import Context, check_out, gather
from ._output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNKNOWN,
    CliError,
    ProgressView,
    absolute,
    detail,
    error_json,
    message,
    show_path,
    when,
)

__all__ = ["cmd_cancel", "cmd_download", "cmd_list", "cmd_status", "cmd_submit", "cmd_wait"]


async def cmd_submit(ctx: Context) -> int:
    """Create one task (and optionally wait for it and download it)."""
    a = ctx.args
    refs = absolute_refs(list(a.ref), Path.cwd())
    try:
        request = VideoRequest(
            model=a.model,
            prompt=a.prompt,
            reference_urls=refs,
            negative_prompt=a.negative_prompt,
            size=a.size,
            duration=a.duration,
            shot_type=a.shot_type,
            audio=a.audio,
            watermark=a.watermark,
            seed=a.seed,
        )
    except InvalidRequestError as exc:
        raise CliError(_flag_message(str(exc))) from None
    wait = a.wait or a.out is not None  # --out means: wait, then save
    if a.out is not None:
        await check_out(a.out, "--out", several=False)
    async with ctx.client() as client:
        try:
            task = await client.async_call(request)
        except InvalidRequestError as exc:  # a local file: in the words of the flags
            raise CliError(_flag_message(message(exc))) from None
        doc: dict[str, Any] = {"task": task_json(task)}
        ctx.out.line(f"created task {task.task_id} ({request.model}, {client.region})")
        if not wait:
            ctx.out.line(f"next: wanr2v wait {task.task_id} --out videos/")
            ctx.out.emit(doc)
            return EXIT_OK
        ctx.out.line(
            f"waiting (Ctrl-C stops waiting; the task goes on: `wanr2v wait {task.task_id}`)"
        )
        with ProgressView(ctx.out, 1) as view:
            unsubscribe = client.subscribe(view.event)
            try:
                result = await client.wait(task, raise_on_failure=False)
            finally:
                unsubscribe()
        doc["result"] = result_json(result)
        code = EXIT_OK if result.succeeded else EXIT_FAILED
        if result.succeeded and a.out:
            path = await client.download(result, absolute(a.out))
            doc["path"] = str(path)
            ctx.out.line(f"saved {show_path(path)}")
        elif result.succeeded:
            ctx.out.line(f"task {task.task_id} SUCCEEDED: {result.video_url}")
            ctx.out.line(
                f"next: wanr2v download {task.task_id} --out videos/  (the URL lives 24 h)"
            )
        elif not result.succeeded:
            ctx.out.line(f"task {task.task_id} {result.status.value}: {detail(result)}")
        ctx.out.emit(doc)
        return code


async def cmd_status(ctx: Context) -> int:
    """Query tasks once."""
    async with ctx.client() as client:
        results = await gather(client.fetch, ctx.args.task_ids)
    ctx.out.table(
        ["TASK", "STATUS", "SUBMITTED (UTC)", "ENDED (UTC)", "DETAIL"],
        [
            [r.task_id, r.status.value, when(r.submit_time), when(r.end_time), detail(r)]
            for r in results
        ],
    )
    ctx.out.emit({"tasks": [result_json(r) for r in results]})
    bad = {TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.UNKNOWN}
    return EXIT_FAILED if any(r.status in bad for r in results) else EXIT_OK


async def cmd_wait(ctx: Context) -> int:
    """Wait for tasks to end (and download the videos with ``--out``)."""
    a = ctx.args
    from .._exceptions import WaitTimeoutError

    if a.out:
        await check_out(a.out, "--out", several=len(a.task_ids) > 1)
    async with ctx.client() as client:
        rows: dict[str, dict[str, Any]] = {}

        async def one(task_id: str) -> None:
            row: dict[str, Any] = {"task_id": task_id}
            rows[task_id] = row
            try:
                result = await client.wait(task_id, timeout=a.timeout, raise_on_failure=False)
            except WaitTimeoutError as exc:
                row.update(status="TIMEOUT", error=error_json(exc))
                return
            row.update(status=result.status.value, result=result_json(result))
            if result.succeeded and a.out:
                try:
                    path = await client.download(result, absolute(a.out))
                except (DownloadError, ResultExpiredError, TaskError) as exc:
                    row["error"] = error_json(exc)
                else:
                    row["path"] = str(path)
                    view.item_done(BatchItem(key=task_id, request=None, result=result, path=path))

        with ProgressView(ctx.out, len(a.task_ids), idle="waiting") as view:
            unsubscribe = client.subscribe(view.event)
            try:
                async with anyio.create_task_group() as tg:
                    for task_id in a.task_ids:
                        tg.start_soon(one, task_id)
            finally:
                unsubscribe()
    ordered = [rows[t] for t in a.task_ids]
    ctx.out.table(
        ["TASK", "STATUS", "FILE / DETAIL"],
        [
            [
                r["task_id"],
                r["status"],
                show_path(r["path"])
                if r.get("path")
                else (r.get("error") or {}).get("message") or _detail_from(r.get("result")),
            ]
            for r in ordered
        ],
    )
    ctx.out.emit({"tasks": ordered})
    if any(r["status"] == "TIMEOUT" for r in ordered):
        ctx.out.line("tasks still running go on: wait again with `wanr2v wait TASK_ID`")
        return EXIT_UNKNOWN  # unfinished, as the exit-code table says
    ok = all(r["status"] == "SUCCEEDED" and "error" not in r for r in ordered)
    return EXIT_OK if ok else EXIT_FAILED


def _detail_from(result: Mapping[str, Any] | None) -> str:
    if not result:
        return ""
    if result.get("code"):
        return f"{result['code']}: {result.get('message') or ''}"
    return str(result.get("video_url") or "")


async def cmd_cancel(ctx: Context) -> int:
    """Cancel tasks (the service allows it only while PENDING)."""
    async with ctx.client() as client:

        async def one(task_id: str) -> dict[str, Any]:
            try:
                await client.cancel(task_id)
            except UnsupportedOperationError as exc:
                return {"task_id": task_id, "canceled": False, "error": error_json(exc)}
            return {"task_id": task_id, "canceled": True}

        rows = await gather(one, ctx.args.task_ids)
    ctx.out.table(
        ["TASK", "RESULT"],
        [
            [
                r["task_id"],
                "canceled" if r["canceled"] else f"not canceled: {r['error']['message']}",
            ]
            for r in rows
        ],
    )
    ctx.out.emit({"tasks": rows})
    return EXIT_OK if all(r["canceled"] for r in rows) else EXIT_FAILED


def _parse_time(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(f"{flag}: use an ISO time like 2025-12-16T08:00 (got {text!r}).") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def cmd_list(ctx: Context) -> int:
    """List the account's tasks (default: the last 24 h)."""
    a = ctx.args
    start = _parse_time(a.start, "--start")
    end = _parse_time(a.end, "--end")
    if a.limit < 1:
        raise CliError(f"--limit must be >= 1, got {a.limit}.")
    rows: list[TaskSummary] = []
    async with ctx.client() as client:
        try:
            pages = client.list_tasks(
                model=a.model,
                status=a.status,
                start_time=start,
                end_time=end,
                max_items=a.limit,
                page_size=min(100, a.limit),
            )
        except ValueError as exc:
            raise CliError(str(exc)) from None
        async for row in pages:
            rows.append(row)
    ctx.out.table(
        ["TASK", "STATUS", "MODEL", "CREATED (UTC)"],
        [[r.task_id, r.status.value, r.model_name or "", when(r.gmt_create)] for r in rows],
    )
    if not rows:
        ctx.out.line("no tasks in the window")
    ctx.out.emit({"tasks": [summary_json(r) for r in rows]})
    return EXIT_OK


async def cmd_download(ctx: Context) -> int:
    """Save succeeded tasks' videos."""
    a = ctx.args
    await check_out(a.out, "--out", several=len(a.task_ids) > 1)
    async with ctx.client() as client:

        async def one(task_id: str) -> dict[str, Any]:
            try:
                path = await client.download(task_id, absolute(a.out))
            except (TaskError, ResultExpiredError, DownloadError) as exc:
                return {"task_id": task_id, "path": None, "error": error_json(exc)}
            return {"task_id": task_id, "path": str(path)}

        rows = await gather(one, a.task_ids)
    ctx.out.table(
        ["TASK", "FILE / ERROR"],
        [
            [r["task_id"], show_path(r["path"]) if r["path"] else r["error"]["message"]]
            for r in rows
        ],
    )
    ctx.out.emit({"tasks": rows})
    return EXIT_OK if all(r["path"] for r in rows) else EXIT_FAILED


_FLAGS: Final = {
    "model": "--model",
    "input.prompt": "--prompt",
    "input.negative_prompt": "--negative-prompt",
    "input.reference_urls": "--ref",
    "parameters.size": "--size",
    "parameters.duration": "--duration",
    "parameters.shot_type": "--shot-type",
    "parameters.audio": "--audio",
    "parameters.watermark": "--watermark",
    "parameters.seed": "--seed",
}


def _flag_message(message: str) -> str:
    """A request error in the words of ``submit``'s flags (``--ref #2``, ``--size``)."""
    import re

    m = re.match(r"^input\.reference_urls\[(\d+)\]", message)
    if m:
        return f"--ref #{int(m.group(1)) + 1}" + message[m.end() :]
    for field, flag in sorted(_FLAGS.items(), key=lambda kv: -len(kv[0])):
        if message.startswith(field):
            return flag + message[len(field) :]
    return message
