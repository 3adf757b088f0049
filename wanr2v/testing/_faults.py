"""Fault injection: what the emulator does wrong, on purpose, and when.

A `FaultRule` names an endpoint, a kind of fault, and when it strikes:
the next ``count`` matching requests (scripted), or each matching request with a
``probability`` drawn from a seeded generator (random), or both (random, at most
``count`` times). Rules are checked in the order they were added; the first that
strikes wins. Examples::

    emu.faults.add(FaultRule(kind=FaultKind.THROTTLE, endpoint=Endpoint.CREATE, count=3))
    emu.faults.add(FaultRule(kind=FaultKind.DROP, endpoint=Endpoint.QUERY,
                             probability=0.1, seed=7))
    emu.faults.add(FaultRule(kind=FaultKind.FAIL_TASK, count=1,
                             code="InternalError.Algo", message="boom"))
"""

from __future__ import annotations

import enum
import random
import threading
from collections.abc import Mapping
from typing import Any

import attrs

import wanr2v.testing._rules as _rules

__all__ = ["Endpoint", "FaultKind", "FaultRule", "Faults"]


class Endpoint(enum.StrEnum):
    """The places a fault can strike."""

    CREATE = "create"
    QUERY = "query"
    LIST = "list"
    CANCEL = "cancel"
    POLICY = "policy"
    UPLOAD = "upload"
    VIDEO = "video"
    ANY = "any"


class FaultKind(enum.StrEnum):
    """What goes wrong.

    Attributes:
        THROTTLE: 429 (default ``Throttling.RateQuota``) with ``Retry-After`` (the
            rule's ``retry_after`` real seconds; by default the emulator's own, 1
            emulator second over the time scale), or none with ``send_retry_after=False``.
        SERVER_ERROR: 500 (default ``InternalError``).
        UNAVAILABLE: 503 (default ``ModelUnavailable``).
        SLOW: the right answer, ``delay`` real seconds late.
        DROP: the connection is dropped before any answer; nothing happened.
        DROP_AFTER_COMMIT: the request is carried out (a create makes its task),
            then the connection is dropped: the client cannot know.
        HANG: the connection stays silent for ``delay`` real seconds (default an
            hour), then is dropped: clients see a read timeout.
        FAIL_TASK: on create, a 200; the task then ends FAILED with ``code`` /
            ``message``.
        EXPIRED_URL: on the video host, 403 as for an expired signed URL.

    Hostile servers (they need a real socket: ``serve()`` or the pytest fixture; in
    process they act as DROP):

    Attributes:
        ENDLESS_BODY: a 200 whose chunked body never ends, sent as fast as the client
            reads (JSON-looking on the API, video bytes on the video host).
        TRICKLE: the right answer (a create is carried out), one byte every ``delay``
            real seconds (default 3): every read succeeds, the answer never completes
            in any sane time.
        ECHO_HEADERS: a 400 (``status``/``code`` to change it) whose message echoes
            every request header, ``Authorization`` first.
        REPEAT_PAGE: on the task list, the same full page for every ``page_no``
            (padded with made-up tasks), claiming a million tasks.
        HUGE_ANSWER: a 200 JSON answer of ``size`` bytes (default 100 MB), with its
            ``Content-Length``, streamed as the client reads.
    """

    THROTTLE = "throttle"
    SERVER_ERROR = "server_error"
    UNAVAILABLE = "unavailable"
    SLOW = "slow"
    DROP = "drop"
    DROP_AFTER_COMMIT = "drop_after_commit"
    HANG = "hang"
    FAIL_TASK = "fail_task"
    EXPIRED_URL = "expired_url"

    # Hostile servers (keep this block last; add new kinds above it).
    ENDLESS_BODY = "endless_body"
    TRICKLE = "trickle"
    ECHO_HEADERS = "echo_headers"
    REPEAT_PAGE = "repeat_page"
    HUGE_ANSWER = "huge_answer"


_DEFAULT_ERRORS: dict[FaultKind, tuple[int, tuple[str, str]]] = {
    FaultKind.THROTTLE: (429, _rules.RATE_QUOTA),
    FaultKind.SERVER_ERROR: (500, _rules.INTERNAL_ERROR),
    FaultKind.UNAVAILABLE: (503, _rules.MODEL_UNAVAILABLE),
    FaultKind.FAIL_TASK: (200, ("InternalError.Algo", "Inference error: the task failed.")),
}
#: Default hang: longer than any sane client timeout.
DEFAULT_HANG_S = 3600.0
#: Default pause between two bytes of a TRICKLE answer.
DEFAULT_TRICKLE_S = 3.0
#: Default size of a HUGE_ANSWER.
DEFAULT_HUGE_BYTES = 100 * 1000 * 1000


