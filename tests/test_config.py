"""Regions, base URLs, environment variables and construction errors."""

from __future__ import annotations

import pytest

from wanr2v import REGION_BASE_URLS, AsyncWanClient, ConfigurationError

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("region", "url"),
    [
        ("beijing", "https://dashscope.aliyuncs.com/api/v1"),
        ("singapore", "https://dashscope-intl.aliyuncs.com/api/v1"),
        ("virginia", "https://dashscope-us.aliyuncs.com/api/v1"),
    ],
)
async def test_region_urls(api_key: str, region: str, url: str) -> None:
    """Each region maps to the vendor's base URL."""
    async with AsyncWanClient(region=region) as c:
        assert c.base_url == url and c.region == region
    assert REGION_BASE_URLS[region] == url


async def test_default_region_is_beijing(api_key: str) -> None:
    """With nothing set, the client talks to beijing."""
    async with AsyncWanClient() as c:
        assert c.region == "beijing"


async def test_base_url_wins_and_env_override(
    api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """base_url wins over region; DASHSCOPE_HTTP_BASE_URL is read when none is passed."""
    async with AsyncWanClient(
        region="singapore", base_url="https://ws1.ap-southeast-1.maas.aliyuncs.com/api/v1/"
    ) as c:
        assert c.base_url == "https://ws1.ap-southeast-1.maas.aliyuncs.com/api/v1"
        assert c.region == "singapore"
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "https://dashscope-intl.aliyuncs.com/api/v1")
    async with AsyncWanClient() as c:
        assert c.region == "singapore"


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key at all: the error names DASHSCOPE_API_KEY."""
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    with pytest.raises(ConfigurationError, match="DASHSCOPE_API_KEY"):
        AsyncWanClient()


def test_unknown_region_lists_known(api_key: str) -> None:
    """An unknown region is refused with the list of known ones."""
    with pytest.raises(ConfigurationError, match="beijing, singapore, virginia"):
        AsyncWanClient(region="mars")


def test_plain_http_refused_off_loopback(api_key: str) -> None:
    """Plain http to a non-loopback host is refused unless explicitly allowed."""
    with pytest.raises(ConfigurationError, match="allow_insecure"):
        AsyncWanClient(base_url="http://dashscope.example.com/api/v1")
    AsyncWanClient(base_url="http://127.0.0.1:8000/api/v1")
    AsyncWanClient(base_url="http://example.com/api/v1", allow_insecure=True)


@pytest.mark.parametrize(
    ("kw", "match"), [({"timeout": 0}, "timeout"), ({"max_retries": -1}, "max_retries")]
)
def test_bad_numbers_refused(api_key: str, kw: dict[str, float], match: str) -> None:
    """Nonsense numbers are refused with the option's name."""
    with pytest.raises(ConfigurationError, match=match):
        AsyncWanClient(**kw)  # type: ignore[arg-type]
