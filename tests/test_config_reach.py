"""Settings do what they say: what is passed wins over the environment or a
contradiction is refused naming both; a refused key and a wrong base URL are explained."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from wanr2v import (
    REGION_BASE_URLS,
    AsyncWanClient,
    AuthenticationError,
    ConfigurationError,
    NotFoundError,
    WanClient,
)
from wanr2v.testing import Emulator, EmulatorConfig, serve

SINGAPORE = REGION_BASE_URLS["singapore"]
VIRGINIA = REGION_BASE_URLS["virginia"]

FIELDS = {
    "model": "wan2.6-r2v-flash",
    "prompt": "character1 waves",
    "reference_urls": ["https://cdn.example.com/dog.png"],
    "duration": 2,
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-test-0123456789")
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL", raising=False)
    monkeypatch.delenv("DASHSCOPE_REGION", raising=False)
    return monkeypatch


def test_explicit_region_wins_over_env_vendor_url(env: pytest.MonkeyPatch) -> None:
    """region="virginia" with DASHSCOPE_HTTP_BASE_URL at Singapore sends to Virginia,
    labelled and ruled as Virginia (it used to send to Singapore labelled virginia)."""
    env.setenv("DASHSCOPE_HTTP_BASE_URL", SINGAPORE)
    c = AsyncWanClient(region="virginia")
    assert (c.region, c.base_url) == ("virginia", VIRGINIA)
    env.setenv("DASHSCOPE_REGION", "beijing")
    c = AsyncWanClient(base_url=VIRGINIA)
    assert (c.region, c.base_url) == ("virginia", VIRGINIA)


def test_disagreements_name_both(env: pytest.MonkeyPatch) -> None:
    """A contradiction that cannot be settled raises ConfigurationError naming both sides."""
    with pytest.raises(ConfigurationError, match=r"region='virginia'.*dashscope-intl"):
        AsyncWanClient(region="virginia", base_url=SINGAPORE)
    env.setenv("DASHSCOPE_HTTP_BASE_URL", "https://proxy.example.com/api/v1")
    with pytest.raises(ConfigurationError, match=r"region='virginia'.*DASHSCOPE_HTTP_BASE_URL"):
        AsyncWanClient(region="virginia")
    env.setenv("DASHSCOPE_HTTP_BASE_URL", SINGAPORE)
    env.setenv("DASHSCOPE_REGION", "virginia")
    with pytest.raises(ConfigurationError, match=r"DASHSCOPE_REGION='virginia'.*DASHSCOPE_HTTP"):
        AsyncWanClient()


def test_custom_host_keeps_the_region_it_is_said_to_serve(env: pytest.MonkeyPatch) -> None:
    """A custom base URL with region= is that region (its rules apply); extra regions never
    take DASHSCOPE_HTTP_BASE_URL."""
    c = AsyncWanClient(region="virginia", base_url="http://127.0.0.1:9/api/v1")
    assert c.region == "virginia"
    env.setenv("DASHSCOPE_HTTP_BASE_URL", "http://127.0.0.1:9/api/v1")
    c = AsyncWanClient(regions={"singapore": "sk-other-0123456789"})
    assert c.base_url == "http://127.0.0.1:9/api/v1"
    assert c._routing.for_region("singapore").base_url == SINGAPORE


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "https://dashscope-intl.aliyuncs.com/", SINGAPORE + "/tasks"]
)
def test_base_url_without_api_path_is_diagnosed(env: pytest.MonkeyPatch, url: str) -> None:
    """A base URL lacking /api/v1 is refused with the URL it should be."""
    with pytest.raises(ConfigurationError, match="/api/v1"):
        AsyncWanClient(base_url=url)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with serve(EmulatorConfig(time_scale=60, api_keys=["sk-right-key-0001"], seed=0)) as e:
        yield e


def test_refused_key_says_keys_belong_to_one_region(emu: Emulator) -> None:
    """A key the host refuses: the error says keys belong to one region and names the host;
    the key itself is not in the message."""
    with (
        WanClient(base_url=emu.base_url, api_key="sk-wrong-key-0002") as c,
        pytest.raises(AuthenticationError) as info,
    ):
        c.fetch("some-task")
    text = str(info.value)
    assert "one region" in text and "127.0.0.1" in text and "sk-wrong-key-0002" not in text


def test_wrong_api_path_on_a_custom_host_is_explained(emu: Emulator) -> None:
    """A custom path without /api/v1 answering 404 says where the API lives."""
    with (
        WanClient(base_url=emu.origin + "/v1", api_key="sk-right-key-0001") as c,
        pytest.raises(NotFoundError, match="/api/v1"),
    ):
        c.async_call(**FIELDS)  # type: ignore[arg-type]
