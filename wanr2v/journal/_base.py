"""The journal seam: the store protocol, its record types and its errors.

A batch records each submission **before** its create is sent, then its task id,
status, result URL and download path, so that a resume after any crash polls the
tasks it knows, reconciles the ambiguous ones and never pays twice. The client and
the batch runner talk to a `JournalStore`; `SQLiteJournal`
is the one shipped, and a Postgres or Redis store only has to implement the protocol.

The life of a submission::

    NEW ──▶ SENDING ──▶ CREATED ──▶ SUCCEEDED ──▶ DOWNLOADED
     │         │           │            │
     │         ▼           ▼            ▼
     │     AMBIGUOUS ──▶ FAILED      FAILED (expired before download)
     │         │
     └─────────┴──▶ (reconciled: CREATED, or back to NEW when provably absent)

``SENDING`` found on resume means the process died between sending a create and
recording its answer: treat it as ``AMBIGUOUS``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Final, Protocol, Self, runtime_checkable

import attrs

from .._exceptions import WanError
from .._models import VideoRequest
from .._wire import (
    journal_structure,
    journal_unstructure,
    register_journal_record,
    request_from_dict,
    request_to_dict,
    result_to_dict,
)

__all__ = [
    "FROZEN_FIELDS",
    "DuplicateRequestError",
    "JournalAccountError",
    "JournalBusyError",
    "JournalConflictError",
    "JournalError",
    "JournalOwner",
    "JournalStore",
    "JournalVanishedError",
    "LeasedJournal",
    "account_fingerprint",
    "check_requests",
    "record_from_dict",
    "record_to_dict",
    "SubmissionRecord",
    "SubmissionState",
    "UPDATABLE_FIELDS",
    "check_no_secrets",
    "request_from_dict",
    "request_to_dict",
    "result_to_dict",
]


class SubmissionState(enum.StrEnum):
    """Where a logical submission stands, as the journal knows it."""

    NEW = "NEW"
    """Recorded; the create has not been sent."""
    SENDING = "SENDING"
    """The create was (about to be) sent and its answer is not recorded yet. Found on
    resume, it means the process died mid-create: the outcome is ambiguous."""
    AMBIGUOUS = "AMBIGUOUS"
    """The create's outcome is unknown; reconcile before anything else."""
    CREATED = "CREATED"
    """The task id is known; the task is not final."""
    SUCCEEDED = "SUCCEEDED"
    """The task succeeded; the video is not saved yet (its URL lives 24 h)."""
    FAILED = "FAILED"
    """Terminal: the task failed, was canceled or is unknown, or a non-retryable error."""
    DOWNLOADED = "DOWNLOADED"
    """Terminal: the video is saved at ``download_path``."""

    @property
    def is_terminal(self) -> bool:
        """``FAILED`` and ``DOWNLOADED``: nothing more to do for this submission."""
        return self in (SubmissionState.FAILED, SubmissionState.DOWNLOADED)

    @property
    def needs_reconciliation(self) -> bool:
        """``SENDING`` and ``AMBIGUOUS``: a paid task may exist that the journal lacks."""
        return self in (SubmissionState.SENDING, SubmissionState.AMBIGUOUS)