@attrs.frozen(kw_only=True)
class FaultRule:
    """One fault to inject.

    Attributes:
        kind: What goes wrong.
        endpoint: Where it strikes (``Endpoint.ANY``: every endpoint).
        count: Strike at most this many times (``None``: no limit).
        probability: Strike each matching request with this chance (``None``: always).
        seed: Seed of this rule's random draws (``None``: derived from the emulator's seed).
        region: Only requests to this region (``None``: all).
        status: HTTP status of an error answer (default per kind).
        code: Error code (errors and FAIL_TASK; default per kind).
        message: Error message (default per kind).
        retry_after: ``Retry-After`` of a THROTTLE answer, in real seconds (``None``: as
            the emulator's own rate limit, 1 emulator second over the time scale).
        send_retry_after: Whether a THROTTLE answer carries ``Retry-After`` at all.
        delay: Real seconds of a SLOW answer or a HANG; between two bytes of a TRICKLE.
        size: Bytes of a HUGE_ANSWER.
    """

    kind: FaultKind = attrs.field(converter=FaultKind)
    endpoint: Endpoint = attrs.field(default=Endpoint.ANY, converter=Endpoint)
    count: int | None = attrs.field(default=None)
    probability: float | None = attrs.field(default=None)
    seed: int | None = None
    region: str | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    retry_after: float | None = None
    send_retry_after: bool = True
    delay: float | None = None
    size: int | None = None

    @count.validator
    def _check_count(self, _: object, value: int | None) -> None:
        if value is not None and value < 0:
            raise ValueError("count must be >= 0")

    @probability.validator
    def _check_probability(self, _: object, value: float | None) -> None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError("probability must be within [0, 1]")

    def error(self) -> tuple[int, str, str]:
        """Return the (status, code, message) this rule answers with."""
        status, (code, message) = _DEFAULT_ERRORS.get(self.kind, (500, _rules.INTERNAL_ERROR))
        return self.status or status, self.code or code, self.message or message

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as plain JSON-ready data."""
        return {
            k: (str(v) if isinstance(v, enum.Enum) else v) for k, v in attrs.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """Build a rule from JSON data (the admin route's body); unknown keys are refused."""
        names = {a.name for a in attrs.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        return cls(**data)


@attrs.define
class _Armed:
    rule_id: int
    rule: FaultRule
    remaining: int | None
    rng: random.Random
    fired: int = 0


class Faults:
    """The fault rules of one emulator; thread-safe.

    Args:
        seed: The emulator's seed, from which each rule without its own seed draws.
    """

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._lock = threading.Lock()
        self._rules: list[_Armed] = []
        self._next_id = 1
        self._fired: dict[str, int] = {}

    def add(self, rule: FaultRule) -> int:
        """Arm a rule; returns its id (for `remove`)."""
        with self._lock:
            rule_id = self._next_id
            self._next_id += 1
            seed = rule.seed if rule.seed is not None else self._seed * 1_000_003 + rule_id
            self._rules.append(_Armed(rule_id, rule, rule.count, random.Random(seed)))
            return rule_id

    def remove(self, rule_id: int) -> None:
        """Disarm one rule."""
        with self._lock:
            self._rules = [a for a in self._rules if a.rule_id != rule_id]

    def clear(self) -> None:
        """Disarm every rule."""
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[tuple[int, FaultRule, int | None]]:
        """Return ``(id, rule, strikes left)`` for each armed rule."""
        with self._lock:
            return [(a.rule_id, a.rule, a.remaining) for a in self._rules]

    def fired(self) -> dict[str, int]:
        """Return how many times each kind of fault has struck."""
        with self._lock:
            return dict(self._fired)

    def reset_counts(self) -> None:
        """Forget how often faults struck."""
        with self._lock:
            self._fired.clear()

    def pick(self, endpoint: Endpoint, region: str) -> FaultRule | None:
        """Return the rule that strikes this request, if any (and count the strike)."""
        if not self._rules:
            return None
        with self._lock:
            for armed in self._rules:
                rule = armed.rule
                if rule.endpoint is not Endpoint.ANY and rule.endpoint is not endpoint:
                    continue
                if rule.region is not None and rule.region != region:
                    continue
                if not _applies(rule.kind, endpoint):
                    continue
                if armed.remaining is not None and armed.remaining <= 0:
                    continue
                if rule.probability is not None and armed.rng.random() >= rule.probability:
                    continue
                if armed.remaining is not None:
                    armed.remaining -= 1
                armed.fired += 1
                self._fired[rule.kind.value] = self._fired.get(rule.kind.value, 0) + 1
                self._rules = [a for a in self._rules if a.remaining != 0]
                return rule
        return None


def _applies(kind: FaultKind, endpoint: Endpoint) -> bool:
    """Whether a kind of fault makes sense at an endpoint (others pass it by)."""
    if kind is FaultKind.FAIL_TASK:
        return endpoint is Endpoint.CREATE
    if kind is FaultKind.EXPIRED_URL:
        return endpoint is Endpoint.VIDEO
    if kind is FaultKind.REPEAT_PAGE:
        return endpoint is Endpoint.LIST
    return True
