"""The ``wanr2v`` command: single tasks, durable batches, the emulator and the demo.

Every command talks to one service (``--base-url`` / ``--region``, else
``DASHSCOPE_HTTP_BASE_URL`` / ``DASHSCOPE_REGION``, else beijing) with the key in
``DASHSCOPE_API_KEY``; the key is never printed (every line written is scrubbed of it).
``--json`` turns the human output into one JSON document on stdout. Progress bars
(rich, the ``cli`` extra) are drawn only when stdout is a terminal; otherwise progress
is one plain line per change, and without rich everything degrades to plain text.

Each command runs in one ``anyio.run``; files are read and written off the event loop.

Stopping: Ctrl-C and SIGTERM (what docker, systemd and Kubernetes send) stop a command
the same way: the command is cancelled, ``--cancel-pending`` cancels the tasks still
PENDING, the journal is left resumable and the resume hint is printed (exit 130 for
Ctrl-C, 143 for SIGTERM). No traceback and no ``ExceptionGroup`` is printed for an
error wanr2v raises on purpose: one line on stderr (several errors at once: the first
meaningful one, the others as ``also:`` lines).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Final, TypeVar

import anyio
import attrs

from . import _config
from ._batch import BatchItem, CancelPolicy, summarize
from ._events import TaskEvent
from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    DownloadError,
    InvalidParameterError,
    InvalidRequestError,
    PermissionDeniedError,
    ResultExpiredError,
    SubmitOutcomeUnknownError,
    TaskError,
    UnsupportedOperationError,
    WanError,
    collapse_group,
    collapsing_groups,
)
from ._models import Task, TaskResult, TaskStatus, TaskSummary, VideoRequest
from ._version import __version__

if TYPE_CHECKING:
    from ._client import AsyncWanClient, ClientStatistics
    from ._demo import DemoReport
    from .journal import SQLiteJournal

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_UNKNOWN",
    "EXIT_USAGE",
    "build_parser",
    "load_batch",
    "main",
]

T = TypeVar("T")

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

DEFAULT_DEMO_OUT: Final = "wanr2v-demo-videos"
DEFAULT_RUN_OUT: Final = "videos"

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

MAIN_EPILOG: Final = f"""\
examples:
  wanr2v demo                                        # no key needed: built-in emulator
  export DASHSCOPE_API_KEY=sk-...                    # the key of your region
  wanr2v submit --prompt "character1 waves" --ref me.mp4 --wait --out videos/
  wanr2v run requests.jsonl --journal batch.db --out videos/
  wanr2v resume --journal batch.db                   # after a crash, Ctrl-C or kill -9
  wanr2v status TASK_ID --json

environment:
  DASHSCOPE_API_KEY        the API key (required; never printed)
  DASHSCOPE_HTTP_BASE_URL  a base URL override (like --base-url)
  DASHSCOPE_REGION         beijing (default), singapore or virginia (like --region)
  WANR2V_LOG               debug, info or warning: log to stderr (like -v / -vv)

{EXIT_CODES_HELP}"""

RUN_EPILOG: Final = f"""\
A batch file holds one request per line (JSONL), each with the fields of
AsyncWanClient.async_call and an optional "key" (default: the line number):

  {{"key": "intro", "model": "wan2.6-r2v-flash", "prompt": "character1 waves at character2",
   "reference_urls": ["clips/me.mp4", "https://example.com/dog.png"], "duration": 5}}

or a TOML file with optional [defaults] and [[requests]] tables:

  [defaults]
  model = "wan2.6-r2v-flash"
  size = "1280*720"

  [[requests]]
  key = "intro"
  prompt = "character1 waves at character2"
  reference_urls = ["clips/me.mp4", "dog.png"]

Relative paths are relative to the batch file; local files are uploaded for you.
Every submission is recorded in the journal before its create is sent, so a batch
killed at any point (kill -9 included) finishes with `wanr2v resume --journal FILE`
without paying twice. Running the same batch file again with the same journal
finishes what is unfinished and skips what is done.

Videos are named {{key}}.mp4 (--name "{{key}}-{{task_id}}.mp4" to change it). An item that
failed before its task was made (a missing reference file) runs again with
--retry-failed once fixed; --budget USD creates no task that would take the batch
(what the journal already billed included) over that sum.

examples:
  wanr2v run requests.jsonl --journal batch.db --out videos/
  wanr2v run requests.toml --dry-run --budget 20       # check everything, show the cost
  wanr2v run requests.jsonl --journal batch.db --retry-failed
  wanr2v run requests.jsonl --journal batch.db --json > summary.json
  wanr2v journal show batch.db                         # states, tasks, costs

{EXIT_CODES_HELP}"""

DEMO_EPILOG: Final = f"""\
The demo needs no key and no network: it starts the emulator of the DashScope task
API in this process (on loopback, its clock sped up), writes a few local reference
files (two character clips, a picture of an object, a picture of a background),
runs five tasks modelled on the vendor's example (both models, some silent, local
files and URLs mixed), saves the videos and prints what it cost and what it sent.

examples:
  wanr2v demo
  wanr2v demo --out /tmp/videos --json
  wanr2v emulator --time-scale 20 &                 # or against a running emulator:
  wanr2v demo --base-url http://127.0.0.1:PORT/api/v1 --time-scale 20

