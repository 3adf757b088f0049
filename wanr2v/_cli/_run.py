"""The batch commands: ``run`` (a batch file through a journal), ``resume`` (finish a
journaled batch after a crash) and ``journal show``; one function per command.

The batch file is read by the library (`wanr2v._batchfile.read_batch_file`), the
journal's rules (a changed request under a known key, the same request under two
keys, the account and base URL its tasks belong to) are checked by the library before
anything is sent; this module adds only what the command remembers for ``resume``
(the output folder, base URL, region, time scale, name template and budget, as journal
meta) and the report. ``run --dry-run`` checks every local rule and prices the batch
without a key and without sending anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from .. import _config
from .._batch_records import BatchItem, CancelPolicy, summarize
from .._batchfile import read_batch_file
from .._exceptions import ConfigurationError, InvalidRequestError, WanError
from .._models import VideoRequest
from ._context import DEFAULT_RUN_OUT, Context, check_out
from ._output import (
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    CliError,
    ProgressView,
    absolute,
    batch_exit,
    batch_json,
    message,
    record_json,
    request_json,
    show_path,
)

if TYPE_CHECKING:
    from .._client import AsyncWanClient, ClientStatistics
    from ..journal import SQLiteJournal

__all__ = ["batch_report", "cmd_journal_show", "cmd_resume", "cmd_run"]


def _default_journal(batch_file: Path) -> Path:
    return batch_file.with_name(batch_file.name + ".journal.db")


async def _open_journal(ctx: Context, path: Path, *, must_exist: bool) -> SQLiteJournal:
    from ..journal import JournalError, SQLiteJournal

    if must_exist and not await anyio.Path(path).exists():
        raise CliError(
            f"no journal at {path} (start a batch with `wanr2v run FILE --journal ...`)."
        )
    try:
        journal = await SQLiteJournal.open(path, secrets=ctx.out.secrets, create=not must_exist)
    except JournalError as exc:
        raise CliError(f"cannot open the journal {path}: {exc}") from None
    try:  # one batch at a time, taken before this command writes anything
        await journal.acquire()
    except JournalError as exc:
        await journal.aclose()
        raise CliError(str(exc)) from None
    return journal


def batch_report(
    ctx: Context,
    items: Sequence[BatchItem],
    *,
    wall: float,
    stats: ClientStatistics,
    unfinished: int,
    extra: Mapping[str, Any],
    emulator: Mapping[str, Any] | None = None,
) -> int:
    summary = summarize(items, wall)
    code = batch_exit(items, unfinished)
    out = ctx.out
    rows = []
    for it in items:
        status = it.result.status.value if it.result is not None else "—"
        if it.error is not None and it.result is None:
            status = type(it.error).__name__
        if it.path is not None:
            detail = show_path(it.path)
        elif it.error is not None:
            detail = str(it.error)
        else:
            detail = ""
        cost = it.billed_usd
        rows.append(
            [
                it.key,
                it.request.model if it.request is not None else "",
                status,
                it.task.task_id if it.task is not None else "",
                detail,
                f"{cost:.3f}",
            ]
        )
    out.line()
    out.table(
        ["KEY", "MODEL", "STATUS", "TASK", "FILE / ERROR", "USD"],
        rows,
        droppable=("TASK", "MODEL"),
    )
    queries = sum(stats.requests.values())
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(stats.requests.items()))
    out.line()
    out.line(
        f"tasks {summary.total} · succeeded {summary.succeeded} · failed {summary.failed}"
        f" · downloaded {summary.downloaded}"
    )
    out.line(
        f"wall time {wall:.1f} s · queries sent {queries} ({by_kind}) · 429s {stats.rate_limited}"
    )
    if emulator is not None:
        out.line(
            f"emulator: {emulator['tasks_created']} tasks created · "
            f"{emulator['duplicate_creates']} duplicate creates · "
            f"{emulator['throttled']} throttled answers (429)"
        )
    if items and summary.earlier == summary.total:
        out.line(
            "nothing to do: every item was finished by an earlier run (nothing sent, nothing "
            "billed now)"
            + (
                "; --retry-failed runs again those that failed without a task"
                if any(not it.ok and it.task is None for it in items)
                else ""
            )
        )
    else:
        out.line(
            f"estimated cost {summary.estimated_cost_usd:.2f} USD: what the service billed "
            "for this run's tasks (their usage at the vendor's list prices)"
        )
    if code == EXIT_UNKNOWN and ctx.resume_hint:
        out.line(f"unfinished tasks: {ctx.resume_hint}")
    out.emit(
        batch_json(
            items,
            wall=wall,
            stats=stats,
            unfinished=unfinished,
            code=code,
            extra=extra,
            emulator=emulator,
        )
    )
    return code


async def _drive_batch(
    ctx: Context,
    client: AsyncWanClient,
    journal: SQLiteJournal,
    requests: Mapping[str, VideoRequest] | None,
    out_dir: Path,
    *,
    retry_failed: bool = False,
    name: str | None = None,
    budget_usd: float | None = None,
) -> tuple[list[BatchItem], float]:
    """Run (``requests``) or resume (``None``) a journaled batch with progress."""
    from ..journal import SubmissionState

    counts = await journal.counts()
    done_before = counts[SubmissionState.DOWNLOADED] + counts[SubmissionState.FAILED]
    on_cancel: CancelPolicy = (
        "cancel_pending" if getattr(ctx.args, "cancel_pending", False) else "detach"
    )
    started = time.monotonic()
    items: list[BatchItem] = []
    if requests is None:
        total = sum(counts.values())
        with ProgressView(ctx.out, total, done=done_before) as view:
            unsubscribe = client.subscribe(view.event)
            try:
                items = await client.resume(
                    journal,
                    download_to=out_dir,
                    on_cancel=on_cancel,
                    retry_failed=retry_failed,
                    name=name or "{task_id}.mp4",
                    budget_usd=budget_usd,
                )
            finally:
                unsubscribe()
    else:
        order = {key: i for i, key in enumerate(requests)}
        with ProgressView(ctx.out, len(requests)) as view:
            unsubscribe = client.subscribe(view.event)
            try:
                async with client.as_completed(
                    requests,
                    journal=journal,
                    download_to=out_dir,
                    fail_fast=ctx.args.fail_fast,
                    on_cancel=on_cancel,
                    retry_failed=retry_failed,
                    name=name,
                    budget_usd=budget_usd,
                    allow_duplicates=ctx.args.allow_duplicates,
                ) as results:
                    async for item in results:
                        view.item_done(item)
                        items.append(item)
            finally:
                unsubscribe()
        items.sort(key=lambda it: order.get(it.key, len(order)))
    return items, time.monotonic() - started


async def _unfinished(journal: SQLiteJournal) -> int:
    counts = await journal.counts()
    return sum(n for state, n in counts.items() if not state.is_terminal)


async def cmd_run(ctx: Context) -> int:
    """Run a batch file through a journal, with progress, downloads and a summary."""
    from ..journal import JournalAccountError
    from ..journal._base import check_requests

    a = ctx.args
    batch_file = Path(a.file)
    try:
        requests = await anyio.to_thread.run_sync(read_batch_file, batch_file)
    except InvalidRequestError as exc:  # the file's problem, in the library's words
        raise CliError(exc.message) from None
    journal_path = Path(a.journal) if a.journal else _default_journal(batch_file)
    name = _name_option(a.name)
    budget = _budget_option(a.budget)
    if a.dry_run:
        return await _dry_run_checked(ctx, requests, journal_path, budget)
    out_dir = absolute(a.out)
    await check_out(out_dir, "--out", several=True, folder=True)
    ctx.resume_hint = f"wanr2v resume --journal {journal_path}"
    client = ctx.client()
    async with client:
        journal = await _open_journal(ctx, journal_path, must_exist=False)
        async with journal:
            # The library's money rule, before the meta below is written: a changed
            # request under a known key, or one request under two keys, sends nothing.
            await check_requests(journal, requests, allow_duplicates=a.allow_duplicates)
            remember: dict[str, Any] = {
                "out": str(out_dir),
                "base_url": client.base_url,
                "region": client.region,
                "time_scale": ctx.time_scale(),
                "batch_file": str(absolute(batch_file)),
                "name": name,
            }
            if budget is not None:
                remember["budget_usd"] = budget
            before = {k: await journal.get_meta(k) for k in remember}
            for k, v in remember.items():  # what `resume` needs, before anything is sent
                await journal.set_meta(k, v)
            ctx.out.line(
                f"{len(requests)} request(s) from {batch_file} → journal {journal_path} → "
                f"{show_path(out_dir)}/ ({client.base_url})"
            )
            try:
                items, wall = await _drive_batch(
                    ctx,
                    client,
                    journal,
                    requests,
                    out_dir,
                    retry_failed=a.retry_failed,
                    name=name,
                    budget_usd=budget,
                )
            except JournalAccountError:
                # The library refused the journal (its tasks belong to another account
                # or base URL) and sent nothing: `resume` goes on where they live.
                with anyio.CancelScope(shield=True):
                    for k, v in before.items():
                        await journal.set_meta(k, v)
                raise
            unfinished = await _unfinished(journal)
        return batch_report(
            ctx,
            items,
            wall=wall,
            stats=client.statistics(),
            unfinished=unfinished,
            extra={"journal": str(journal_path), "out": str(out_dir)},
        )


def _dry_run(
    ctx: Context,
    requests: Mapping[str, VideoRequest],
    *,
    problems: Sequence[str] = (),
    budget: float | None = None,
    already: float = 0.0,
) -> int:
    rows = []
    total = 0.0
    for key, req in requests.items():
        cost = req.estimated_cost_usd()
        total += cost
        rows.append(
            [
                key,
                req.model,
                req.size or "1920*1080",
                req.duration or 5,
                len(req.reference_urls),
                f"{cost:.3f}",
            ]
        )
    ctx.out.table(["KEY", "MODEL", "SIZE", "SECONDS", "REFS", "USD (at most)"], rows)
    ctx.out.line(f"{len(rows)} request(s), at most {total:.2f} USD at the vendor's list prices")
    if already:
        ctx.out.line(f"the journal has {already:.2f} USD billed or committed already")
    over = budget is not None and already + total > budget + 1e-9
    if budget is not None:
        verdict = (
            f"over by {already + total - budget:.2f} USD: items past it will not be created"
            if over
            else f"within it ({budget - already - total:.2f} USD to spare)"
        )
        ctx.out.line(
            f"budget {budget:.2f} USD: estimate {already + total:.2f} USD with the journal, "
            f"{verdict}"
        )
    if not problems:
        ctx.out.line("local checks passed: files, counts, sizes and region rules")
    ctx.out.emit(
        {
            "requests": {k: request_json(r) for k, r in requests.items()},
            "estimated_cost_usd": round(total, 4),
            "already_committed_usd": round(already, 4),
            "budget_usd": budget,
            "within_budget": None if budget is None else not over,
            "problems": list(problems),
        }
    )
    return EXIT_OK


async def cmd_resume(ctx: Context) -> int:
    """Finish a journaled batch after a crash (the journal remembers where and how)."""
    a = ctx.args
    journal_path = Path(a.journal)
    ctx.resume_hint = f"wanr2v resume --journal {journal_path}"
    key = ctx.api_key()
    journal = await _open_journal(ctx, journal_path, must_exist=True)
    async with journal:
        out = a.out or await journal.get_meta("out") or DEFAULT_RUN_OUT
        out_dir = absolute(out)
        scale = await journal.get_meta("time_scale")
        client = ctx.client(
            base_url=await journal.get_meta("base_url"),
            region=await journal.get_meta("region"),
            time_scale=float(scale) if scale is not None else None,
            api_key=key,
        )
        async with client:
            if a.out:
                await journal.set_meta("out", str(out_dir))
            await check_out(out_dir, "--out", several=True, folder=True)
            budget = _budget_option(a.budget)
            if budget is None:
                known = await journal.get_meta("budget_usd")
                budget = float(known) if known is not None else None
            name = await journal.get_meta("name") or "{task_id}.mp4"
            unfinished = await _unfinished(journal)
            if not sum((await journal.counts()).values()):
                raise CliError(
                    f"the journal {journal_path} holds no submissions: nothing to resume "
                    "(a journal copied while its batch ran needs its -wal file too)."
                )
            ctx.out.line(
                f"resuming {journal_path}: {unfinished} unfinished submission(s) → "
                f"{show_path(out_dir)}/ ({client.base_url})"
            )
            items, wall = await _drive_batch(
                ctx,
                client,
                journal,
                None,
                out_dir,
                retry_failed=a.retry_failed,
                name=name,
                budget_usd=budget,
            )
            unfinished = await _unfinished(journal)
            return batch_report(
                ctx,
                items,
                wall=wall,
                stats=client.statistics(),
                unfinished=unfinished,
                extra={"journal": str(journal_path), "out": str(out_dir)},
            )


def _name_option(value: str) -> str:
    from .._batch_records import check_name_template

    try:
        return check_name_template(value)
    except ValueError as exc:
        raise CliError(f"--name: {exc}") from None


def _budget_option(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        budget = float(value)
    except ValueError:
        raise CliError(f"--budget: a sum in USD, like 20 or 7.5 (got {value!r}).") from None
    if not (budget >= 0 and budget < float("inf")):
        raise CliError(f"--budget: a sum in USD >= 0 (got {value!r}).")
    return budget


async def _dry_run_checked(
    ctx: Context,
    requests: Mapping[str, VideoRequest],
    journal_path: Path,
    budget: float | None,
) -> int:
    """``run --dry-run``: every local rule (files, counts, region), the cost, the budget."""
    import httpx

    from .._batch_records import record_cost
    from .._upload import Uploader

    problems: list[str] = []
    try:
        region, _url = _config.resolve_base_url(
            getattr(ctx.args, "region", None), getattr(ctx.args, "base_url", None)
        )
    except ConfigurationError as exc:
        raise CliError(str(exc)) from None
    caps = _config.capabilities_for(region)

    async def no_policy(model: str) -> Any:  # never called: nothing is uploaded
        raise AssertionError("dry run")

    async with httpx.AsyncClient() as http:
        uploader = Uploader(http=http, get_policy=no_policy)
        for key, req in requests.items():
            refs = [os.fspath(r) for r in req.reference_urls]
            try:
                files = [
                    await uploader._inspect(i, ref)
                    for i, ref in enumerate(refs)
                    if "://" not in ref or ref.startswith("file://")
                ]
                uploader._check_counts(refs, files)
            except (InvalidRequestError, WanError) as exc:
                problems.append(f"{key}: {message(exc)}")
                continue
            from .._models import reference_kind

            has_images = any(reference_kind(r) == "image" for r in refs) or any(
                f.kind == "image" for f in files
            )
            why = caps.refusal(req.model, req.duration, has_images)
            if why is not None:
                problems.append(f"{key}: region {region}: {why}")
    already = 0.0
    if await anyio.Path(journal_path).exists():
        journal = await _open_journal(ctx, journal_path, must_exist=True)
        async with journal:
            records = await journal.list()
        already = sum(record_cost(r) for r in records)
    code = _dry_run(ctx, requests, problems=problems, budget=budget, already=already)
    for problem in problems:
        ctx.out.error(problem)
    if problems:
        ctx.out.error(
            f"{len(problems)} item(s) would fail before anything is sent: fix them and run "
            "--dry-run again."
        )
        return EXIT_USAGE
    return code


async def cmd_journal_show(ctx: Context) -> int:
    """``wanr2v journal show DB``: every item with its state, task, cost, file or error."""
    from .._batch_records import record_cost

    path = Path(ctx.args.journal)
    journal = await _open_journal(ctx, path, must_exist=True)
    async with journal:
        records = await journal.list()
        meta = {
            k: await journal.get_meta(k)
            for k in ("base_url", "region", "out", "name", "budget_usd", "batch_file")
        }
    rows = []
    docs = []
    total = 0.0
    counts: dict[str, int] = {}
    for rec in records:
        cost = record_cost(rec)
        total += cost
        counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        detail = rec.download_path or (
            f"{rec.error_type or 'error'}: {rec.error_message or ''}".strip()
            if rec.error_type or rec.error_message
            else ""
        )
        rows.append(
            [
                rec.batch_key,
                rec.state.value,
                rec.task_id or "",
                rec.status or "",
                f"{cost:.3f}",
                show_path(detail) if rec.download_path else detail,
            ]
        )
        docs.append(record_json(rec, cost))
    where = meta.get("base_url") or "?"
    ctx.out.line(f"journal {path} ({where}, region {meta.get('region') or '?'})")
    ctx.out.table(
        ["KEY", "STATE", "TASK", "STATUS", "USD", "FILE / ERROR"], rows, droppable=("TASK",)
    )
    states = " · ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    ctx.out.line(
        f"{len(records)} item(s): {states or 'none'} · {total:.2f} USD billed or committed "
        "(usage at list prices; estimates for tasks not finished)"
    )
    unfinished = sum(1 for r in records if not r.is_terminal)
    if unfinished:
        ctx.out.line(f"{unfinished} unfinished: wanr2v resume --journal {path}")
    ctx.out.emit(
        {
            "journal": str(path),
            "meta": meta,
            "counts": counts,
            "cost_usd": round(total, 4),
            "items": docs,
        }
    )
    return EXIT_OK
