"""Regions, base URLs, defaults and environment variables, read in one place.

Every environment variable wanr2v reads is named here (see docs/configuration.md):

- ``DASHSCOPE_API_KEY``: the API key when none is passed.
- ``DASHSCOPE_HTTP_BASE_URL``: the base URL when neither ``base_url=`` nor ``region=``
  is passed.
- ``DASHSCOPE_REGION``: the default region when none is passed.
- ``WANR2V_STORAGE_URI``: a Redis URL shared with other processes when no
  ``storage_uri=`` is passed (read in ``_storage``).
- ``WANR2V_LOG``: ``debug``, ``info``, ``warning`` or ``error``: switch logging on
  without code (read once at import, in ``_logs``).

What is passed explicitly wins over the environment; a contradiction that cannot be
settled (a region and a URL of another region) raises `ConfigurationError`
naming both (see `resolve_base_url`).
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
"""The vendor's base URL of each region (``region=`` picks one). A key belongs to one
region: another region's URL answers it 401."""


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
ENV_LOG: Final = "WANR2V_LOG"

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


def region_of_url(url: str) -> str | None:
    """The vendor region whose base URL ``url`` is, or ``None`` for any other host."""
    url = url.rstrip("/")
    return next((r for r, u in REGION_BASE_URLS.items() if u == url), None)


def _check_api_path(url: str, where: str) -> None:
    """Refuse a base URL that cannot be DashScope's API root (its ``/api/v1`` missing)."""
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    path = parts.path.rstrip("/")
    vendor_hosts = {urllib.parse.urlsplit(u).netloc for u in REGION_BASE_URLS.values()}
    if not path or (parts.netloc in vendor_hosts and path != "/api/v1"):
        fixed = f"{parts.scheme}://{parts.netloc}/api/v1"
        raise ConfigurationError(
            f"{where} {url!r} lacks the API path: DashScope's API lives under /api/v1 "
            f"(e.g. {fixed!r})."
        )


def resolve_base_url(
    region: str | None, base_url: str | None, *, env: bool = True
) -> tuple[str, str]:
    """Return ``(region_name, base_url)``: what is passed wins over the environment.

    - ``base_url=`` wins over everything; with ``region=`` too, it names the region a
      custom host serves (a task id lives only in the region that created it). A
      vendor URL of another region than ``region=`` is a contradiction: refused.
    - ``region=`` alone wins over ``DASHSCOPE_HTTP_BASE_URL`` when that is a vendor URL
      (of any region); a custom URL there cannot be judged, so the disagreement is
      refused, naming both.
    - Without either: ``DASHSCOPE_HTTP_BASE_URL``, labelled by ``DASHSCOPE_REGION``
      (refused if they name different vendor regions), else ``DASHSCOPE_REGION``'s URL,
      else beijing.

    ``env=False`` reads no environment variable (the extra regions of a client).

    Raises:
        ConfigurationError: an unknown region, a URL without ``http(s)://`` or without
            the ``/api/v1`` path, or a region and a base URL that disagree.
    """
    env_url = os.environ.get(ENV_BASE_URL) if env else None
    env_region = os.environ.get(ENV_REGION) if env else None
    env_url = env_url.strip() or None if env_url is not None else None
    env_region = env_region.strip() or None if env_region is not None else None
    known = ", ".join(sorted(REGION_BASE_URLS))
    for name, where in ((region, "region"), (env_region, ENV_REGION)):
        if name is not None and name not in REGION_BASE_URLS and base_url is None:
            if where == ENV_REGION and region is not None:
                continue  # the explicit region wins
            if where == ENV_REGION and env_url is not None:
                continue  # a label for a custom host
            raise ConfigurationError(
                f"Unknown {where} {name!r}: use one of {known}, or pass base_url=... "
                "for any other host."
            )
    for url, where in ((base_url, "base_url"), (env_url, ENV_BASE_URL)):
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigurationError(f"{where} must start with http:// or https://, got {url!r}.")

    if base_url is not None:
        url = base_url.rstrip("/")
        _check_api_path(url, "base_url")
        vendor = region_of_url(url)
        if region is not None and vendor is not None and vendor != region:
            raise ConfigurationError(
                f"region={region!r} and base_url={url!r} disagree: that URL is {vendor}'s. "
                "Pass one of them."
            )
        name = region or vendor or env_region
        return name or "custom", url

    if region is not None:
        if env_url is not None:
            url = env_url.rstrip("/")
            vendor = region_of_url(url)
            if vendor is None and url != REGION_BASE_URLS.get(region):
                raise ConfigurationError(
                    f"region={region!r} disagrees with {ENV_BASE_URL}={url!r}: which one "
                    f"should be used? Pass base_url=... (with region=... to name the region "
                    f"that host serves), or unset {ENV_BASE_URL}."
                )
        if region not in REGION_BASE_URLS:  # unreachable: checked above
            raise ConfigurationError(f"Unknown region {region!r}: use one of {known}.")
        return region, REGION_BASE_URLS[region]

    if env_url is not None:
        url = env_url.rstrip("/")
        _check_api_path(url, ENV_BASE_URL)
        vendor = region_of_url(url)
        if env_region is not None and vendor is not None and vendor != env_region:
            raise ConfigurationError(
                f"{ENV_REGION}={env_region!r} and {ENV_BASE_URL}={url!r} disagree: that URL "
                f"is {vendor}'s. Unset one of them."
            )
        return env_region or vendor or "custom", url

    name = env_region or DEFAULT_REGION
    return name, REGION_BASE_URLS[name]


def mask_key(key: str) -> str:
    """A key as it may appear in reprs and logs: ``sk-…abcd`` (never the whole key)."""
    if len(key) <= 8:
        return "***"
    return f"{key[:3]}…{key[-4:]}"