{EXIT_CODES_HELP}"""


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
            self._say(str(item.key), f"saved {_show_path(item.path)}")
        elif item.error is not None and item.result is None:
            self._say(str(item.key), f"error: {item.error}")


def _absolute(path: str | os.PathLike[str]) -> Path:
    """``path`` made absolute: string work and ``getcwd``, no filesystem lookups."""
    return Path(os.path.abspath(path))


def _show_path(path: Path | str) -> str:
    p = Path(path)
    try:
        return str(Path(os.path.abspath(p)).relative_to(os.getcwd()))
    except ValueError:
        return str(p)


def _when(value: datetime | None) -> str:
    """A time in UTC (every time the CLI shows is UTC, and the headers say so)."""
    if value is None:
        return ""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


# --- JSON shapes ----------------------------------------------------------------------


def _task_json(task: Task) -> dict[str, Any]:
    return {
        "task_id": task.task_id,
        "status": task.status.value,
        "request_id": task.request_id,
        "model": task.model,
        "region": task.region,
        "base_url": task.base_url,
    }


def _result_json(result: TaskResult) -> dict[str, Any]:
    from .journal._base import result_to_dict

    return result_to_dict(result)


def _summary_row_json(row: TaskSummary) -> dict[str, Any]:
    return {
        "task_id": row.task_id,
        "status": row.status.value,
        "raw_status": row.raw_status,
        "model_name": row.model_name,
        "request_id": row.request_id,
        "gmt_create": row.gmt_create.isoformat() if row.gmt_create else None,
    }


def _message(exc: BaseException) -> str:
    """An error's message: a WanError's ``message`` (without the HTTP status prefix), else ``str``."""
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) and message else str(exc)


def _error_json(exc: BaseException) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(exc).__name__, "message": _message(exc)}
    for name in ("code", "status_code", "request_id", "task_id", "submission_id"):
        value = getattr(exc, name, None)
        if value is not None:
            out[name] = value
    candidates = getattr(exc, "candidates", None)
    if candidates:
        out["candidates"] = list(candidates)
    return out


def _item_json(item: BatchItem) -> dict[str, Any]:
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
        "error": _error_json(item.error) if item.error is not None else None,
    }


def _stats_json(stats: ClientStatistics) -> dict[str, Any]:
    return {
        "requests": dict(stats.requests),
        "queries_sent": sum(stats.requests.values()),
        "responses_by_status": {str(k): v for k, v in stats.statuses.items()},
        "rate_limited": stats.rate_limited,
        "created": stats.created,
        "reconciled": stats.reconciled,
    }


# --- exit codes -----------------------------------------------------------------------


def exit_code_for(exc: BaseException) -> int:
    """The exit code an error ends the command with."""
    if isinstance(exc, CliError):
        return exc.code
    if isinstance(exc, SubmitOutcomeUnknownError):
        return EXIT_UNKNOWN
    from .journal import JournalError

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


def _batch_exit(items: Sequence[BatchItem], unfinished: int) -> int:
    if unfinished or any(isinstance(it.error, SubmitOutcomeUnknownError) for it in items):
        return EXIT_UNKNOWN
    if any(not it.ok for it in items):
        return EXIT_FAILED
    return EXIT_OK


# --- setup ----------------------------------------------------------------------------


@attrs.define
class Context:
    """What a command runs with."""

    args: argparse.Namespace
    out: Output
    resume_hint: str | None = None

    def __attrs_post_init__(self) -> None:
        _setup_logging(self.out, getattr(self.args, "verbose", 0) or 0)

    def api_key(self) -> str:
        """The key from ``DASHSCOPE_API_KEY``; a clear error (exit 2) when it is missing."""
        key = os.environ.get(_config.ENV_API_KEY, "").strip()
        if not key:
            raise CliError(
                f"{_config.ENV_API_KEY} is not set: export {_config.ENV_API_KEY}=sk-... "
                "(the API key of your region; `wanr2v demo` needs none)."
            )
        self.out.secrets.append(key)
        return key

    def client(
        self,
        *,
        base_url: str | None = None,
        region: str | None = None,
        time_scale: float | None = None,
        api_key: str | None = None,
    ) -> AsyncWanClient:
        """A client for the options (and the journal's memory, for ``resume``)."""
        from ._client import AsyncWanClient
        from ._limits import Limits
        from ._polling import PollPolicy

        key = api_key or self.api_key()
        scale = self.time_scale(time_scale)
        return AsyncWanClient(
            api_key=key,
            base_url=getattr(self.args, "base_url", None) or base_url,
            region=getattr(self.args, "region", None) or region,
            limits=Limits().scaled(scale),
            poll_policy=PollPolicy().scaled(scale),
            reconcile_wait=900.0 / scale,
        )

    def time_scale(self, fallback: float | None = None) -> float:
        """``--time-scale``, else ``fallback``, else 1."""
        value = getattr(self.args, "time_scale", None)
        if value is None:
            value = fallback if fallback is not None else 1.0
        if not value > 0:
            raise CliError(f"--time-scale must be > 0, got {value}.")
        return float(value)


async def _gather(fn: Callable[[str], Awaitable[T]], keys: Sequence[str]) -> list[T]:
    """``fn`` over ``keys`` at once; results in order (the first error cancels the rest)."""
    results: dict[int, T] = {}

    async def one(i: int, key: str) -> None:
        results[i] = await fn(key)

    with collapsing_groups():
        async with anyio.create_task_group() as tg:
            for i, key in enumerate(keys):
                tg.start_soon(one, i, key)
    return [results[i] for i in range(len(keys))]


# --- batch files ----------------------------------------------------------------------

_REQUEST_FIELDS: Final = frozenset(a.name for a in attrs.fields(VideoRequest))


def _absolute_refs(refs: object, base: Path) -> object:
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list):
        return refs
    out: list[object] = []
    for ref in refs:
        if isinstance(ref, str) and "://" not in ref and ref.strip():
            path = Path(ref).expanduser()
            out.append(str(path if path.is_absolute() else (base / path).resolve()))
        else:
            out.append(ref)
    return out


