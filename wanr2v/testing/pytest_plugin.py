"""pytest fixtures for tests that run against the emulator (registered as plugin ``wanr2v``).

- ``wan_emulator_config``: the `EmulatorConfig` used; override
  it in your own ``conftest.py`` to change keys, quotas, regions or timing.
- ``wan_emulator``: a running loopback emulator (`Emulator`),
  one per test; ``wan_emulator.base_url`` is its ``/api/v1``.

Starlette and uvicorn are imported only when ``wan_emulator`` is used, so projects
without the ``emulator`` extra can still run pytest with this plugin installed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from wanr2v import AsyncWanClient
    from wanr2v.testing import Emulator, EmulatorConfig

#: Default speed: one real second is 60 emulator seconds, so a task takes 1-3 s.
DEFAULT_TIME_SCALE = 60.0
DEFAULT_GENERATION_TIME = (60.0, 180.0)


@pytest.fixture
def wan_emulator_config() -> EmulatorConfig:
    """The emulator's configuration: time 60x faster, generation 1-3 real seconds."""
    from wanr2v.testing._config import EmulatorConfig

    return EmulatorConfig(
        time_scale=DEFAULT_TIME_SCALE,
        generation_time=DEFAULT_GENERATION_TIME,
        seed=0,
    )


@pytest.fixture
def wan_emulator(wan_emulator_config: EmulatorConfig) -> Iterator[Emulator]:
    """A running emulator on 127.0.0.1 (a free port), stopped after the test."""
    pytest.importorskip("starlette", reason="wanr2v.testing needs the 'emulator' extra")
    pytest.importorskip("uvicorn", reason="wanr2v.testing needs the 'emulator' extra")
    from wanr2v.testing._server import serve

    with serve(wan_emulator_config) as emu:
        yield emu


# --- wan_client -------------------------------------------------------------
# RESERVED: the ``wan_client`` fixture (an AsyncWanClient wired to ``wan_emulator``)
# is added here by the client's author.


@pytest.fixture
async def wan_client(wan_emulator: Emulator) -> AsyncIterator[AsyncWanClient]:
    """An `AsyncWanClient` wired to ``wan_emulator`` (limits and polling
    scaled to its clock); use it in ``@pytest.mark.anyio`` tests."""
    from wanr2v.testing._client import client_for

    async with client_for(wan_emulator) as client:
        yield client
