"""Wiring an `AsyncWanClient` to an emulator (time scale included)."""

from __future__ import annotations

from typing import Any

from wanr2v._client import AsyncWanClient
from wanr2v._limits import Limits
from wanr2v._polling import PollPolicy
from wanr2v.testing._emulator import Emulator

EMULATOR_KEY = "sk-wanr2v-emulator"
"""The key `client_for` uses when the emulator accepts any ``sk-…`` key."""


def client_for(
    emulator: Emulator,
    *,
    region: str | None = None,
    api_key: str | None = None,
    limits: Limits | None = None,
    poll_policy: PollPolicy | None = None,
    in_process: bool = False,
    **kwargs: Any,
) -> AsyncWanClient:
    """An `AsyncWanClient` for ``emulator``, its limits and polling scaled to its clock.

    Args:
        emulator: a running emulator (``serve(...)``), or any emulator with
            ``in_process=True`` (then requests go through its ASGI app, no socket).
        region: one of the emulator's regions (default: its default region).
        api_key: default: the first configured key of that region, else ``sk-…``.
        limits: default ``Limits()`` scaled to the emulator's time scale.
        poll_policy: default ``PollPolicy()`` scaled likewise.
        in_process: use ``emulator.transport()`` instead of a loopback socket.
        kwargs: passed on to `AsyncWanClient`.
    """
    scale = emulator.config.time_scale if emulator.config.clock is None else 1.0
    name = region or emulator.config.default_region
    if api_key is None:
        keys = list(emulator.config.region_configs().get(name, emulator.config).api_keys)
        api_key = keys[0] if keys else EMULATOR_KEY
    if in_process:
        import httpx

        kwargs.setdefault(
            "http_client", httpx.AsyncClient(transport=emulator.transport(), timeout=30.0)
        )
        kwargs.setdefault("allow_insecure", True)  # nothing leaves the process
    return AsyncWanClient(
        api_key=api_key,
        base_url=emulator.base_url_for(name),
        region=name,
        limits=limits or Limits().scaled(scale),
        poll_policy=poll_policy or PollPolicy().scaled(scale),
        **kwargs,
    )
