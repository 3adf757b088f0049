"""``main``: parse, run the command in one ``anyio.run``, turn what stops it into an
exit code and one line on stderr.

Stopping: Ctrl-C and SIGTERM (what docker, systemd and Kubernetes send) stop a command
the same way: the command is cancelled, ``--cancel-pending`` cancels the tasks still
PENDING, the journal is left resumable and the resume hint is printed (exit 130 for
Ctrl-C, 143 for SIGTERM). No traceback and no ``ExceptionGroup`` is printed for an
error wanr2v raises on purpose: one line on stderr (several errors at once: the first
meaningful one, the others as ``also:`` lines).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence

import anyio

from .._exceptions import SubmitOutcomeUnknownError, WanError, collapse_group, collapsing_groups
from ._context import Context
from ._output import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_UNKNOWN,
    CliError,
    Output,
    exit_code_for,
    failure_json,
    message,
)
from ._parser import build_parser
from ._serve import cmd_emulator

__all__ = ["main"]


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
    out.error(message(exc))
    for note in getattr(exc, "__notes__", ()):
        out.error(str(note))
    if code == EXIT_UNKNOWN and isinstance(exc, SubmitOutcomeUnknownError):
        out.error(
            "a task may have been created (and billed); it was not sent again. "
            "Check with `wanr2v list` before submitting again."
        )
    out.emit(failure_json(exc, code))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``wanr2v`` command; return its exit status (see ``wanr2v --help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(json_mode=bool(getattr(args, "json", False)))
    launched = argv is None or list(argv) == sys.argv[1:]
    ctx = Context(args=args, out=out, launched=launched)
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
