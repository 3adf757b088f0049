"""Tools for tests: a faithful emulator of the DashScope task API, and its fixtures.

Layering, bottom up:

- ``_rules``: every vendor rule and every assumption, in one module.
- ``_clock``, ``_config``, ``_faults``, ``_records``: plain values and small helpers.
- ``_validation``: the checks of a create body (pure functions).
- ``_emulator``: `Emulator`, all state (regions, tasks, schedule, uploads).
- ``_app`` / ``_transport``: the ASGI app (Starlette) and an in-process httpx transport.
- ``_server`` / ``_cli``: uvicorn in a background thread; ``python -m wanr2v.testing``.
- ``pytest_plugin``: the ``wan_emulator`` fixture.

Starlette and uvicorn (the ``emulator`` extra) are imported only when an app is built
or served, so importing this package costs neither.
"""

import contextlib as _contextlib

from wanr2v.testing._client import client_for
from wanr2v.testing._clock import Clock, ManualClock, ScaledClock
from wanr2v.testing._config import EmulatorConfig, GenerationTime, Quotas, RegionConfig
from wanr2v.testing._emulator import Emulator
from wanr2v.testing._faults import Endpoint, FaultKind, FaultRule, Faults
from wanr2v.testing._mp4 import make_mp4
from wanr2v.testing._records import EmulatorStats, HostRequest, TaskRecord
from wanr2v.testing._rules import RegionCapabilities
from wanr2v.testing._server import EmulatorServer, serve

__all__ = [
    "Clock",
    "Emulator",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorStats",
    "Endpoint",
    "FaultKind",
    "FaultRule",
    "Faults",
    "GenerationTime",
    "HostRequest",
    "ManualClock",
    "Quotas",
    "RegionCapabilities",
    "RegionConfig",
    "ScaledClock",
    "TaskRecord",
    "client_for",
    "make_mp4",
    "serve",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("wanr2v.testing._"):
        with _contextlib.suppress(AttributeError, TypeError):  # type aliases refuse
            _obj.__module__ = "wanr2v.testing"
del _name, _obj
