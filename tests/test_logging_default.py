"""The library is silent by default: its logger has a NullHandler, so nothing reaches
Python's last-resort handler (stderr) until the user configures logging."""

from __future__ import annotations

import logging
import subprocess
import sys


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
