"""Routing between regions: one API session per base URL, and where each request or
task goes.

A client has a default region and any number of extra ones (``regions=``), each with
its own key, governor (the service counts quotas per region) and, with a
``storage_uri``, its own shared budget. A task id lives only in the region that made
it: a task's ``base_url`` picks its session, and a base URL with no configured key is
refused (`ConfigurationError`) rather than sent the wrong key. A new request goes to
the region asked for, else the default one, else the first that can serve it
(``_config.capabilities_for``: virginia serves ``wan2.6-r2v`` only, 5 or 10 s, no
pictures); one that no configured region can serve is refused before anything is
sent (`InvalidRequestError`).

Keys are never in a repr or a message here; plain ``http://`` to a host that is not
loopback is refused unless allowed (the key would cross the network in clear).
"""

from __future__ import annotations

import copy
import ipaddress
import os
from collections.abc import Mapping

import attrs
import httpx

from . import _config
from ._exceptions import ConfigurationError, InvalidRequestError
from ._http import ApiSession, lean_cookies
from ._lean import LeanAsyncClient
from ._limits import Governor, GovernorStatistics, Limits, check_pool
from ._models import VideoRequest, reference_kind
from ._retry import RetryPolicy
from ._storage import SharedBudget, open_storage

__all__ = [
    "RegionEndpoint",
    "Router",
    "check_scheme",
    "is_loopback",
    "open_http",
    "region_endpoints",
    "resolve_default",
    "retry_policy_for",
]


@attrs.frozen(kw_only=True)
class RegionEndpoint:
    """One more region a client may send to, with its own key (and limits).

    Args:
        api_key: the key of that region (a key belongs to one region).
        base_url: default: the region's vendor URL (``REGION_BASE_URLS``).
        limits: that region's account limits (default: the client's); each region
            gets its own governor, as the service counts quotas per region.
    """

    api_key: str = attrs.field(repr=lambda k: repr(_config.mask_key(k)))
    base_url: str | None = None
    limits: Limits | None = None


def region_endpoints(
    regions: Mapping[str, str | RegionEndpoint] | None,
) -> dict[str, RegionEndpoint]:
    """``regions=`` as ``{name: RegionEndpoint}`` (a bare string is a key)."""
    return {
        name: spec if isinstance(spec, RegionEndpoint) else RegionEndpoint(api_key=spec)
        for name, spec in (regions or {}).items()
    }


def resolve_default(
    region: str | None,
    base_url: str | None,
    api_key: str | None,
    regions: Mapping[str, str | RegionEndpoint] | None,
    allow_insecure: bool,
) -> tuple[str, str, str, dict[str, RegionEndpoint]]:
    """The default region's name, base URL and key, and the extra regions.

    The key defaults to ``DASHSCOPE_API_KEY``, else the key given for the default
    region in ``regions``.
    """
    extra = region_endpoints(regions)
    name, url = _config.resolve_base_url(region, base_url)
    if api_key is None and name in extra and not os.environ.get(_config.ENV_API_KEY):
        api_key = extra[name].api_key
    key = _config.resolve_api_key(api_key)
    check_scheme(url, allow_insecure)
    return name, url, key, extra


def open_http(
    http_client: httpx.AsyncClient | None, limits: Limits, timeout: float
) -> tuple[httpx.AsyncClient, bool]:
    """The HTTP client to send through, and whether it was made here (then it is the
    client's to close): yours, checked against the governor's slots, or a lean one."""
    if http_client is not None:
        check_pool(http_client, limits)  # the governor's slots must fit its pool
        return http_client, False
    http = LeanAsyncClient(
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_connections,
        ),
    )
    lean_cookies(http)
    return http, True


def retry_policy_for(retry_policy: RetryPolicy | None, max_retries: int) -> RetryPolicy:
    """``retry_policy`` (``max_retries``, when not the default, overrides its count)."""
    if retry_policy is not None and max_retries != _config.DEFAULT_MAX_RETRIES:
        return attrs.evolve(retry_policy, max_retries=max_retries)
    return retry_policy or RetryPolicy(max_retries=max_retries)