class JournalError(WanError):
    """The journal could not be opened, read or written (or is closed).

    Attributes:
        path: the journal's location, when it has one.
    """

    path: str | None

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class JournalConflictError(JournalError):
    """A write lost a race or would break an invariant; nothing was written.

    Raised when ``update(..., expect_state=...)`` finds another state (someone else
    moved the submission first), or when a task id or submission id is already
    claimed by another record.

    Attributes:
        submission_id: the submission the write was for.
        current: the record as it is now, when there is one.
    """

    submission_id: str | None
    current: SubmissionRecord | None

    def __init__(
        self,
        message: str,
        *,
        submission_id: str | None = None,
        current: SubmissionRecord | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.submission_id = submission_id
        self.current = current


class JournalAccountError(JournalConflictError):
    """The journal's tasks were made with another account (API key) at a base URL, or
    live at a base URL this client cannot reach; nothing was sent or changed.

    A task id means something only to the account and region that made it: queried
    with another key, every live task would answer ``UNKNOWN`` and be given up for
    lost. Resume with the key (and base URL) that made the journal, or use another
    journal.

    Attributes:
        base_url: where the journal's tasks live.
        expected: the fingerprint of the key that made them (never the key), or
            ``None`` when the client has no key for ``base_url`` at all.
        got: the fingerprint of the client's key for ``base_url``, or ``None``.
    """

    base_url: str
    expected: str | None
    got: str | None

    def __init__(
        self,
        message: str,
        *,
        base_url: str,
        expected: str | None,
        got: str | None,
        path: str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.base_url = base_url
        self.expected = expected
        self.got = got


class DuplicateRequestError(JournalConflictError):
    """The same request is already journaled (or given) under another key: sending it
    would pay for the same video again. Nothing was sent or recorded.

    Pass ``allow_duplicates=True`` (``wanr2v run --allow-duplicates``) when you do want
    several takes of one request (without a ``seed``, each take is another video).

    Attributes:
        key: the new key.
        other_key: the key that already holds the same request.
        submission_id: the existing record's id, when it is journaled.
        current: the existing record, when it is journaled.
    """

    key: str
    other_key: str

    def __init__(
        self,
        message: str,
        *,
        key: str,
        other_key: str,
        submission_id: str | None = None,
        current: SubmissionRecord | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message, submission_id=submission_id, current=current, path=path)
        self.key = key
        self.other_key = other_key


@attrs.frozen(kw_only=True)
class JournalOwner:
    """The process holding a journal's lease (one batch runner at a time).

    Attributes:
        token: a random id of this holding (not of the process).
        pid: the process id.
        host: the host name.
        started_at: UNIX time the lease was taken.
        heartbeat_at: UNIX time the owner last said it is alive.
        ttl: seconds without a heartbeat after which the lease is free.
    """

    token: str
    pid: int
    host: str
    started_at: float
    heartbeat_at: float
    ttl: float

    def describe(self, now: float | None = None) -> str:
        """``pid 123 on host h (since 12:00:03 UTC, last heartbeat 2 s ago)``."""
        now = time.time() if now is None else now
        since = time.strftime("%H:%M:%S UTC", time.gmtime(self.started_at))
        ago = max(0.0, now - self.heartbeat_at)
        return f"pid {self.pid} on host {self.host} (since {since}, last heartbeat {ago:.0f} s ago)"


class JournalBusyError(JournalError):
    """Another live process holds the journal's lease (a ``run`` or ``resume`` is going
    on), or took it over from this one. Nothing was sent.

    Wait for the other process to finish, or stop it: a lease whose owner died (its
    pid is gone on the same host, or it missed heartbeats for ``ttl`` seconds) is
    taken over by the next runner.

    Attributes:
        owner: the process holding the lease, when known.
    """

    owner: JournalOwner | None

    def __init__(
        self, message: str, *, owner: JournalOwner | None = None, path: str | None = None
    ) -> None:
        super().__init__(message, path=path)
        self.owner = owner


class JournalVanishedError(JournalError):
    """The journal file was deleted, moved or replaced while open: what is written now
    would be lost. The batch stops before sending anything more."""


# --- record ----------------------------------------------------------------------------


def _opt_float(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a UNIX time (float) or None, got {value!r}")
    f = float(value)
    if not math.isfinite(f):
        raise ValueError(f"expected a finite UNIX time, got {value!r}")
    return f


def _float(value: object) -> float:
    f = _opt_float(value)
    if f is None:
        raise TypeError("expected a UNIX time (float), got None")
    return f


def _attempts(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TypeError(f"attempts must be an int >= 0, got {value!r}")
    return value


def _opt_mapping(value: object) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a JSON object (a mapping) or None, got {type(value).__name__}")
    return dict(value)


def _mapping(value: object) -> dict[str, Any]:
    m = _opt_mapping(value)
    if m is None:
        raise TypeError("expected a JSON object (a mapping), got None")
    return m


def _key(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"batch_key must be a non-empty str, got {value!r}")
    return value


_opt_str = attrs.validators.optional(attrs.validators.instance_of(str))
_str = attrs.validators.instance_of(str)


@attrs.frozen(kw_only=True)
class SubmissionRecord:
    """One logical submission: what was asked, what was sent, what became of it.

    JSON-valued fields (``request``, ``body``, ``result``) hold plain dicts of JSON
    values; a store rejects anything ``json`` cannot encode. Build a fresh record with
    `new`; change a stored one only through `JournalStore.update`.

    Attributes:
        submission_id: client-side id (a UUID string), stable across resumes.
        batch_key: the caller's key for the item (a line number, a user id); unique
            within a journal.
        request: the `VideoRequest` fields (see `request_to_dict`).
        fingerprint: hash of model + input + parameters of the body sent, once known.
        body: the wire body actually sent (references already uploaded), ``None``
            until a create is sent.
        state: see `SubmissionState`.
        task_id: the service's task id, once known.
        base_url: where the task lives (``fetch``/``cancel`` must go there).
        region: the region name of ``base_url``.
        model: the model the task runs.
        sent_at: UNIX time the last create was sent (the reconciliation window).
        status: the task's raw status string as last seen.
        video_url: the result URL (valid 24 h after the task ends).
        result: the last `TaskResult`'s essentials (`result_to_dict`).
        download_path: where the video was saved.
        error_type: class name of the error that ended or stalled the submission.
        error_code: its service code, if any.
        error_message: its message (never holding the API key).
        attempts: how many creates were sent for this submission.
        created_at: UNIX time the record was made.
        updated_at: UNIX time of the last change (set by the store).
    """

    submission_id: str = attrs.field(validator=_str)
    batch_key: str = attrs.field(converter=_key)
    request: dict[str, Any] = attrs.field(converter=_mapping)
    state: SubmissionState = attrs.field(default=SubmissionState.NEW, converter=SubmissionState)
    fingerprint: str | None = attrs.field(default=None, validator=_opt_str)
    body: dict[str, Any] | None = attrs.field(default=None, converter=_opt_mapping)
    task_id: str | None = attrs.field(default=None, validator=_opt_str)
    base_url: str | None = attrs.field(default=None, validator=_opt_str)
    region: str | None = attrs.field(default=None, validator=_opt_str)
    model: str | None = attrs.field(default=None, validator=_opt_str)
    sent_at: float | None = attrs.field(default=None, converter=_opt_float)
    status: str | None = attrs.field(default=None, validator=_opt_str)
    video_url: str | None = attrs.field(default=None, validator=_opt_str)
    result: dict[str, Any] | None = attrs.field(default=None, converter=_opt_mapping)
    download_path: str | None = attrs.field(default=None, validator=_opt_str)
    error_type: str | None = attrs.field(default=None, validator=_opt_str)
    error_code: str | None = attrs.field(default=None, validator=_opt_str)
    error_message: str | None = attrs.field(default=None, validator=_opt_str)
    attempts: int = attrs.field(default=0, converter=_attempts)
    created_at: float = attrs.field(factory=time.time, converter=_float)
    updated_at: float = attrs.field(factory=time.time, converter=_float)

    @classmethod
    def new(
        cls,
        batch_key: str,
        request: VideoRequest | Mapping[str, Any],
        **fields: Any,
    ) -> SubmissionRecord:
        """A fresh ``NEW`` record with a random ``submission_id``.

        Args:
            batch_key: the caller's key for the item.
            request: the request, or its fields as `request_to_dict` gives them.
            **fields: any other `SubmissionRecord` field (e.g. ``base_url``).
                ``model`` defaults to the request's.
        """
        req = request_to_dict(request) if isinstance(request, VideoRequest) else dict(request)
        now = time.time()
        fields.setdefault("submission_id", str(uuid.uuid4()))
        fields.setdefault("model", req.get("model"))
        fields.setdefault("created_at", now)
        fields.setdefault("updated_at", now)
        return cls(batch_key=batch_key, request=req, **fields)

    def video_request(self) -> VideoRequest:
        """The `VideoRequest` rebuilt (and re-validated) from ``request``."""
        return request_from_dict(self.request)

    @property
    def is_terminal(self) -> bool:
        """Whether the state is ``FAILED`` or ``DOWNLOADED``."""
        return self.state.is_terminal


# The journal converter's functions for a record, built here while the annotations' names
# are this module's (the package re-homes the class) and before any worker thread uses them.
register_journal_record(SubmissionRecord)

FROZEN_FIELDS: Final = frozenset({"submission_id", "batch_key", "created_at", "updated_at"})
"""Fields ``update`` refuses: identity and the store-kept timestamps."""

UPDATABLE_FIELDS: Final = frozenset(
    a.name for a in attrs.fields(SubmissionRecord) if a.name not in FROZEN_FIELDS
)
"""Fields ``update`` accepts."""


# --- conversions -----------------------------------------------------------------------


def record_to_dict(record: SubmissionRecord) -> dict[str, Any]:
    """A record as the JSON values a store keeps (``state`` as its value), field by field."""
    data: dict[str, Any] = journal_unstructure(record)
    return data


def record_from_dict(data: Mapping[str, Any]) -> SubmissionRecord:
    """The record `record_to_dict` gave (its own converters and validators check it).

    Raises:
        TypeError: a field is missing, unknown or of the wrong type.
        ValueError: a value is out of range (e.g. a time that is not finite).
    """
    return journal_structure(data, SubmissionRecord)


def states_of(
    states: SubmissionState | Iterable[SubmissionState] | None,
) -> tuple[SubmissionState, ...] | None:
    """``states`` as a tuple (``None`` stays ``None``); one state is one state, not the
    characters of a string (a `SubmissionState` is a ``str``)."""
    if states is None:
        return None
    if isinstance(states, str):
        return (SubmissionState(states),)
    return tuple(SubmissionState(s) for s in states)


def check_updatable(changes: Mapping[str, Any], check: Callable[[Any, str], None]) -> None:
    """The arguments of a store's ``update``: only `UPDATABLE_FIELDS`, each value passed
    through ``check`` (its type and secret checks).

    Raises:
        TypeError: an unknown or immutable field (naming the settable ones).
    """
    unknown = sorted(set(changes) - UPDATABLE_FIELDS)
    if unknown:
        raise TypeError(
            f"update() cannot set {', '.join(unknown)}; "
            f"settable fields: {', '.join(sorted(UPDATABLE_FIELDS))}."
        )
    for name, value in changes.items():
        check(value, name)


def check_no_secrets(value: object, secrets: Iterable[str], *, where: str) -> None:
    """Refuse a value holding a secret anywhere in it (strings, keys, nested JSON).

    Stores call this before writing so a journal file never holds the API key.

    Args:
        value: a string, number, mapping or sequence of them.
        secrets: the strings that must not be stored (empty ones are ignored).
        where: a field name for the error message (the secret itself is never shown).

    Raises:
        ValueError: ``value`` contains one of ``secrets``.
    """
    needles = tuple(s for s in secrets if s)
    if not needles:
        return
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if any(s in item for s in needles):
                raise ValueError(
                    f"Refusing to store {where}: it contains a configured secret "
                    "(the API key must never reach the journal)."
                )
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)


def account_fingerprint(api_key: str) -> str:
    """A short, stable fingerprint of an API key: which account made a journal's tasks.

    A keyed hash (HMAC-SHA256 under a fixed label, 16 hex digits): it tells two keys
    apart and cannot be turned back into the key, so it may be stored and shown.
    """
    digest = hmac.new(b"wanr2v journal account v1", api_key.encode(), hashlib.sha256)
    return "k1-" + digest.hexdigest()[:16]


def _canonical(request: Mapping[str, Any]) -> str:
    return json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


async def check_requests(
    journal: JournalStore,
    requests: Mapping[str, VideoRequest],
    *,
    allow_duplicates: bool = False,
) -> None:
    """The journal's money rule, checked before a batch adds or sends anything.

    * A key the journal knows with a **different** request is refused: the journal
      would hand back the old task's result as the new request's (or resume the old
      one), so the changed request would silently not be made.
    * A request the journal already holds under **another** key (a renamed key), or
      that two new keys share, is refused unless ``allow_duplicates``: it would be paid
      for again.

    Raises:
        JournalConflictError: a changed request under a known key.
        DuplicateRequestError: the same request under two keys.
    """
    path = getattr(journal, "path", None)
    path = path if isinstance(path, str) else None
    records = await journal.list()
    by_key = {rec.batch_key: rec for rec in records}
    by_request: dict[str, SubmissionRecord] = {}
    for rec in records:
        by_request.setdefault(_canonical(rec.request), rec)
    seen: dict[str, str] = {}
    for key, request in requests.items():
        canon = _canonical(json.loads(_canonical(request_to_dict(request))))
        known = by_key.get(key)
        if known is not None:
            if _canonical(known.request) != canon:
                raise JournalConflictError(
                    f"The journal{f' {path}' if path else ''} already holds a different "
                    f"request under key {key!r} (state {known.state.value}); give the "
                    "changed request a new key, or use another journal. Nothing was sent.",
                    submission_id=known.submission_id,
                    current=known,
                    path=path,
                )
            continue
        if allow_duplicates:
            continue
        other = by_request.get(canon)
        if other is not None:
            raise DuplicateRequestError(
                f"Key {key!r}: the journal already holds this exact request under key "
                f"{other.batch_key!r} (state {other.state.value}); sending it would pay "
                "for it again. Use the old key, change the request, or allow duplicates "
                "(allow_duplicates=True, `wanr2v run --allow-duplicates`). Nothing was sent.",
                key=key,
                other_key=other.batch_key,
                submission_id=other.submission_id,
                current=other,
                path=path,
            )
        if canon in seen:
            raise DuplicateRequestError(
                f"Keys {seen[canon]!r} and {key!r} hold the same request; it would be paid "
                "for twice. Remove one, change one, or allow duplicates "
                "(allow_duplicates=True, `wanr2v run --allow-duplicates`). Nothing was sent.",
                key=key,
                other_key=seen[canon],
                path=path,
            )
        seen[canon] = key


# --- the protocol ----------------------------------------------------------------------


@runtime_checkable
class JournalStore(Protocol):
    """A durable store of `SubmissionRecord` s and batch metadata.

    Every method is safe to call from many tasks at once; each write is atomic and
    durable when it returns (a record added before a create is sent survives a crash
    of the process). Usable as an async context manager, which closes it.
    """

    async def add(self, record: SubmissionRecord) -> SubmissionRecord:
        """Insert ``record``; if its ``batch_key`` is already there, return that one.

        The existing record is returned unchanged even if it differs (compare its
        ``request`` or ``fingerprint`` to notice a batch file that changed).

        Raises:
            JournalConflictError: the ``submission_id`` is taken by another batch key,
                or ``task_id`` is claimed by another record.
        """
        ...

    async def get(self, submission_id: str) -> SubmissionRecord | None:
        """The record with this id, or ``None``."""
        ...

    async def get_by_key(self, batch_key: str) -> SubmissionRecord | None:
        """The record with this batch key, or ``None``."""
        ...

    async def get_by_task_id(self, task_id: str) -> SubmissionRecord | None:
        """The record that claims this task id, or ``None``."""
        ...

    async def update(
        self,
        submission_id: str,
        *,
        expect_state: SubmissionState | Iterable[SubmissionState] | None = None,
        **changes: Any,
    ) -> SubmissionRecord:
        """Change fields of one record atomically; sets ``updated_at``.

        Args:
            submission_id: the record to change.
            expect_state: if given, write only if the record is in this state (or one
                of these states): a compare-and-set, so that of two runners only one
                moves ``NEW`` to ``SENDING``.
            **changes: field names of `UPDATABLE_FIELDS` and their new values.

        Returns:
            The record as stored after the change.

        Raises:
            KeyError: no such record.
            TypeError: an unknown or immutable field, or a value of the wrong type.
            JournalConflictError: the state was not ``expect_state``, or the task id
                is claimed by another record.
        """
        ...

    async def list(
        self, states: SubmissionState | Iterable[SubmissionState] | None = None
    ) -> tuple[SubmissionRecord, ...]:
        """The records (in one state or several; all when ``None``) in insertion order."""
        ...

    async def counts(self) -> dict[SubmissionState, int]:
        """How many records are in each state (every state present, zeros included)."""
        ...

    async def known_task_ids(self) -> set[str]:
        """Every task id some record claims (reconciliation must not claim these)."""
        ...

    async def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under ``key`` (e.g. the output folder, base URL, region)."""
        ...

    async def get_meta(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        ...

    async def aclose(self) -> None:
        """Release the store; closing twice is harmless."""
        ...

    async def __aenter__(self) -> Self:
        """Open the store (if it is not) and return it."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        ...


@runtime_checkable
class LeasedJournal(Protocol):
    """A store that lets one batch runner at a time own it (optional for stores).

    The batch runner takes the lease before it adds or sends anything, renews it every
    few seconds, and releases it at the end. While a lease is held, every write of the
    holder is fenced: it fails with `JournalBusyError` once another process has
    taken the lease over, so a runner that was paused past its lease sends nothing more.
    A store without leases still gets compare-and-set claims (``update(...,
    expect_state=NEW)``), so no submission is sent twice even then.
    """

    async def acquire(self) -> JournalOwner:
        """Take the lease, or take it over from a dead owner. Re-entrant for one store
        object (several batches of one program may share it); each ``acquire`` is
        matched by a ``release``.

        Raises:
            JournalBusyError: a live process holds it (named in the message).
        """
        ...

    async def heartbeat(self) -> None:
        """Say the owner is alive.

        Raises:
            JournalBusyError: the lease was taken over.
            JournalVanishedError: the store is gone.
        """
        ...

    async def release(self) -> None:
        """Give the lease up (harmless when not held)."""
        ...

    async def owner(self) -> JournalOwner | None:
        """Who holds the lease now (a dead owner included), or ``None``."""
        ...