def _request_from(fields: Mapping[str, Any], where: str, base: Path) -> VideoRequest:
    unknown = sorted(set(fields) - _REQUEST_FIELDS)
    if unknown:
        raise CliError(
            f"{where}: unknown field(s) {', '.join(unknown)}; "
            f"use {', '.join(sorted(_REQUEST_FIELDS))} (and key)."
        )
    data = dict(fields)
    if "reference_urls" in data:
        data["reference_urls"] = _absolute_refs(data["reference_urls"], base)
    try:
        return VideoRequest(**data)
    except InvalidRequestError as exc:
        raise CliError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise CliError(f"{where}: {exc}") from None


def load_batch(path: str | os.PathLike[str]) -> dict[str, VideoRequest]:
    """Read a batch file (JSONL, or TOML by its ``.toml`` suffix) into keyed requests.

    Blocking (it reads the file): call it in a worker thread from async code.

    Raises:
        CliError: the file is missing or malformed, a key repeats, or a request is
            invalid (the message names the line or entry).
    """
    file = Path(path)
    base = file.resolve().parent
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read the batch file {file}: {exc.strerror or exc}") from None
    entries: list[tuple[str, dict[str, Any], str]] = []
    if file.suffix.lower() == ".toml":
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CliError(f"{file}: not valid TOML: {exc}") from None
        defaults = doc.get("defaults", {})
        reqs = doc.get("requests", doc.get("request"))
        if not isinstance(defaults, dict) or not isinstance(reqs, list):
            raise CliError(f"{file}: expected [[requests]] tables (and an optional [defaults]).")
        for n, entry in enumerate(reqs, start=1):
            if not isinstance(entry, dict):
                raise CliError(f"{file}: requests #{n} is not a table.")
            merged = {**defaults, **entry}
            entries.append((str(merged.pop("key", n)), merged, f"{file}: requests #{n}"))
    else:
        for n, raw in enumerate(text.splitlines(), start=1):
            stripped = raw.strip()
            if not stripped or stripped.startswith("#"):
                continue
            try:
                entry = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise CliError(f"{file}:{n}: not valid JSON: {exc.msg}") from None
            if not isinstance(entry, dict):
                raise CliError(f"{file}:{n}: each line must be a JSON object.")
            entries.append((str(entry.pop("key", n)), entry, f"{file}:{n}"))
    if not entries:
        raise CliError(f"{file}: no requests in the batch file.")
    out: dict[str, VideoRequest] = {}
    for key, fields, where in entries:
        if not key.strip():
            raise CliError(f"{where}: the key is empty.")
        if key in out:
            raise CliError(f"{where}: the key {key!r} is used twice; keys must be unique.")
        out[key] = _request_from(fields, where, base)
    return out


# --- commands: single tasks -----------------------------------------------------------


async def cmd_submit(ctx: Context) -> int:
    """Create one task (and optionally wait for it and download it)."""
    a = ctx.args
    refs = _absolute_refs(list(a.ref), Path.cwd())
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
        await _check_out(a.out, "--out", several=False)
    async with ctx.client() as client:
        try:
            task = await client.async_call(request)
        except InvalidRequestError as exc:  # a local file: in the words of the flags
            raise CliError(_flag_message(_message(exc))) from None
        doc: dict[str, Any] = {"task": _task_json(task)}
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
        doc["result"] = _result_json(result)
        code = EXIT_OK if result.succeeded else EXIT_FAILED
        if result.succeeded and a.out:
            path = await client.download(result, _absolute(a.out))
            doc["path"] = str(path)
            ctx.out.line(f"saved {_show_path(path)}")
        elif result.succeeded:
            ctx.out.line(f"task {task.task_id} SUCCEEDED: {result.video_url}")
            ctx.out.line(
                f"next: wanr2v download {task.task_id} --out videos/  (the URL lives 24 h)"
            )
        elif not result.succeeded:
            ctx.out.line(f"task {task.task_id} {result.status.value}: {_detail(result)}")
        ctx.out.emit(doc)
        return code


def _detail(result: TaskResult) -> str:
    if result.code or result.message:
        return f"{result.code or ''}: {result.message or ''}".strip(": ")
    if result.succeeded:
        return result.video_url or ""
    return ""


async def cmd_status(ctx: Context) -> int:
    """Query tasks once."""
    async with ctx.client() as client:
        results = await _gather(client.fetch, ctx.args.task_ids)
    ctx.out.table(
        ["TASK", "STATUS", "SUBMITTED (UTC)", "ENDED (UTC)", "DETAIL"],
        [
            [r.task_id, r.status.value, _when(r.submit_time), _when(r.end_time), _detail(r)]
            for r in results
        ],
    )
    ctx.out.emit({"tasks": [_result_json(r) for r in results]})
    bad = {TaskStatus.FAILED, TaskStatus.CANCELED, TaskStatus.UNKNOWN}
    return EXIT_FAILED if any(r.status in bad for r in results) else EXIT_OK