def check_scheme(url: str, allow_insecure: bool) -> None:
    """Refuse plain ``http://`` to a host that is not loopback, unless allowed."""
    parsed = httpx.URL(url)
    if parsed.scheme == "http" and not allow_insecure and not is_loopback(parsed.host):
        raise ConfigurationError(
            f"Refusing plain http:// to {parsed.host}: the API key would cross the network "
            "in clear. Use https://, or pass allow_insecure=True if you mean it."
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Router:
    """The sessions of a client's regions (one per base URL), the default first.

    Args:
        http: the HTTP client every session sends through.
        retry: the sessions' retry policy.
        workspace: sent as ``X-DashScope-WorkSpace``.
        max_response_bytes: cap of one API answer.
        storage_uri: a shared store for the governors (``None``: in-process only).
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        retry: RetryPolicy,
        workspace: str | None,
        max_response_bytes: int,
        storage_uri: str | None,
    ) -> None:
        self._http = http
        self._retry = retry
        self._workspace = workspace
        self._max_response_bytes = max_response_bytes
        self._storage_uri = storage_uri
        self._keys: dict[str, str] = {}
        self._sessions: dict[str, ApiSession] = {}
        self._names: dict[str, str] = {}
        self._default: ApiSession | None = None
        self.shared: list[SharedBudget] = []
        """The shared budgets opened for the regions (started and closed by the client)."""
        self.closed = False
        """Set when the client closes: every later session lookup is refused."""

    def add(self, base_url: str, key: str, name: str, governor: Governor) -> ApiSession:
        """Add the region ``name`` at ``base_url`` (the first added is the default)."""
        if base_url in self._sessions:
            raise ConfigurationError(f"regions: {name!r} has the same base URL as another.")
        self._keys[base_url] = key
        if self._storage_uri is not None and governor.shared is None:
            shared = open_storage(self._storage_uri, api_key=key, region=base_url)
            governor.shared = shared
            if shared is not None:
                self.shared.append(shared)
        session = ApiSession(
            http=self._http,
            api_key=key,
            base_url=base_url,
            governor=governor,
            retry=self._retry,
            workspace=self._workspace,
            max_response_bytes=self._max_response_bytes,
        )
        self._sessions[base_url] = session
        self._names[base_url] = name
        if self._default is None:
            self._default = session
        return session

    def add_regions(
        self, regions: Mapping[str, RegionEndpoint], limits: Limits, allow_insecure: bool
    ) -> None:
        """Add the extra regions (not the default one again), each with its own governor."""
        for name, spec in regions.items():
            if name in self.regions:
                continue
            _, url = _config.resolve_base_url(name, spec.base_url, env=False)
            check_scheme(url, allow_insecure)
            self.add(url, spec.api_key, name, Governor(spec.limits or limits))

    def with_options(self, retry: RetryPolicy, timeout: float | None) -> Router:
        """A copy whose sessions use ``retry`` (and ``timeout``); counters and governors
        are shared with this one."""
        other = copy.copy(self)
        other._retry = retry
        other._sessions = {}
        for url, session in self._sessions.items():
            clone = copy.copy(session)  # shares the counters (dicts) and the governor
            clone.retry = retry
            if timeout is not None:
                clone.timeout = timeout
                clone.deadline = float(timeout)
            other._sessions[url] = clone
        if self._default is not None:
            other._default = other._sessions[self._default.base_url]
        return other

    @property
    def default(self) -> ApiSession:
        """The default region's session."""
        assert self._default is not None, "no region was added"
        return self._default

    @property
    def sessions(self) -> Mapping[str, ApiSession]:
        """``{base_url: session}``, the default first."""
        return self._sessions

    @property
    def regions(self) -> tuple[str, ...]:
        """The regions this client can send to, its default first."""
        return tuple(self._names.values())

    def counts(self) -> tuple[dict[str, int], dict[int, int], int]:
        """Requests sent by kind, answers by status and 429s, summed over the regions."""
        requests: dict[str, int] = {}
        statuses: dict[int, int] = {}
        limited = 0
        for s in self._sessions.values():
            for k, v in s.requests_sent.items():
                requests[k] = requests.get(k, 0) + v
            for k2, v2 in s.status_counts.items():
                statuses[k2] = statuses.get(k2, 0) + v2
            limited += s.rate_limited
        return requests, statuses, limited

    def governor_statistics(self) -> dict[str, GovernorStatistics]:
        """Each region's governor statistics, by region name."""
        return {self._names[url]: s.governor.statistics() for url, s in self._sessions.items()}

    def name_of(self, session: ApiSession) -> str:
        """The region name of a configured session."""
        return self._names[session.base_url]

    def key_of(self, base_url: str) -> str:
        """The API key of the region at ``base_url`` (never to be shown unmasked)."""
        return self._keys[base_url]

    def check_open(self) -> None:
        """Raise `ConfigurationError` once the client is closed."""
        if self.closed:
            raise ConfigurationError(
                "This client is closed (its `async with` block ended, or aclose() was "
                "called): make a new one."
            )

    def session_for(self, base_url: str | None) -> ApiSession:
        """The session of the region at ``base_url`` (``None``: the default one)."""
        self.check_open()
        default = self.default
        if not base_url or base_url.rstrip("/") == default.base_url:
            return default
        base_url = base_url.rstrip("/")
        session = self._sessions.get(base_url)
        if session is None:
            raise ConfigurationError(
                f"This task lives at {base_url}, but the client has no key for it; "
                "create a client for that region (a task id lives only where it was made)."
            )
        return session

    def for_region(self, region: str) -> ApiSession:
        """The session of a configured region (by name or base URL)."""
        for url, name in self._names.items():
            if region in (name, url):
                return self._sessions[url]
        raise ConfigurationError(
            f"Region {region!r} is not configured on this client (have "
            f"{', '.join(self.regions)}); pass regions={{...: key}}."
        )

    def region_of(self, base_url: str) -> str:
        """The region name of ``base_url``: configured, a vendor's, else ``"custom"``."""
        if base_url in self._names:
            return self._names[base_url]
        for name, url in _config.REGION_BASE_URLS.items():
            if url == base_url:
                return name
        return "custom"

    def refusal(self, session: ApiSession, request: VideoRequest) -> str | None:
        """Why the region of ``session`` cannot serve ``request`` (``None``: it can)."""
        has_images = any(reference_kind(os.fspath(r)) == "image" for r in request.reference_urls)
        caps = _config.capabilities_for(self._names[session.base_url])
        return caps.refusal(request.model, request.duration, has_images)

    def eligible(self, request: VideoRequest) -> list[ApiSession]:
        """The configured regions that can serve ``request``, the default first."""
        return [s for s in self._sessions.values() if self.refusal(s, request) is None]

    def route(self, request: VideoRequest, region: str | None = None) -> ApiSession:
        """Where ``request`` goes: ``region`` if given, else the default region, else the
        first configured region that can serve it.

        Raises:
            InvalidRequestError: no configured region can serve it (nothing was sent).
        """
        if region is not None:
            session = self.for_region(region)
            why = self.refusal(session, request)
            if why is not None:
                raise InvalidRequestError(
                    f"Region {self._names[session.base_url]}: {why}; pick another region.",
                    field="region",
                )
            return session
        eligible = self.eligible(request)
        if not eligible:
            reasons = "; ".join(
                f"{self._names[s.base_url]}: {self.refusal(s, request)}"
                for s in self._sessions.values()
            )
            raise InvalidRequestError(
                f"No configured region can serve this request ({reasons}).", field="region"
            )
        return eligible[0]
