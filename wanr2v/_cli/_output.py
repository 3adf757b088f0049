"""What the ``wanr2v`` command says: the renderer, the ``--json`` shapes, the exit codes.

- `Output` writes human lines, tables (rich on a terminal, aligned plain columns
  otherwise), warnings, errors and the one JSON document of ``--json``; every string
  is scrubbed of the API key before it is written.
- `ProgressView` draws task progress from the client's lifecycle events: a rich bar
  on a terminal, one plain line per change otherwise, nothing in JSON mode.
- The JSON shapes are here and only here, one function per model (`task_json`,
  `result_json`, `summary_json`, `item_json`, `stats_json`, `batch_json`,
  `request_json`, `record_json`, `error_json`), so the commands never build a model's
  document by hand.
- The exit codes (`EXIT_OK` … `EXIT_TERMINATED`) and which error ends a command with
  which (`exit_code_for`, `batch_exit`).

Nothing here sends a request or touches a journal.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final

import attrs

from .. import _config
from .._batch_records import BatchItem, summarize
from .._events import TaskEvent
from .._exceptions import (
    AuthenticationError,
    ConfigurationError,
    InvalidParameterError,
    InvalidRequestError,
    PermissionDeniedError,
    SubmitOutcomeUnknownError,
)
from .._models import TaskResult, VideoRequest
from .._wire import request_to_dict

if TYPE_CHECKING:
    from .._client import ClientStatistics
    from ..journal import SubmissionRecord

EXIT_OK: Final = 0
"""Everything asked for succeeded."""
EXIT_FAILED: Final = 1
"""Some task failed, was canceled or is unknown, or the service answered an error."""
EXIT_USAGE: Final = 2
"""Bad arguments or setup: no key, bad region, invalid request or batch file, refused key."""
EXIT_UNKNOWN: Final = 3
"""A create's outcome is unknown, or a batch has unfinished tasks: run ``wanr2v resume``."""
EXIT_INTERRUPTED: Final = 130
"""Interrupted (Ctrl-C); a journaled batch resumes with ``wanr2v resume``."""
EXIT_TERMINATED: Final = 143
"""Terminated (SIGTERM), handled like Ctrl-C; a journaled batch resumes with ``wanr2v resume``."""

EXIT_CODES_HELP: Final = """\
exit codes:
  0    all ok
  1    some tasks failed (FAILED, CANCELED, UNKNOWN) or the service answered an error
  2    usage or configuration error (bad arguments, DASHSCOPE_API_KEY missing or
       refused, invalid request or batch file)
  3    a create's outcome is unknown, or tasks are unfinished: run `wanr2v resume`
  130  interrupted (Ctrl-C); a journaled batch resumes with `wanr2v resume`
  143  terminated (SIGTERM), handled like Ctrl-C
"""


class CliError(Exception):
    """A problem the user fixes (printed without a traceback) and its exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# --- output ---------------------------------------------------------------------------


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


class Output:
    """Where everything the command says goes: human text, tables, JSON, errors.

    Every string is scrubbed of the API key before it is written.

    Args:
        json_mode: one JSON document on stdout instead of human text.
        stdout: the stream for results (default ``sys.stdout``).
        stderr: the stream for errors (default ``sys.stderr``).
    """

    def __init__(
        self, *, json_mode: bool, stdout: IO[str] | None = None, stderr: IO[str] | None = None
    ) -> None:
        self.json_mode = json_mode
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.secrets: list[str] = []
        isatty = getattr(self.stdout, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self.rich = self.terminal and not json_mode and _rich_available()
        self._console: Any = None

    @property
    def console(self) -> Any:
        """A rich ``Console`` on stdout (only when `rich`)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stdout, highlight=False)
        return self._console

    def scrub(self, text: str) -> str:
        """``text`` with every secret replaced by its masked form."""
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, _config.mask_key(secret))
        return text

    def line(self, text: str = "") -> None:
        """A line of human output (nothing in JSON mode)."""
        if self.json_mode:
            return
        if self.rich:
            from rich.markup import escape

            self.console.print(escape(self.scrub(text)))
        else:
            print(self.scrub(text), file=self.stdout, flush=True)

    def error(self, text: str) -> None:
        """An error line on stderr, always."""
        print(f"wanr2v: error: {self.scrub(text)}", file=self.stderr, flush=True)

    def warn(self, text: str) -> None:
        """A warning line on stderr, always."""
        print(f"wanr2v: warning: {self.scrub(text)}", file=self.stderr, flush=True)

    def emit(self, document: Mapping[str, Any], *, one_line: bool = False) -> None:
        """The JSON document of a command (JSON mode only); ``one_line`` for streams."""
        if not self.json_mode:
            return
        indent = None if one_line else 2
        text = json.dumps(document, indent=indent, ensure_ascii=False, default=str)
        print(self.scrub(text), file=self.stdout, flush=True)

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[object]],
        *,
        title: str | None = None,
        droppable: Sequence[str] = (),
    ) -> None:
        """A table: rich on a terminal, aligned plain columns otherwise.

        Args:
            columns: the headers.
            rows: the cells (``None`` shows empty).
            title: a line above the table.
            droppable: columns a narrow terminal may leave out, first named first
                (the JSON output always has them).
        """
        if self.json_mode:
            return
        cells = [[self.scrub("" if c is None else str(c)) for c in row] for row in rows]
        if self.rich:
            from rich import box
            from rich.table import Table

            keep = list(range(len(columns)))

            def natural() -> int:
                return sum(max([len(columns[i]), *(len(r[i]) for r in cells)]) + 3 for i in keep)

            for name in droppable:
                if natural() <= self.console.width:
                    break
                if name in columns:
                    keep.remove(columns.index(name))
            table = Table(
                title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD
            )
            for i in keep:
                # Ids and paths fold (they are copied from here); the rest is cut short.
                wide = columns[i].startswith(("TASK", "FILE", "DETAIL", "RESULT"))
                table.add_column(columns[i], overflow="fold" if wide else "ellipsis")
            for row in cells:
                table.add_row(*(row[i] for i in keep))
            self.console.print(table)
            return
        if title:
            print(title, file=self.stdout)
        widths = [len(c) for c in columns]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        for row in [list(columns), *cells]:
            text = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))
            print(text.rstrip(), file=self.stdout)
        self.stdout.flush()


