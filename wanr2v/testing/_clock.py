"""The emulator's clock: "emulator seconds", scaled from real time or moved by hand.

Everything the emulator measures runs on this clock: generation times, the
24 h expiries, and the rate quotas. At ``time_scale=100`` one real second is a
hundred emulator seconds, so the 5 creates/s quota admits 500 creates per real
second.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "ScaledClock"]


@runtime_checkable
class Clock(Protocol):
    """What the emulator needs from a clock. Implementations must be thread-safe."""

    def now(self) -> float:
        """Return the current emulator time, in seconds since the Unix epoch."""
        ...

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` emulator seconds."""
        ...


class ScaledClock:
    """Real time, sped up ``time_scale`` times, plus any manual advances.

    Args:
        time_scale: Emulator seconds per real second (100: a hundred times faster).
        start: Emulator time at creation; defaults to the real wall clock.
    """

    def __init__(self, time_scale: float = 1.0, *, start: float | None = None) -> None:
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale!r}")
        self.time_scale: float = float(time_scale)
        self._start = time.time() if start is None else float(start)
        self._mono0 = time.monotonic()
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the current emulator time."""
        return self._start + self._offset + (time.monotonic() - self._mono0) * self.time_scale

    def advance(self, seconds: float) -> None:
        """Jump forward by ``seconds`` emulator seconds (on top of the flow of time)."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._offset += seconds

    def real_seconds(self, emulator_seconds: float) -> float:
        """Convert a span of emulator seconds to real seconds."""
        return emulator_seconds / self.time_scale

    def __repr__(self) -> str:
        return f"ScaledClock(time_scale={self.time_scale})"


class ManualClock:
    """A clock that stands still until told to move: for tests.

    Args:
        start: Emulator time at creation; defaults to the real wall clock.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else float(start)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Return the current emulator time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move forward by ``seconds`` emulator seconds."""
        if seconds < 0:
            raise ValueError("a clock cannot go back")
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now})"
