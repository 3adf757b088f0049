"""Regions, base URLs, defaults and environment variables, read in one place.

Every environment variable wanr2v reads is named here (see docs/configuration.md):

- ``DASHSCOPE_API_KEY``: the API key when none is passed.
- ``DASHSCOPE_HTTP_BASE_URL``: a base URL override (wins over ``region``).
- ``DASHSCOPE_REGION``: the default region when none is passed.
"""

from __future__ import annotations

import os
from typing import Final, Literal

import attrs

from ._exceptions import ConfigurationError

Region = Literal["beijing", "singapore", "virginia"]

REGION_BASE_URLS: Final[dict[str, str]] = {
    "beijing": "https://dashscope.aliyuncs.com/api/v1",
    "singapore": "https://dashscope-intl.aliyuncs.com/api/v1",
    "virginia": "https://dashscope-us.aliyuncs.com/api/v1",
}


@attrs.frozen(kw_only=True)
class RegionCapabilities:
    """What a region offers (protocol.md): ``None`` means no restriction."""

    models: frozenset[str] | None = None
    durations: frozenset[int] | None = None
    image_references: bool = True

    def refusal(self, model: str, duration: int | None, has_images: bool) -> str | None:
        """Why a request cannot run here, or ``None`` when it can."""
        if self.models is not None and model not in self.models:
            return f"model {model} is not offered (only {', '.join(sorted(self.models))})"
        d = duration if duration is not None else 5
        if self.durations is not None and d not in self.durations:
            allowed = ", ".join(str(x) for x in sorted(self.durations))
            return f"duration {d}s is not offered (only {allowed} s)"
        if has_images and not self.image_references:
            return "picture references are not accepted (video references only)"
        return None


REGION_CAPABILITIES: Final[dict[str, RegionCapabilities]] = {
    "virginia": RegionCapabilities(
        models=frozenset({"wan2.6-r2v"}), durations=frozenset({5, 10}), image_references=False
    ),
}
ANY_REGION: Final = RegionCapabilities()


def capabilities_for(region: str) -> RegionCapabilities:
    """The documented capabilities of a region (unrestricted for unknown/custom ones)."""
    return REGION_CAPABILITIES.get(region, ANY_REGION)


ENV_API_KEY: Final = "DASHSCOPE_API_KEY"
ENV_BASE_URL: Final = "DASHSCOPE_HTTP_BASE_URL"
ENV_REGION: Final = "DASHSCOPE_REGION"

DEFAULT_REGION: Final = "beijing"
DEFAULT_TIMEOUT: Final = 30.0
"""Seconds for one HTTP request (connect, read, write, pool)."""
DEFAULT_MAX_RETRIES: Final = 4
"""Retries of one *safe* request (queries, list, cancel; creates only when provably unsent)."""

MODELS: Final = ("wan2.6-r2v", "wan2.6-r2v-flash")

# Service paths, relative to the base URL.
PATH_CREATE: Final = "services/aigc/video-generation/video-synthesis"
PATH_TASKS: Final = "tasks"
PATH_UPLOADS: Final = "uploads"


def resolve_api_key(api_key: str | None) -> str:
    """The explicit key, else ``DASHSCOPE_API_KEY``; a clear error when neither is set."""
    key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
    if key is None or not key.strip():
        raise ConfigurationError(
            f"No API key: pass api_key=... or set the {ENV_API_KEY} environment variable."
        )
    return key.strip()


def resolve_base_url(region: str | None, base_url: str | None) -> tuple[str, str]:
    """Return ``(region_name, base_url)``; ``base_url`` (or its env var) wins over region.

    The region name is kept even with a custom base URL, since a task id lives only in
    the region that created it; a custom URL with no region is called ``"custom"``.
    """
    url = base_url if base_url is not None else os.environ.get(ENV_BASE_URL)
    name = region if region is not None else os.environ.get(ENV_REGION)
    if name is not None and name not in REGION_BASE_URLS and url is None:
        known = ", ".join(sorted(REGION_BASE_URLS))
        raise ConfigurationError(
            f"Unknown region {name!r}: use one of {known}, or pass base_url=... for any other host."
        )
    if url is None:
        name = name or DEFAULT_REGION
        url = REGION_BASE_URLS[name]
    else:
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}.")
        if name is None:
            name = next((r for r, u in REGION_BASE_URLS.items() if u == url.rstrip("/")), "custom")
    return name, url.rstrip("/")


def mask_key(key: str) -> str:
    """A key as it may appear in reprs and logs: ``sk-…abcd`` (never the whole key)."""
    if len(key) <= 8:
        return "***"
    return f"{key[:3]}…{key[-4:]}"