async def cmd_wait(ctx: Context) -> int:
    """Wait for tasks to end (and download the videos with ``--out``)."""
    a = ctx.args
    from ._exceptions import WaitTimeoutError

    if a.out:
        await _check_out(a.out, "--out", several=len(a.task_ids) > 1)
    async with ctx.client() as client:
        rows: dict[str, dict[str, Any]] = {}

        async def one(task_id: str) -> None:
            row: dict[str, Any] = {"task_id": task_id}
            rows[task_id] = row
            try:
                result = await client.wait(task_id, timeout=a.timeout, raise_on_failure=False)
            except WaitTimeoutError as exc:
                row.update(status="TIMEOUT", error=_error_json(exc))
                return
            row.update(status=result.status.value, result=_result_json(result))
            if result.succeeded and a.out:
                try:
                    path = await client.download(result, _absolute(a.out))
                except (DownloadError, ResultExpiredError, TaskError) as exc:
                    row["error"] = _error_json(exc)
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
                _show_path(r["path"])
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
                return {"task_id": task_id, "canceled": False, "error": _error_json(exc)}
            return {"task_id": task_id, "canceled": True}

        rows = await _gather(one, ctx.args.task_ids)
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
        [[r.task_id, r.status.value, r.model_name or "", _when(r.gmt_create)] for r in rows],
    )
    if not rows:
        ctx.out.line("no tasks in the window")
    ctx.out.emit({"tasks": [_summary_row_json(r) for r in rows]})
    return EXIT_OK


async def cmd_download(ctx: Context) -> int:
    """Save succeeded tasks' videos."""
    a = ctx.args
    await _check_out(a.out, "--out", several=len(a.task_ids) > 1)
    async with ctx.client() as client:

        async def one(task_id: str) -> dict[str, Any]:
            try:
                path = await client.download(task_id, _absolute(a.out))
            except (TaskError, ResultExpiredError, DownloadError) as exc:
                return {"task_id": task_id, "path": None, "error": _error_json(exc)}
            return {"task_id": task_id, "path": str(path)}

        rows = await _gather(one, a.task_ids)
    ctx.out.table(
        ["TASK", "FILE / ERROR"],
        [
            [r["task_id"], _show_path(r["path"]) if r["path"] else r["error"]["message"]]
            for r in rows
        ],
    )
    ctx.out.emit({"tasks": rows})
    return EXIT_OK if all(r["path"] for r in rows) else EXIT_FAILED


# --- commands: batches ----------------------------------------------------------------


def _default_journal(batch_file: Path) -> Path:
    return batch_file.with_name(batch_file.name + ".journal.db")


async def _open_journal(ctx: Context, path: Path, *, must_exist: bool) -> SQLiteJournal:
    from .journal import JournalError, SQLiteJournal

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


def _batch_report(
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
    code = _batch_exit(items, unfinished)
    out = ctx.out
    rows = []
    for it in items:
        status = it.result.status.value if it.result is not None else "—"
        if it.error is not None and it.result is None:
            status = type(it.error).__name__
        if it.path is not None:
            detail = _show_path(it.path)
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
    doc: dict[str, Any] = {
        "ok": code == EXIT_OK,
        "exit_code": code,
        "summary": attrs.asdict(summary),
        "unfinished": unfinished,
        "stats": _stats_json(stats),
        "items": [_item_json(it) for it in items],
        **extra,
    }
    if emulator is not None:
        doc["emulator"] = {
            k: emulator[k] for k in ("tasks_created", "duplicate_creates", "throttled", "requests")
        }
    out.emit(doc)
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
    from .journal import SubmissionState

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
    a = ctx.args
    batch_file = Path(a.file)
    requests = await anyio.to_thread.run_sync(load_batch, batch_file)
    journal_path = Path(a.journal) if a.journal else _default_journal(batch_file)
    name = _name_option(a.name)
    budget = _budget_option(a.budget)
    if a.dry_run:
        return await _dry_run_checked(ctx, requests, journal_path, budget)
    out_dir = _absolute(a.out)
    await _check_out(out_dir, "--out", several=True, folder=True)
    ctx.resume_hint = f"wanr2v resume --journal {journal_path}"
    client = ctx.client()
    async with client:
        journal = await _open_journal(ctx, journal_path, must_exist=False)
        async with journal:
            await _check_journal(journal, client.base_url, requests, a.allow_duplicates)
            await journal.set_meta("out", str(out_dir))
            await journal.set_meta("base_url", client.base_url)
            await journal.set_meta("region", client.region)
            await journal.set_meta("time_scale", ctx.time_scale())
            await journal.set_meta("batch_file", str(_absolute(batch_file)))
            await journal.set_meta("name", name)
            if budget is not None:
                await journal.set_meta("budget_usd", budget)
            ctx.out.line(
                f"{len(requests)} request(s) from {batch_file} → journal {journal_path} → "
                f"{_show_path(out_dir)}/ ({client.base_url})"
            )
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
            unfinished = await _unfinished(journal)
        return _batch_report(
            ctx,
            items,
            wall=wall,
            stats=client.statistics(),
            unfinished=unfinished,
            extra={"journal": str(journal_path), "out": str(out_dir)},
        )


async def _check_journal(
    journal: SQLiteJournal,
    base_url: str,
    requests: Mapping[str, VideoRequest],
    allow_duplicates: bool = False,
) -> None:
    from .journal import JournalConflictError
    from .journal._base import check_requests

    known = await journal.get_meta("base_url")
    if known is not None and known != base_url:
        raise CliError(
            f"the journal {journal.path} belongs to {known}, not {base_url}: its tasks live "
            "there; use --base-url/--region to match it, or another journal."
        )
    try:  # the library's money rule (run_many applies it too)
        await check_requests(journal, requests, allow_duplicates=allow_duplicates)
    except JournalConflictError as exc:
        raise CliError(str(exc)) from None


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
            "requests": {k: _request_json(r) for k, r in requests.items()},
            "estimated_cost_usd": round(total, 4),
            "already_committed_usd": round(already, 4),
            "budget_usd": budget,
            "within_budget": None if budget is None else not over,
            "problems": list(problems),
        }
    )
    return EXIT_OK


