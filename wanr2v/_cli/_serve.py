"""The commands that need no key: ``emulator`` (serve the DashScope task API emulator
until Ctrl-C or SIGTERM) and ``demo`` (a multi-character batch on the built-in
emulator, or on one running on loopback).

``emulator --json`` written into a pipe (``URL=$(wanr2v emulator --json | head -1)``)
serves from a child process and leaves it running in the background once the reader
has its line, so that ``$(...)`` does not hang; the JSON line names its pid.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Final

from .. import _config
from ._context import Context
from ._output import EXIT_OK, CliError, ProgressView, absolute, show_path
from ._run import batch_report

if TYPE_CHECKING:
    from .._demo import DemoReport

__all__ = ["cmd_demo", "cmd_emulator"]

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
    # Only when launched as a program: the child is started with the same argv.
    return ctx.launched


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
    from ..testing import serve
    from ..testing._cli import config_from_args

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
    from .._demo import run_demo

    a = ctx.args
    base_url = a.base_url
    key: str | None = None
    if base_url is not None:
        import httpx

        from .._routing import is_loopback as _is_loopback

        if not _is_loopback(httpx.URL(base_url).host):
            raise CliError(
                "the demo runs only against an emulator on loopback (its clips are tiny "
                "synthetic files); use `wanr2v run` for the real service."
            )
        from ..testing._client import EMULATOR_KEY

        key = os.environ.get(_config.ENV_API_KEY, "").strip() or EMULATOR_KEY
        ctx.out.secrets.append(key)
    out_dir = absolute(a.out)
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
    code = batch_report(
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
        f"videos in {show_path(report.out)}/ · the emulator ran {report.time_scale:g}× faster "
        "than the service"
    )
    return code
