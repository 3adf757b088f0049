"""Raw SQLite access for the tests that read or tamper with a journal file directly.

``with sqlite3.connect(path) as conn:`` commits or rolls back but never closes the
connection: Python 3.13 reports each one left to the garbage collector as a
``ResourceWarning`` (an error under pytest), in whatever test the collection happens.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def raw_db(path: str | Path, **kwargs: Any) -> Iterator[sqlite3.Connection]:
    """``sqlite3.connect(path, **kwargs)``, committed (or rolled back) and closed."""
    conn = sqlite3.connect(path, **kwargs)
    try:
        with conn:
            yield conn
    finally:
        conn.close()