def _request_json(request: VideoRequest) -> dict[str, Any]:
    from .journal._base import request_to_dict

    return {**request_to_dict(request), "estimated_cost_usd": request.estimated_cost_usd()}


async def cmd_resume(ctx: Context) -> int:
    """Finish a journaled batch after a crash (the journal remembers where and how)."""
    a = ctx.args
    journal_path = Path(a.journal)
    ctx.resume_hint = f"wanr2v resume --journal {journal_path}"
    key = ctx.api_key()
    journal = await _open_journal(ctx, journal_path, must_exist=True)
    async with journal:
        out = a.out or await journal.get_meta("out") or DEFAULT_RUN_OUT
        out_dir = _absolute(out)
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
            await _check_out(out_dir, "--out", several=True, folder=True)
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
                f"{_show_path(out_dir)}/ ({client.base_url})"
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
            return _batch_report(
                ctx,
                items,
                wall=wall,
                stats=client.statistics(),
                unfinished=unfinished,
                extra={"journal": str(journal_path), "out": str(out_dir)},
            )


# --- batch options, checks and the journal command --------------------------------------

ENV_LOG: Final = "WANR2V_LOG"
DEFAULT_RUN_NAME: Final = "{key}.mp4"


def _add_reach_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--name",
        metavar="TEMPLATE",
        default=DEFAULT_RUN_NAME,
        help="video file names: {key}, {task_id}, {model} (default: %(default)s)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the items that failed without creating a task (e.g. a missing file)",
    )
    p.add_argument(
        "--budget",
        metavar="USD",
        help="create no task that would take the batch over USD (estimated; what the "
        "journal already billed included)",
    )


def _add_reach_resume_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also run again the items that failed without creating a task",
    )
    p.add_argument(
        "--budget", metavar="USD", help="a spending cap (default: the one `run` was given)"
    )


def _add_journal_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser(
        "journal",
        help="look into a batch journal",
        description="look into a batch journal",
        formatter_class=formatter,
    )
    jsub = p.add_subparsers(dest="journal_command", metavar="SUBCOMMAND", required=True)
    show = jsub.add_parser(
        "show",
        help="every item: state, task, status, cost, file or error",
        description="every item of a journal: state, task, status, cost, file or error",
        epilog="examples:\n  wanr2v journal show batch.db\n  wanr2v journal show batch.db "
        "--json\n\n" + EXIT_CODES_HELP,
        formatter_class=formatter,
        parents=[_common(service=False)],
    )
    show.add_argument("journal", metavar="DB", help="the journal of `wanr2v run`")
    show.set_defaults(handler=cmd_journal_show)


def _setup_logging(out: Output, verbose: int) -> None:
    """``-v`` / ``-vv`` or ``WANR2V_LOG``: the ``wanr2v`` logger to stderr, scrubbed.

    Without either, only errors are logged: what goes wrong reaches the user as the
    command's own message, not as a raw log line before it.
    """
    import logging

    env = os.environ.get(ENV_LOG, "").strip().lower()
    levels = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
    if env and env not in levels:
        out.warn(f"{ENV_LOG}={env!r} is not one of debug, info, warning; ignored.")
    level = (
        logging.DEBUG
        if verbose >= 2
        else logging.INFO
        if verbose == 1
        else levels.get(env, logging.ERROR)
    )
    if env in levels and verbose == 0:
        level = levels[env]
    logger = logging.getLogger("wanr2v")
    for old in [h for h in logger.handlers if getattr(h, "_wanr2v_cli", False)]:
        logger.removeHandler(old)

    class Scrubbed(logging.Handler):
        _wanr2v_cli = True

        def emit(self, record: logging.LogRecord) -> None:
            try:
                text = f"wanr2v: {record.levelname.lower()}: {record.getMessage()}"
                print(out.scrub(text), file=out.stderr, flush=True)
            except Exception:  # pragma: no cover - logging must never break a command
                self.handleError(record)

    handler = Scrubbed(level)
    logger.addHandler(handler)
    # The handler filters; the logger is only ever opened up (-v), never closed down, so
    # a command run in-process does not silence the caller's own logging afterwards.
    if level < logger.getEffectiveLevel():
        logger.setLevel(level)


def _name_option(value: str) -> str:
    from ._batch import check_name_template

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


async def _check_out(
    out: str | os.PathLike[str], flag: str, *, several: bool, folder: bool = False
) -> None:
    """The place videos go can be written, checked before anything is paid for.

    A name ending in ``.mp4`` / ``.mov`` is a file (one task only); anything else is a
    folder, created if missing.
    """
    import tempfile

    path = _absolute(out)
    is_file = (
        not folder
        and path.suffix.lower() in (".mp4", ".mov")
        and not await anyio.Path(path).is_dir()
    )
    if is_file and several:
        raise CliError(
            f"{flag} {out}: a file name takes one task; give a folder for several videos."
        )
    target = path.parent if is_file else path
    try:
        await anyio.Path(target).mkdir(parents=True, exist_ok=True)

        def probe() -> None:
            with tempfile.TemporaryFile(dir=target):
                pass

        await anyio.to_thread.run_sync(probe)
    except OSError as exc:
        raise CliError(
            f"{flag} {out}: cannot write videos in {_show_path(target)} "
            f"({exc.strerror or exc}); pick another {flag}."
        ) from None


