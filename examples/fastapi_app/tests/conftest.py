"""Fixtures of the app's test suite: the app, wired to the wanr2v emulator.

``wan_emulator`` comes from wanr2v's pytest plugin (installed with wanr2v): a running
emulator of the DashScope API on a loopback port, 60 times faster than real time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from wanr2v import AsyncWanClient, Limits, PollPolicy
from wanr2v.testing import Emulator, EmulatorConfig

from ..app import create_app

TIME_SCALE = 60.0  # emulator seconds per real second


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every test under asyncio and under trio: the app and wanr2v run on both."""
    return str(request.param)


@pytest.fixture
def wan_emulator_config() -> EmulatorConfig:
    """Overrides the plugin's: 60x faster, a video in 20-40 emulator seconds (under 1 s)."""
    return EmulatorConfig(time_scale=TIME_SCALE, generation_time=(20.0, 40.0), seed=0)


@pytest.fixture
def app(wan_emulator: Emulator) -> FastAPI:
    """The app, its client pointed at the emulator and paced for its speed."""

    def client_factory() -> AsyncWanClient:
        return AsyncWanClient(
            api_key="sk-test-key",
            base_url=wan_emulator.base_url,
            limits=Limits().scaled(TIME_SCALE),
            poll_policy=PollPolicy().scaled(TIME_SCALE),
        )

    return create_app(client_factory)


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in process, its lifespan running."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client
