"""Shared fixtures. Async tests use anyio's pytest plugin (``@pytest.mark.anyio``),
parametrised over asyncio and trio; pytest-asyncio stays in strict mode."""

from __future__ import annotations

import pytest

API_KEY = "sk-test-0123456789abcdef"
BASE = "https://dashscope.aliyuncs.com/api/v1"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run each anyio test under asyncio and under trio."""
    return str(request.param)


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A planted key in the environment (and no base URL override)."""
    monkeypatch.setenv("DASHSCOPE_API_KEY", API_KEY)
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL", raising=False)
    monkeypatch.delenv("DASHSCOPE_REGION", raising=False)
    return API_KEY


from ._redis_server import redis_server  # noqa: E402, F401  (a real redis-server fixture)