async def _dry_run_checked(
    ctx: Context,
    requests: Mapping[str, VideoRequest],
    journal_path: Path,
    budget: float | None,
) -> int:
    """``run --dry-run``: every local rule (files, counts, region), the cost, the budget."""
    import httpx

    from ._batch import _record_cost
    from ._files import Uploader

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
                problems.append(f"{key}: {_message(exc)}")
                continue
            from ._models import reference_kind

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
        already = sum(_record_cost(r) for r in records)
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
    from ._batch import _record_cost

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
        cost = _record_cost(rec)
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
                _show_path(detail) if rec.download_path else detail,
            ]
        )
        docs.append(
            {
                "key": rec.batch_key,
                "state": rec.state.value,
                "task_id": rec.task_id,
                "status": rec.status,
                "cost_usd": cost,
                "download_path": rec.download_path,
                "error_type": rec.error_type,
                "error_message": rec.error_message,
                "updated_at": datetime.fromtimestamp(rec.updated_at, UTC).isoformat(),
            }
        )
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


# --- commands: emulator and demo ------------------------------------------------------

_ENV_EMULATOR_CHILD: Final = "WANR2V_EMULATOR_CHILD"


def _emulator_should_detach(ctx: Context) -> bool:
    """``emulator --json`` writing into a pipe (``URL=$(wanr2v emulator --json | head -1)``)."""
    import stat

    if not ctx.args.json or os.environ.get(_ENV_EMULATOR_CHILD):
        return False
    try:
        fd = sys.stdout.fileno()
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except (AttributeError, OSError, ValueError):
        return False
    if not is_pipe or not hasattr(os, "fork"):
        return False
    try:  # only when launched as a program (the child is started with the same argv)
        return bool(build_parser().parse_args(sys.argv[1:]).command == "emulator")
    except SystemExit:
        return False


