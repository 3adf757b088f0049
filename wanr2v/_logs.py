"""Logging switched on from the environment: ``WANR2V_LOG=debug`` (or ``info``...).

A library stays silent until its user configures logging (``wanr2v`` carries a
``NullHandler``). For a script run once, or a deployment whose code you would rather not
touch, ``WANR2V_LOG`` does it without code, as ``OPENAI_LOG`` does for openai-python:
read once, when ``wanr2v`` is imported, it sets the ``wanr2v`` logger's level and, when
the program has configured no logging at all, gives the root logger a handler on
stderr (``logging.basicConfig``: a no-op where a handler is already set, so records
reach the program's own handlers instead, never twice).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from typing import Final

from ._config import ENV_LOG

__all__ = ["LEVELS", "setup_logging"]

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""The values ``WANR2V_LOG`` takes (any case)."""

FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(environ: Mapping[str, str] = os.environ) -> int | None:
    """Apply ``WANR2V_LOG`` if it is set: the level set, or ``None`` (unset or not a
    level, which draws a ``RuntimeWarning`` naming the levels and changes nothing)."""
    value = environ.get(ENV_LOG, "").strip()
    if not value:
        return None
    level = LEVELS.get(value.lower())
    if level is None:
        warnings.warn(
            f"{ENV_LOG}={value!r} is not a level: use one of {', '.join(LEVELS)} "
            "(logging stays as the program configured it).",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    logging.basicConfig(format=FORMAT)
    logging.getLogger("wanr2v").setLevel(level)
    return level
