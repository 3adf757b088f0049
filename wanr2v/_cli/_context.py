"""What every command runs with: the parsed options, the output, the key, a client.

Also the helpers several commands share: the logging setup (``-v`` / ``WANR2V_LOG``),
running one coroutine per task id at once, and the check that the place videos go can
be written (made before anything is paid for).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final, TypeVar

import anyio
import attrs

from .. import _config
from .._exceptions import collapsing_groups
from ._output import CliError, Output, absolute, show_path

if TYPE_CHECKING:
    from .._client import AsyncWanClient

__all__ = [
    "DEFAULT_DEMO_OUT",
    "DEFAULT_RUN_OUT",
    "ENV_LOG",
    "Context",
    "check_out",
    "gather",
    "setup_logging",
]

T = TypeVar("T")

ENV_LOG: Final = "WANR2V_LOG"
DEFAULT_DEMO_OUT: Final = "wanr2v-demo-videos"
DEFAULT_RUN_OUT: Final = "videos"


@attrs.define
class Context:
    """What a command runs with.

    Attributes:
        args: the parsed command line.
        out: where the command writes.
        resume_hint: the command that finishes a journaled batch (said when stopped).
        launched: the options are the program's own (``sys.argv``), not a list given to
            ``main`` in-process (the emulator forks a copy of itself only then).
    """

    args: argparse.Namespace
    out: Output
    resume_hint: str | None = None
    launched: bool = False

    def __attrs_post_init__(self) -> None:
        setup_logging(self.out, getattr(self.args, "verbose", 0) or 0)

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
        from .._client import AsyncWanClient
        from .._limits import Limits
        from .._polling import PollPolicy

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


async def gather(fn: Callable[[str], Awaitable[T]], keys: Sequence[str]) -> list[T]:
    """``fn`` over ``keys`` at once; results in order (the first error cancels the rest)."""
    results: dict[int, T] = {}

    async def one(i: int, key: str) -> None:
        results[i] = await fn(key)

    with collapsing_groups():
        async with anyio.create_task_group() as tg:
            for i, key in enumerate(keys):
                tg.start_soon(one, i, key)
    return [results[i] for i in range(len(keys))]


def setup_logging(out: Output, verbose: int) -> None:
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


async def check_out(
    out: str | os.PathLike[str], flag: str, *, several: bool, folder: bool = False
) -> None:
    """The place videos go can be written, checked before anything is paid for.

    A name ending in ``.mp4`` / ``.mov`` is a file (one task only); anything else is a
    folder, created if missing.
    """
    import tempfile

    path = absolute(out)
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
            f"{flag} {out}: cannot write videos in {show_path(target)} "
            f"({exc.strerror or exc}); pick another {flag}."
        ) from None