def _emulator_launcher(ctx: Context) -> int:
    """Serve the emulator in a child process and relay its output; when the reader of
    stdout goes away (``| head -1`` has its line), leave the emulator serving in the
    background and return, so that ``$(...)`` does not hang. Its pid is in the JSON
    line; stop it with ``kill PID``. Ctrl-C or SIGTERM here stop it too."""
    import select
    import subprocess

    child = subprocess.Popen(
        [sys.executable, "-m", "wanr2v", *sys.argv[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, _ENV_EMULATOR_CHILD: "1"},
        start_new_session=True,
    )
    assert child.stdout is not None and child.stderr is not None
    out_fd, err_fd = sys.stdout.fileno(), sys.stderr.fileno()
    sources = {child.stdout.fileno(): out_fd, child.stderr.fileno(): err_fd}
    poller = select.poll()
    for fd in sources:
        poller.register(fd, select.POLLIN)
    poller.register(out_fd, 0)  # POLLERR / POLLHUP only: the reader went away
    previous = signal.signal(signal.SIGTERM, lambda *_: child.terminate())

    def detach() -> int:
        ctx.out.warn(
            f"the emulator goes on in the background (pid {child.pid}); stop it with: "
            f"kill {child.pid}"
        )
        return EXIT_OK

    try:
        while sources:
            for fd, events in poller.poll(500):
                if fd == out_fd:
                    if events & (select.POLLERR | select.POLLHUP):
                        return detach()
                    continue
                data = os.read(fd, 65536)
                if not data:
                    poller.unregister(fd)
                    del sources[fd]
                    continue
                try:
                    os.write(sources[fd], data)
                except BrokenPipeError:
                    return detach()
        return child.wait()
    except KeyboardInterrupt:
        child.terminate()
        child.wait(timeout=30)
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_emulator(ctx: Context) -> int:
    """Serve an emulator in the foreground until Ctrl-C (or SIGTERM)."""
    from .testing import serve
    from .testing._cli import config_from_args

    a = ctx.args
    try:
        config = config_from_args(a)
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from None
    if _emulator_should_detach(ctx):
        return _emulator_launcher(ctx)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with serve(config, host=a.host, port=a.port, log_level=a.log_level) as emu:
            regions = {r: emu.base_url_for(r) for r in emu.regions}
            ctx.out.line(f"wanr2v emulator listening on {emu.base_url}")
            for region, url in regions.items():
                if url != emu.base_url:
                    ctx.out.line(f"  region {region}: {url}")
            ctx.out.line(f"  seed {emu.seed}, time scale {a.time_scale:g}")
            world = {k: v for k, v in emu.world().items() if v not in (0.0, False, None)}
            if world:
                ctx.out.line("  world: " + ", ".join(f"{k}={v}" for k, v in world.items()))
            ctx.out.line(
                f"  try: DASHSCOPE_API_KEY=sk-anything wanr2v list --base-url {emu.base_url}"
                + (f" --time-scale {a.time_scale:g}" if a.time_scale != 1 else "")
            )
            ctx.out.emit(
                {"base_url": emu.base_url, "regions": regions, "seed": emu.seed}
                | {"time_scale": a.time_scale, "pid": os.getpid()},
                one_line=True,
            )
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            st = emu.stats()
            ctx.out.line(
                f"stopped: {st.tasks_created} tasks created, {st.duplicate_creates} duplicate "
                f"creates, {st.throttled} throttled answers"
            )
    finally:
        signal.signal(signal.SIGTERM, previous)
    return EXIT_OK


async def cmd_demo(ctx: Context) -> int:
    """The README's first command: a multi-character batch on the built-in emulator."""
    from ._demo import run_demo

    a = ctx.args
    base_url = a.base_url
    key: str | None = None
    if base_url is not None:
        import httpx

        from ._client import _is_loopback

        if not _is_loopback(httpx.URL(base_url).host):
            raise CliError(
                "the demo runs only against an emulator on loopback (its clips are tiny "
                "synthetic files); use `wanr2v run` for the real service."
            )
        from .testing._client import EMULATOR_KEY

        key = os.environ.get(_config.ENV_API_KEY, "").strip() or EMULATOR_KEY
        ctx.out.secrets.append(key)
    out_dir = _absolute(a.out)
    view = ProgressView(ctx.out, 0)

    def on_start(url: str, total: int) -> None:
        view.total = total
        ctx.out.line(
            f"wanr2v demo: {total} tasks (both models, characters from clips, an object and "
            f"a background from pictures) on the emulator at {url}"
        )
        view.__enter__()

    try:
        report = await run_demo(
            out_dir,
            on_event=view.event,
            on_start=on_start,
            base_url=base_url,
            api_key=key,
            time_scale=a.time_scale,
        )
    finally:
        view.__exit__(None, None, None)
    return _demo_report(ctx, report)


def _demo_report(ctx: Context, report: DemoReport) -> int:
    code = _batch_report(
        ctx,
        report.items,
        wall=report.wall_seconds,
        stats=report.client,
        unfinished=0,
        extra={
            "out": str(report.out),
            "base_url": report.base_url,
            "time_scale": report.time_scale,
        },
        emulator=report.emulator,
    )
    ctx.out.line(
        f"videos in {_show_path(report.out)}/ · the emulator ran {report.time_scale:g}× faster "
        "than the service"
    )
    return code


# --- parser ---------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _common(*, service: bool = True) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    if service:
        parent.add_argument(
            "--base-url",
            metavar="URL",
            help=f"any DashScope base URL (default: ${_config.ENV_BASE_URL}, else the region's)",
        )
        parent.add_argument(
            "--region",
            help=f"beijing, singapore or virginia (default: ${_config.ENV_REGION}, else beijing)",
        )
        parent.add_argument(
            "--time-scale",
            type=float,
            metavar="X",
            help="the service runs X times faster than real time (an emulator started "
            "with --time-scale X); paces polling and rates to match (default 1)",
        )
    parent.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parent.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help=f"log what is sent and retried on stderr (-vv: debug); or {ENV_LOG}=info|debug",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``wanr2v`` argument parser (every subcommand, with help and examples)."""
    parser = argparse.ArgumentParser(
        prog="wanr2v",
        description="Wan 2.6 reference-to-video (DashScope) from the command line: single "
        "tasks, durable batches that never pay twice, and a built-in emulator.",
        epilog=MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"wanr2v {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()

    def add(name: str, help_: str, epilog: str = EXIT_CODES_HELP, **kw: Any) -> Any:
        return sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=epilog,
            formatter_class=_Formatter,
            parents=kw.pop("parents", [common]),
            **kw,
        )

    p = add(
        "submit",
        "create one task (and optionally wait and download)",
        epilog="examples:\n"
        '  wanr2v submit --prompt "character1 waves at character2" --ref me.mp4 --ref dog.png\n'
        "  wanr2v submit --model wan2.6-r2v --prompt ... --ref https://.../a.mp4 "
        "--wait --out videos/\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument(
        "--model", default="wan2.6-r2v-flash", choices=_config.MODELS, help="default: %(default)s"
    )
    p.add_argument("--prompt", required=True, help="name subjects character1…5 in ref order")
    p.add_argument(
        "--ref",
        action="append",
        required=True,
        metavar="URL_OR_PATH",
        help="a reference: http(s)://, oss://, file:// or a local file (repeat, 1–5)",
    )
    p.add_argument("--negative-prompt")
    p.add_argument("--size", help="W*H, e.g. 1280*720 (service default 1920*1080)")
    p.add_argument("--duration", type=int, help="seconds, 2–10 (service default 5)")
    p.add_argument("--shot-type", choices=("single", "multi"))
    p.add_argument(
        "--audio", action=argparse.BooleanOptionalAction, help="flash only; --no-audio: silent"
    )
    p.add_argument("--watermark", action=argparse.BooleanOptionalAction)
    p.add_argument("--seed", type=int)
    p.add_argument("--wait", action="store_true", help="wait for the task to end")
    p.add_argument(
        "--out",
        metavar="DIR_OR_FILE",
        help="wait, then save the video here (a folder, or a file name ending in .mp4)",
    )
    p.set_defaults(handler=cmd_submit)

    p = add(
        "status",
        "query tasks once",
        epilog="examples:\n  wanr2v status TASK_ID [TASK_ID ...] --json\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    p.set_defaults(handler=cmd_status)

    p = add(
        "wait",
        "wait for tasks to end, optionally saving the videos",
        epilog="examples:\n  wanr2v wait TASK_ID --out videos/\n  wanr2v wait A B C --timeout 900"
        "\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    p.add_argument("--out", metavar="DIR", help="save each succeeded video here")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    p.set_defaults(handler=cmd_wait)

    p = add(
        "cancel",
        "cancel tasks (only while PENDING)",
        epilog="examples:\n  wanr2v cancel TASK_ID\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    p.set_defaults(handler=cmd_cancel)

    p = add(
        "list",
        "list the account's tasks (default: the last 24 h)",
        epilog="examples:\n  wanr2v list --status RUNNING\n"
        "  wanr2v list --model wan2.6-r2v --start 2025-12-16T00:00 --end 2025-12-16T12:00 --json"
        "\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("--model", choices=_config.MODELS)
    p.add_argument(
        "--status", choices=[s.value for s in TaskStatus if s is not TaskStatus.UNRECOGNIZED]
    )
    p.add_argument("--start", metavar="ISO_TIME", help="window start (naive times are UTC)")
    p.add_argument("--end", metavar="ISO_TIME", help="window end (at most 24 h after --start)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default %(default)s)")
    p.set_defaults(handler=cmd_list)

    p = add(
        "download",
        "save succeeded tasks' videos ({task_id}.mp4, or a file name)",
        epilog="examples:\n  wanr2v download TASK_ID --out videos/\n"
        "  wanr2v download TASK_ID --out my-video.mp4\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    p.add_argument(
        "--out",
        metavar="DIR_OR_FILE",
        default=".",
        help="a folder (default: .), or a file name ending in .mp4 for one task",
    )
    p.set_defaults(handler=cmd_download)

    p = add("run", "run a batch file (JSONL or TOML) through a journal", epilog=RUN_EPILOG)
    p.add_argument(
        "file", metavar="FILE", help="requests: .jsonl (one JSON object a line) or .toml"
    )
    p.add_argument(
        "--journal", metavar="DB", help="the journal (SQLite) file (default: FILE.journal.db)"
    )
    p.add_argument(
        "--out", metavar="DIR", default=DEFAULT_RUN_OUT, help="video folder (default: %(default)s)"
    )
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed item")
    p.add_argument(
        "--cancel-pending",
        action="store_true",
        help="on Ctrl-C, cancel tasks still PENDING (not billed) instead of leaving them",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the file, its local files and every local rule, and show the cost "
        "(against --budget); send nothing",
    )
    _add_reach_run_options(p)
    p.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="let one request run (and be paid) under several keys (refused by default)",
    )
    p.set_defaults(handler=cmd_run)

    p = add(
        "resume",
        "finish a journaled batch after a crash, Ctrl-C or kill -9",
        epilog="The journal remembers the output folder, base URL, region and time scale.\n"
        "Known tasks are polled, creates whose answer was lost are reconciled (never sent\n"
        "twice), results are downloaded.\n\nexamples:\n  wanr2v resume --journal batch.db\n\n"
        + EXIT_CODES_HELP,
    )
    p.add_argument("--journal", metavar="DB", required=True, help="the journal of `wanr2v run`")
    p.add_argument("--out", metavar="DIR", help="video folder (default: the one remembered)")
    p.add_argument("--cancel-pending", action="store_true", help=argparse.SUPPRESS)
    _add_reach_resume_options(p)
    p.set_defaults(handler=cmd_resume)
    _add_journal_parser(sub, _Formatter)

    from .testing._cli import build_parser as emulator_parser

    p = add(
        "emulator",
        "serve the DashScope task API emulator until Ctrl-C",
        epilog="Here --region NAME=KEY serves an extra region at /NAME/api/v1 (repeatable).\n"
        "Point the other commands at it with --base-url and the same --time-scale;\n"
        "any sk-... key works unless --api-key is given.\n\nexamples:\n"
        "  wanr2v emulator --time-scale 60 --port 8000\n"
        '  wanr2v emulator --json               # line 1: {"base_url": ...} for scripts\n',
        parents=[_common(service=False)],
    )
    emulator_parser(p)
    p.set_defaults(handler=cmd_emulator)

    p = add("demo", "a multi-character batch on the built-in emulator (no key)", DEMO_EPILOG)
    p.add_argument(
        "--out",
        metavar="DIR",
        default=DEFAULT_DEMO_OUT,
        help="video folder (default: ./%(default)s)",
    )
    p.set_defaults(handler=cmd_demo)
    return parser


class _Terminated(BaseException):
    """SIGTERM arrived: the command was cancelled (like Ctrl-C)."""


async def _until_sigterm(handler: Callable[[Context], Awaitable[int]], ctx: Context) -> int:
    """Run ``handler``; SIGTERM cancels it as Ctrl-C would (cleanup and cancel policy
    run, shielded), then raises `_Terminated`."""
    terminated = False
    code = EXIT_OK
    with collapsing_groups():
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal terminated
                with anyio.open_signal_receiver(signal.SIGTERM) as signals:
                    async for _ in signals:
                        terminated = True
                        tg.cancel_scope.cancel()
                        return

            if threading.current_thread() is threading.main_thread():
                tg.start_soon(watch)
            code = await handler(ctx)
            tg.cancel_scope.cancel()
    if terminated:
        raise _Terminated
    return code


def _stopped(out: Output, ctx: Context, what: str, code: int) -> int:
    out.error(what)
    if ctx.resume_hint:
        out.error(f"the journal knows every task; finish with: {ctx.resume_hint}")
    return code


def _failed(out: Output, exc: BaseException) -> int:
    code = exit_code_for(exc)
    out.error(_message(exc))
    for note in getattr(exc, "__notes__", ()):
        out.error(str(note))
    if code == EXIT_UNKNOWN and isinstance(exc, SubmitOutcomeUnknownError):
        out.error(
            "a task may have been created (and billed); it was not sent again. "
            "Check with `wanr2v list` before submitting again."
        )
    out.emit({"ok": False, "exit_code": code, "error": _error_json(exc)})
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``wanr2v`` command; return its exit status (see ``wanr2v --help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(json_mode=bool(getattr(args, "json", False)))
    ctx = Context(args=args, out=out)
    handler = args.handler
    try:
        try:
            if handler is cmd_emulator:
                return int(handler(ctx))
            return int(anyio.run(_until_sigterm, handler, ctx))
        except BaseExceptionGroup as group:
            chosen = collapse_group(group)
            if chosen is group:
                raise
            raise chosen from chosen.__cause__
    except KeyboardInterrupt:
        return _stopped(out, ctx, "interrupted", EXIT_INTERRUPTED)
    except _Terminated:
        return _stopped(out, ctx, "terminated (SIGTERM)", EXIT_TERMINATED)
    except BrokenPipeError:
        return EXIT_OK
    except (CliError, WanError) as exc:
        return _failed(out, exc)
    except OSError as exc:  # e.g. the output folder cannot be written: no traceback
        return _failed(out, WanError(f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
