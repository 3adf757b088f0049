"""How an emulator is set up: regions, keys, quotas, timing."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeAlias

import attrs

import wanr2v.testing._rules as _rules
from wanr2v.testing._clock import Clock

__all__ = ["EmulatorConfig", "GenerationTime", "Quotas", "RegionConfig"]

GenerationTime: TypeAlias = (
    tuple[float, float]
    | Mapping[str, tuple[float, float]]
    | Callable[[random.Random, Mapping[str, Any]], float]
)
"""Generation time in emulator seconds: ``(low, high)`` uniform bounds, a
``{model: (low, high)}`` mapping, or ``callable(rng, request) -> seconds``
where ``request`` is the create body (a dict) after defaults were applied."""


@attrs.frozen(kw_only=True)
class Quotas:
    """Account quotas of one region, measured on the emulator clock; ``None`` turns one off.

    Attributes:
        create_per_s: Task creations per second, per account and model.
        running: Tasks processed at once, per account and model.
        query_per_s: Task queries per second, per account.
        list_per_s: List calls per second, per account.
        cancel_per_s: Cancel calls per second, per account.
        policy_per_s: Upload-policy calls per second, per account.
        strict_running: Past ``running``, answer 429 ``Throttling.AllocationQuota``
            instead of queueing the task as PENDING.
    """

    create_per_s: int | None = _rules.CREATE_PER_S
    running: int | None = _rules.RUNNING_TASKS
    query_per_s: int | None = _rules.QUERY_PER_S
    list_per_s: int | None = _rules.LIST_PER_S
    cancel_per_s: int | None = _rules.CANCEL_PER_S
    policy_per_s: int | None = _rules.POLICY_PER_S
    strict_running: bool = not _rules.QUEUE_WHEN_BUSY

    @classmethod
    def off(cls) -> Quotas:
        """Return quotas with every limit turned off."""
        return cls(
            create_per_s=None,
            running=None,
            query_per_s=None,
            list_per_s=None,
            cancel_per_s=None,
            policy_per_s=None,
        )


def _keys(value: Sequence[str] | Mapping[str, str]) -> Mapping[str, str]:
    """Normalise keys to ``{key: account}`` (a plain list: one account)."""
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping):
        return dict(value)
    return dict.fromkeys(value, _rules.OPEN_ACCOUNT)


@attrs.frozen(kw_only=True)
class RegionConfig:
    """One emulated region.

    Attributes:
        api_keys: The keys valid here, as a list (one account) or a mapping of
            key to account name. Empty: any ``sk-...`` key not configured for
            another region is accepted.
        quotas: This region's quotas (``None``: the emulator's).
        capabilities: What the region offers (``None``: from its name, see ``_rules``).
    """

    api_keys: Mapping[str, str] = attrs.field(factory=dict, converter=_keys)
    quotas: Quotas | None = None
    capabilities: _rules.RegionCapabilities | None = None


WORLD_KNOBS = ("list_lag", "query_lag", "commit_delay", "prompt_normalization", "page_size_cap")
"""The fields of `EmulatorConfig` that make the emulated world less kind (also
settable at run time: `Emulator.set_world`, ``POST /_emulator/world``)."""


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(
            f"{attribute.name} must be a number of emulator seconds >= 0, got {value!r}."
        )


def _page_cap(_: object, attribute: attrs.Attribute[Any], value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{attribute.name} must be an integer >= 1 or None, got {value!r}.")


@attrs.frozen(kw_only=True)
class EmulatorConfig:
    """Everything an `Emulator` needs to start.

    Attributes:
        api_keys: Keys of the default region (see `RegionConfig`).
        default_region: Name of the region served at ``/api/v1``.
        regions: Further regions, served at ``/{name}/api/v1``, by name.
        quotas: Quotas of every region without its own.
        time_scale: Emulator seconds per real second (ignored with ``clock``).
        clock: A clock to use instead, e.g. a `ManualClock`.
        seed: Seed of every random draw (``None``: random, see ``Emulator.seed``).
        generation_time: Emulator seconds a task takes (see `GenerationTime`);
            ``None``: the vendor-like default per model (60-300 s, flash 45-200 s).
        dispatch_delay: Emulator seconds between a free slot and ``scheduled_time``.
        task_ttl: Emulator seconds a task id lives (then it queries as UNKNOWN).
        video_url_ttl: Emulator seconds a result URL stays valid.
        policy_ttl: Emulator seconds an upload policy stays valid.
        max_recorded_requests: How many upload/video host requests to remember.
        list_lag: World knob: emulator seconds before a new task shows in the task
            list (``GET tasks``). 0: at once.
        query_lag: World knob: a task younger than this (emulator seconds) answers
            ``UNKNOWN`` on query, as an id the service does not know yet. 0: never.
        commit_delay: World knob: a create whose connection dropped after it was
            carried out (``FaultKind.DROP_AFTER_COMMIT``) commits this many emulator
            seconds later; until then the task is nowhere (not listed, UNKNOWN on
            query), and its ``gmt_create`` / ``submit_time`` is the commit time. 0: at once.
        prompt_normalization: World knob: ``orig_prompt`` comes back normalized
            (Unicode NFC, trimmed, every run of whitespace one space) instead of byte
            for byte.
        page_size_cap: World knob: the task list serves at most this many rows a page,
            whatever ``page_size`` asks (the answer's ``page_size`` and
            ``total_page`` follow the cap). ``None``: as asked (up to 100).
    """

    api_keys: Mapping[str, str] = attrs.field(factory=dict, converter=_keys)
    default_region: str = _rules.DEFAULT_REGION
    regions: Mapping[str, RegionConfig] = attrs.field(factory=dict)
    quotas: Quotas = attrs.field(factory=Quotas)
    time_scale: float = 1.0
    clock: Clock | None = attrs.field(default=None, eq=False)
    seed: int | None = None
    generation_time: GenerationTime | None = attrs.field(default=None, eq=False)
    dispatch_delay: float = _rules.DISPATCH_DELAY_S
    task_ttl: float = _rules.TASK_TTL_S
    video_url_ttl: float = _rules.VIDEO_URL_TTL_S
    policy_ttl: float = _rules.POLICY_TTL_S
    max_recorded_requests: int = 10_000
    list_lag: float = attrs.field(default=0.0, validator=_non_negative)
    query_lag: float = attrs.field(default=0.0, validator=_non_negative)
    commit_delay: float = attrs.field(default=0.0, validator=_non_negative)
    prompt_normalization: bool = False
    page_size_cap: int | None = attrs.field(default=None, validator=_page_cap)

    def region_configs(self) -> dict[str, RegionConfig]:
        """Return every region's config, the default region first."""
        out = {self.default_region: RegionConfig(api_keys=self.api_keys)}
        for name, region in self.regions.items():
            if name == self.default_region:
                out[name] = RegionConfig(
                    api_keys={**self.api_keys, **region.api_keys},
                    quotas=region.quotas,
                    capabilities=region.capabilities,
                )
            else:
                out[name] = region
        return out
