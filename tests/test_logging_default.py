"""The library is silent by default: its logger has a NullHandler, so nothing reaches
Python's last-resort handler (stderr) until the user configures logging, or sets
``WANR2V_LOG``."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest


def test_wanr2v_logger_has_a_null_handler() -> None:
    """``logging.getLogger("wanr2v")`` carries a NullHandler once wanr2v is imported."""
    import wanr2v  # noqa: F401

    handlers = logging.getLogger("wanr2v").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


def test_a_warning_prints_nothing_without_logging_configured() -> None:
    """A warning logged by wanr2v in a program that never configured logging prints
    nothing on stderr (no last-resort handler output)."""
    code = (
        "import logging, wanr2v\n"
        "logging.getLogger('wanr2v.x').warning('should not be printed')\n"
        "print('done')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done"
    assert "should not be printed" not in proc.stderr


_CREATE_ONE = (
    "import anyio, wanr2v\n"
    "from wanr2v.testing import EmulatorConfig, serve\n"
    "async def main(url):\n"
    "    async with wanr2v.AsyncWanClient(api_key='sk-log-secret-9876', base_url=url) as c:\n"
    "        await c.async_call(model='wan2.6-r2v-flash', prompt='character1 waves',\n"
    "                           reference_urls=['https://cdn.example.com/a.mp4'])\n"
    "with serve(EmulatorConfig()) as emu:\n"
    "    anyio.run(main, emu.base_url)\n"
    "print('done')\n"
)


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    environ = {k: v for k, v in os.environ.items() if k != "WANR2V_LOG"} | env
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environ,
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_wanr2v_log_debug_logs_each_request_on_stderr() -> None:
    """``WANR2V_LOG=debug`` (any case) makes a program that configured no logging
    print wanr2v's request lines on stderr, without the key; unset, nothing."""
    quiet = _run(_CREATE_ONE)
    assert "POST services/aigc" not in quiet.stderr
    loud = _run(_CREATE_ONE, WANR2V_LOG="Debug")
    assert "DEBUG wanr2v: POST services/aigc/video-generation/video-synthesis -> 200" in (
        loud.stderr
    )
    assert "sk-log-secret-9876" not in loud.stderr + loud.stdout
    info = _run(_CREATE_ONE, WANR2V_LOG="info")
    assert "POST services/aigc" not in info.stderr  # a DEBUG line


def test_wanr2v_log_uses_the_programs_own_handlers() -> None:
    """Where the program configured logging before importing wanr2v, ``WANR2V_LOG``
    only sets the level: the lines reach the program's handler, once, and no second
    handler writes them to stderr."""
    code = (
        "import logging, sys\n"
        "logging.basicConfig(stream=sys.stdout, format='MINE %(name)s %(message)s')\n" + _CREATE_ONE
    )
    proc = _run(code, WANR2V_LOG="debug")
    lines = [line for line in proc.stdout.splitlines() if "video-synthesis -> 200" in line]
    assert len(lines) == 1 and lines[0].startswith("MINE wanr2v ")
    assert "video-synthesis" not in proc.stderr


def test_wanr2v_log_not_a_level_warns_and_changes_nothing() -> None:
    """A value that is not a level draws a RuntimeWarning naming the levels; the
    logger's level and the root logger's handlers stay as they were."""
    from wanr2v._logs import setup_logging

    logger = logging.getLogger("wanr2v")
    level, handlers = logger.level, list(logging.getLogger().handlers)
    with pytest.warns(RuntimeWarning, match=r"WANR2V_LOG='loud' is not a level: .*debug, info"):
        assert setup_logging({"WANR2V_LOG": "loud"}) is None
    assert setup_logging({}) is None and setup_logging({"WANR2V_LOG": " "}) is None
    assert logger.level == level and logging.getLogger().handlers == handlers