_FINAL_KINDS: Final = frozenset({"succeeded", "failed", "canceled", "unknown"})


class ProgressView:
    """Task progress: a rich bar on a terminal, one plain line per change otherwise.

    Fed by the client's lifecycle events (`event`) and, when the caller has
    them, by finished batch items (`item_done`). Silent in JSON mode.

    Args:
        out: the output.
        total: how many tasks (or batch items) there are.
        done: how many were finished before this run (a resumed batch).
    """

    def __init__(self, out: Output, total: int, *, done: int = 0, idle: str = "submitting") -> None:
        self.out = out
        self.total = total
        self._idle = idle
        self._done_before = done
        self._done: set[object] = set()
        self._kinds: dict[str, str] = {}
        self._labels: dict[str, str] = {}
        self._created = 0
        self._started = time.monotonic()
        self._progress: Any = None
        self._bar: Any = None
        self.mode = "off" if out.json_mode else "rich" if out.rich else "plain"

    def __enter__(self) -> ProgressView:
        if self.mode == "rich":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.out.console,
            )
            self._progress.start()
            self._bar = self._progress.add_task(
                self._describe(), total=self.total, completed=self.finished
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._refresh()
            self._progress.stop()

    @property
    def finished(self) -> int:
        """Items finished, this run and before."""
        return self._done_before + len(self._done)

    def _describe(self) -> str:
        counts: dict[str, int] = {}
        for kind in self._kinds.values():
            counts[kind] = counts.get(kind, 0) + 1
        parts = [
            f"{counts[k]} {k}"
            for k in ("queued", "running", "succeeded", "failed", "canceled", "unknown")
            if counts.get(k)
        ]
        if not parts:
            return f"{self._created} created" if self._created else self._idle
        return " · ".join(parts)

    def _refresh(self) -> None:
        if self._progress is not None:
            self._progress.update(self._bar, completed=self.finished, description=self._describe())

    def _say(self, label: str, text: str) -> None:
        elapsed = time.monotonic() - self._started
        line = f"{elapsed:7.1f}s  {label}: {text}"
        if self.mode == "plain":
            self.out.line(line)
        elif self.mode == "rich":
            from rich.markup import escape

            self._progress.console.print(escape(self.out.scrub(line)))

    def event(self, ev: TaskEvent) -> None:
        """Take one lifecycle event (subscribe this to the client)."""
        if ev.kind == "updated" or self.mode == "off":
            return
        if ev.kind == "created":
            self._created += 1
        if ev.key is None and ev.kind == "created":
            self._refresh()
            return  # the batch names its task right after; say it then
        first = ev.task_id not in self._labels
        label = str(ev.key) if ev.key is not None else ev.task_id
        self._labels[ev.task_id] = label
        previous = self._kinds.get(ev.task_id)
        self._kinds[ev.task_id] = ev.kind
        if ev.kind in _FINAL_KINDS:
            self._done.add(ev.key if ev.key is not None else ev.task_id)
        self._refresh()
        if ev.kind == previous:
            return
        detail = ""
        if first and ev.key is not None:
            detail = f" (task {ev.task_id})"
        if ev.result is not None and ev.result.code:
            detail += f" ({ev.result.code}: {ev.result.message or ''})"
        if self.mode == "plain" or ev.kind in ("failed", "canceled", "unknown"):
            self._say(label, ev.kind + detail)

    def item_done(self, item: BatchItem) -> None:
        """Take one finished batch item (after its download)."""
        if self.mode == "off":
            return
        self._done.add(item.key)
        self._refresh()
        if item.earlier:
            self._say(str(item.key), "finished in an earlier run")
        elif item.path is not None:
            self._say(str(item.key), f"saved {show_path(item.path)}")
        elif item.error is not None and item.result is None:
            self._say(str(item.key), f"error: {item.error}")


def absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute: string work and ``getcwd``, no filesystem lookups."""
    return Path(os.path.abspath(path))


def show_path(path: Path | str) -> str:
    """``path`` relative to the working folder when it is inside it."""
    p = Path(path)
    try:
        return str(Path(os.path.abspath(p)).relative_to(os.getcwd()))
    except ValueError:
        return str(p)


def when(value: datetime | None) -> str:
    """A time in UTC (every time the CLI shows is UTC, and the headers say so)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def detail(result: TaskResult) -> str:
    """A result in a few words: its error code and message, or its video URL."""
    if result.code or result.message:
        return f"{result.code or ''}: {result.message or ''}".strip(": ")
    if result.succeeded:
        return result.video_url or ""
    return ""


# --- JSON shapes: one function per model -----------------------------------------------


# task_json, result_json and summary_json are _wire's (the one place for JSON shapes).


def message(exc: BaseException) -> str:
    """An error's message: a WanError's ``message`` (without the HTTP status prefix), else ``str``."""
    text = getattr(exc, "message", None)
    return text if isinstance(text, str) and text else str(exc)


def error_json(exc: BaseException) -> dict[str, Any]:
    """An error: its type, message and whichever of its documented attributes it has."""
    out: dict[str, Any] = {"type": type(exc).__name__, "message": message(exc)}
    for name in ("code", "status_code", "request_id", "task_id", "submission_id"):
        value = getattr(exc, name, None)
        if value is not None:
            out[name] = value
    candidates = getattr(exc, "candidates", None)
    if candidates:
        out["candidates"] = list(candidates)
    return out


def item_json(item: BatchItem) -> dict[str, Any]:
    """One batch item's outcome."""
    status = item.result.status.value if item.result is not None else None
    return {
        "key": item.key,
        "ok": item.ok,
        "task_id": item.task.task_id if item.task is not None else None,
        "status": status,
        "model": item.request.model if item.request is not None else None,
        "path": str(item.path) if item.path is not None else None,
        "estimated_cost_usd": item.billed_usd,
        "billed_usd": item.billed_usd,
        "earlier": item.earlier,
        "error": error_json(item.error) if item.error is not None else None,
    }


def stats_json(stats: ClientStatistics) -> dict[str, Any]:
    """What the client sent and heard (a batch's report)."""
    return {
        "requests": dict(stats.requests),
        "queries_sent": sum(stats.requests.values()),
        "responses_by_status": {str(k): v for k, v in stats.statuses.items()},
        "rate_limited": stats.rate_limited,
        "created": stats.created,
        "reconciled": stats.reconciled,
    }


def batch_json(
    items: Sequence[BatchItem],
    *,
    wall: float,
    stats: ClientStatistics,
    unfinished: int,
    code: int,
    extra: Mapping[str, Any],
    emulator: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A batch's report (``run``, ``resume``, ``demo``): summary, stats and items."""
    doc: dict[str, Any] = {
        "ok": code == EXIT_OK,
        "exit_code": code,
        "summary": attrs.asdict(summarize(items, wall)),
        "unfinished": unfinished,
        "stats": stats_json(stats),
        "items": [item_json(it) for it in items],
        **extra,
    }
    if emulator is not None:
        doc["emulator"] = {
            k: emulator[k] for k in ("tasks_created", "duplicate_creates", "throttled", "requests")
        }
    return doc


def request_json(request: VideoRequest) -> dict[str, Any]:
    """A request as the journal records it, with its estimated cost (``run --dry-run``)."""
    return {**request_to_dict(request), "estimated_cost_usd": request.estimated_cost_usd()}


def record_json(record: SubmissionRecord, cost_usd: float) -> dict[str, Any]:
    """One journal record (``journal show``), with what it billed or may bill."""
    return {
        "key": record.batch_key,
        "state": record.state.value,
        "task_id": record.task_id,
        "status": record.status,
        "cost_usd": cost_usd,
        "download_path": record.download_path,
        "error_type": record.error_type,
        "error_message": record.error_message,
        "updated_at": datetime.fromtimestamp(record.updated_at, UTC).isoformat(),
    }


def failure_json(exc: BaseException, code: int) -> dict[str, Any]:
    """The document of a command that ended with an error."""
    return {"ok": False, "exit_code": code, "error": error_json(exc)}


# --- exit codes -----------------------------------------------------------------------


def exit_code_for(exc: BaseException) -> int:
    """The exit code an error ends the command with."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, SubmitOutcomeUnknownError):
        return EXIT_UNKNOWN
    from ..journal import JournalError

    if isinstance(
        exc,
        (
            ConfigurationError,
            InvalidRequestError,
            InvalidParameterError,
            AuthenticationError,
            PermissionDeniedError,
            JournalError,  # unreadable, read-only or full: fix it, then resume
        ),
    ):
        return EXIT_USAGE
    return EXIT_FAILED


def batch_exit(items: Sequence[BatchItem], unfinished: int) -> int:
    """A batch's exit code: unfinished or unknown (3), some failed (1), else 0."""
    if unfinished or any(isinstance(it.error, SubmitOutcomeUnknownError) for it in items):
        return EXIT_UNKNOWN
    if any(not it.ok for it in items):
        return EXIT_FAILED
    return EXIT_OK
