"""Wire both ways, in one place: JSON <-> models for the API, the journal and ``--json``.

Three private cattrs converters, one per JSON shape:

* **the service's wire** (``_api``): answers -> `Task`, `TaskResult`, `TaskSummary`,
  `Usage`, a list page and an upload policy; a `VideoRequest` -> the create body
  (`parse_created`, `parse_result`, `parse_list`, `parse_policy`, `request_body`).
  Parsing is lenient, as the service adds fields and is loose with types: unknown keys
  are kept in ``extra``, a missing field is ``None``, numbers may come as int, float or
  string, an unknown status becomes ``TaskStatus.UNRECOGNIZED`` (its text kept in
  ``raw_status``), times are the service's ``YYYY-MM-DD HH:mm:ss.SSS`` (assumed
  UTC+8) in a result and epoch milliseconds in a list row. A malformed answer raises a
  `APIError`-family error (code ``MalformedResponse``), never a ``KeyError``,
  ``TypeError`` or a cattrs error.
* **the journal** (``_journal``): models <-> the JSON a journal record stores
  (`request_to_dict`, `request_from_dict`, `result_to_dict`, `result_from_dict`,
  `journal_unstructure` / `journal_structure` for whole records, `json_text` for the
  text). The journal package registers its record class with `register_journal_record`
  (this module does not import the journal). The stored format is the one wanr2v has
  always written (same keys, same order, times as ISO 8601, statuses as their values,
  ``None`` fields of a result left out), so an existing journal loads and is rewritten
  byte for byte. Stored values are trusted as JSON types (wanr2v wrote them): scalars
  pass through untouched and a record class's own converters and validators judge
  them, as a plain constructor call would.
* **the CLI's** ``--json`` (``_cli``): `task_json`, `result_json`, `summary_json`,
  `usage_json` give the documents ``wanr2v ... --json`` prints (a result's is the
  journal's shape).

What cattrs does: generated structure and unstructure functions per model, with renames
(``task_status`` -> ``status`` and ``raw_status``, ``SR`` -> ``sr``), per-field hooks
(service time strings vs epoch milliseconds), the lenient scalar and status hooks,
nested ``Usage``, ``None``/default omission, enums to their values and times to ISO
8601.

Hand code is kept where cattrs does not fit, and why:

* the **envelope** of an answer: ``output`` nested, ``request_id`` and ``usage`` beside
  it, ``task_id`` and ``base_url`` from the caller when the answer lacks them; a bad
  envelope must be a ``MalformedResponse``, which is a judgement about the answer, not a
  structuring error;
* **unknown keys into** ``extra``: cattrs ignores or refuses unknown keys, it does not
  collect them; `_split` hands the generated function the keys it knows plus the rest
  as ``extra`` (the known keys are derived from the model's fields and renames, never
  listed twice);
* the create body's **two sections** (``input`` / ``parameters``) regroup the journal's
  flat request dict (one unstructure function serves both), in the order the service
  documents; list rows without a ``task_id`` are skipped;
* **key order** of a stored result and of ``--json`` documents: cattrs emits fields in
  class order, so the unstructured dict is reordered to the order wanr2v has always
  written (stored records stay byte-identical, printed documents unchanged);
* a `VideoRequest` **from a dict** is ``VideoRequest(**data)``: the class validates
  itself and names a misspelt field in a ``TypeError``; cattrs would add a second,
  different set of rules.

Limits: a result's ``extra`` is not stored in a journal (as before), so a result with
unknown service fields reads back without them. Decoding a stored record with an
unknown or missing field raises ``TypeError`` (a journal written by a newer wanr2v is
not silently stripped on the next update).
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, TypeVar

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._exceptions import APIError
from ._models import Task, TaskResult, TaskStatus, TaskSummary, Usage, VideoRequest

SERVICE_TZ: Final = timezone(timedelta(hours=8))
"""Assumed zone of the service's ``YYYY-MM-DD HH:mm:ss.SSS`` strings (protocol.md)."""

T = TypeVar("T")


# --- lenient scalars --------------------------------------------------------------------


def to_float(value: object) -> float | None:
    """A float from int, float or numeric string; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        f = float(value)
    elif isinstance(value, str):
        try:
            f = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if f != f or f in (float("inf"), float("-inf")):
        return None
    return f


def to_int(value: object) -> int | None:
    f = to_float(value)
    if f is None or abs(f) > 2**63:
        return None
    return int(f)


def to_str(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def parse_service_time(value: object) -> datetime | None:
    """``"2025-12-16 00:25:59.869"`` (assumed UTC+8) → aware datetime; else ``None``."""
    text = to_str(value)
    if not text:
        return None
    n = len(text)
    if (n == 19 or (n in (23, 26) and text[19] == ".")) and text[10] == " ":
        # The service's exact shape (every answer of every poll): ``fromisoformat`` is
        # about 20 times cheaper than ``strptime``. Anything else takes the slow path.
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is None:
            return parsed.replace(tzinfo=SERVICE_TZ)
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text.strip(), fmt).replace(tzinfo=SERVICE_TZ)
        except ValueError:
            continue
    return None


def parse_epoch_ms(value: object) -> datetime | None:
    ms = to_float(value)
    if ms is None or not 0 <= ms < 1e15:
        return None
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def format_list_time(when: datetime) -> str:
    """The list filter's ``YYYYMMDDhhmmss``, in the service's (assumed) zone."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(SERVICE_TZ).strftime("%Y%m%d%H%M%S")


# --- the service's wire -----------------------------------------------------------------


def _keep(value: Any, _: Any = None) -> Any:
    """A hook that passes a value through untouched."""
    return value


def _str(value: Any, _: Any) -> str:
    return to_str(value) or ""


def _status(value: Any, _: Any) -> TaskStatus:
    return TaskStatus.parse(value)


def _service_time(value: Any, _: Any) -> datetime | None:
    return parse_service_time(value)


def _epoch_ms(value: Any, _: Any) -> datetime | None:
    return parse_epoch_ms(value)


def _renamed(renames: Mapping[str, str], **more: Any) -> dict[str, Any]:
    """cattrs overrides: the attributes whose wire key is not their name, and ``more``."""
    return {name: override(rename=key) for name, key in renames.items()} | more


def _wire_keys(cls: type, renames: Mapping[str, str], skip: Iterable[str] = ()) -> frozenset[str]:
    """The wire keys a model reads (its fields after ``renames``; ``extra`` and ``skip``
    aside): what is not among them goes into ``extra``."""
    skipped = {"extra", *skip}
    return frozenset(
        renames.get(a.name, a.name) for a in attrs.fields(cls) if a.name not in skipped
    )


def _split(data: Mapping[str, Any], known: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(the known keys, the rest)``; the rest becomes the model's ``extra``."""
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        if key in known:
            fields[key] = value
        else:
            extra[key] = value
    return fields, extra


def build_converter() -> cattrs.Converter:
    """A fresh converter (never cattrs' global one)."""
    return cattrs.Converter(forbid_extra_keys=False, detailed_validation=False)


def configure_converter(conv: cattrs.Converter) -> None:
    """The service's wire: lenient scalars, its status strings and its time strings."""
    conv.register_structure_hook(float | None, lambda v, _: to_float(v))
    conv.register_structure_hook(int | None, lambda v, _: to_int(v))
    conv.register_structure_hook(str | None, lambda v, _: to_str(v))
    conv.register_structure_hook(str, _str)
    conv.register_structure_hook(TaskStatus, _status)
    conv.register_structure_hook(datetime | None, _service_time)


_api = build_converter()
configure_converter(_api)

# Usage: ``SR`` on the wire (``sr`` is read too, and kept in ``extra`` as well).
_USAGE_RENAMES: Final = {"sr": "SR"}
_USAGE_KEYS: Final = _wire_keys(Usage, _USAGE_RENAMES)
_usage_from_wire = make_dict_structure_fn(
    Usage, _api, **_renamed(_USAGE_RENAMES, extra=override(struct_hook=_keep))
)


def _structure_usage(data: Any, _: Any) -> Usage:
    if not isinstance(data, Mapping):
        return Usage()
    fields, extra = _split(data, _USAGE_KEYS)
    if "SR" not in fields and "sr" in data:
        fields["SR"] = data["sr"]
    fields["extra"] = extra
    return _usage_from_wire(fields, Usage)


_api.register_structure_hook(Usage, _structure_usage)

# TaskResult: the keys of ``output`` (``task_status`` gives ``status`` and
# ``raw_status``); ``request_id`` and ``usage`` come from the envelope, ``base_url``
# from the caller, ``extra`` is the rest of ``output``.
_RESULT_RENAMES: Final = {"status": "task_status", "raw_status": "task_status"}
_RESULT_KEYS: Final = _wire_keys(TaskResult, _RESULT_RENAMES, ("request_id", "usage", "base_url"))
_result_from_wire = make_dict_structure_fn(
    TaskResult, _api, **_renamed(_RESULT_RENAMES, extra=override(struct_hook=_keep))
)

# TaskSummary: ``status`` (else ``task_status``) gives ``status`` and ``raw_status``;
# its times are epoch milliseconds.
_SUMMARY_RENAMES: Final = {"raw_status": "status"}
_SUMMARY_KEYS: Final = _wire_keys(TaskSummary, _SUMMARY_RENAMES) | {"task_status"}
_summary_from_wire = make_dict_structure_fn(
    TaskSummary,
    _api,
    **_renamed(
        _SUMMARY_RENAMES,
        gmt_create=override(struct_hook=_epoch_ms),
        start_time=override(struct_hook=_epoch_ms),
        end_time=override(struct_hook=_epoch_ms),
        extra=override(struct_hook=_keep),
    ),
)


def _structure_summary(row: Any, _: Any) -> TaskSummary:
    fields, extra = _split(row, _SUMMARY_KEYS)
    if "status" not in fields:
        fields["status"] = fields.get("task_status")
    fields["extra"] = extra
    return _summary_from_wire(fields, TaskSummary)


def _structure_rows(rows: Any, _: Any) -> tuple[TaskSummary, ...]:
    """List rows; a row that is not an object or has no ``task_id`` is skipped."""
    return tuple(
        _structure_summary(row, TaskSummary)
        for row in rows or ()
        if isinstance(row, Mapping) and to_str(row.get("task_id"))
    )


_api.register_structure_hook(TaskSummary, _structure_summary)
_api.register_structure_hook_func(lambda t: t == tuple[TaskSummary, ...], _structure_rows)

# Task: ``task_status`` gives ``status``; the rest is the caller's.
_task_from_wire = make_dict_structure_fn(Task, _api, status=override(rename="task_status"))


def structure(data: Any, cls: type[T]) -> T:
    """Service JSON -> ``cls`` through the service's converter."""
    return _api.structure(data, cls)


# --- requests ---------------------------------------------------------------------------

_INPUT_FIELDS: Final = ("prompt", "negative_prompt", "reference_urls")
_PARAMETER_FIELDS: Final = (
    "size",
    "duration",
    "shot_type",
    "audio",
    "watermark",
    "seed",
    "prompt_extend",
)


def request_body(req: VideoRequest, references: list[str] | None = None) -> dict[str, Any]:
    """The create body: ``{"model", "input", "parameters"}`` with only the fields set.

    Args:
        req: the request.
        references: the final reference URLs (local files replaced by ``oss://`` URLs);
            defaults to ``req.reference_urls``.
    """
    flat = request_to_dict(req)
    inp: dict[str, Any] = {name: flat[name] for name in _INPUT_FIELDS if name in flat}
    if references is not None:
        inp["reference_urls"] = list(references)
    inp.update(req.extra_input)
    params: dict[str, Any] = {name: flat[name] for name in _PARAMETER_FIELDS if name in flat}
    params.update(req.extra_parameters)
    body: dict[str, Any] = {"model": flat["model"], "input": inp}
    if params:
        body["parameters"] = params
    return body


def fingerprint(body: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of model + input + parameters."""
    canon = json.dumps(
        {k: body.get(k) for k in ("model", "input", "parameters")},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canon.encode()).hexdigest()


# --- answers ----------------------------------------------------------------------------


def _malformed(what: str, data: object, request_id: str | None = None) -> APIError:
    snippet = repr(data)[:200]
    return APIError(
        f"Malformed {what} answer from the service: {snippet}",
        status_code=200,
        code="MalformedResponse",
        request_id=request_id,
    )


def _output(data: object, what: str) -> tuple[Mapping[str, Any], str | None]:
    if not isinstance(data, Mapping):
        raise _malformed(what, data)
    rid = to_str(data.get("request_id"))
    out = data.get("output")
    if not isinstance(out, Mapping):
        raise _malformed(what, data, rid)
    return out, rid


def parse_created(
    data: object, *, base_url: str, region: str, model: str, submitted_at: float, fp: str
) -> Task:
    out, rid = _output(data, "create")
    task_id = to_str(out.get("task_id"))
    if not task_id:
        raise _malformed("create", data, rid)
    fields = {
        "task_id": task_id,
        "task_status": out.get("task_status", "PENDING"),
        "request_id": rid,
        "base_url": base_url,
        "region": region,
        "model": model,
        "submitted_at": submitted_at,
        "fingerprint": fp,
    }
    return _task_from_wire(fields, Task)


def parse_result(data: object, *, task_id: str, base_url: str | None = None) -> TaskResult:
    out, rid = _output(data, "query")
    fields, extra = _split(out, _RESULT_KEYS)
    if not to_str(fields.get("task_id")):
        fields["task_id"] = task_id
    if "task_status" not in fields:
        fields["task_status"] = None
    usage = data.get("usage") if isinstance(data, Mapping) else None
    fields["request_id"] = rid
    fields["usage"] = usage if isinstance(usage, Mapping) else None
    fields["base_url"] = base_url
    fields["extra"] = extra
    return _result_from_wire(fields, TaskResult)


@attrs.frozen(kw_only=True)
class ListPage:
    """One page of the list answer."""

    items: tuple[TaskSummary, ...] = ()
    total: int | None = None
    total_page: int | None = None
    page_no: int | None = None
    page_size: int | None = None
    request_id: str | None = None


_list_from_wire = make_dict_structure_fn(ListPage, _api, items=override(rename="data"))


def parse_list(data: object) -> ListPage:
    if not isinstance(data, Mapping):
        raise _malformed("list", data)
    rows = data.get("data")
    if rows is not None and not isinstance(rows, list):
        raise _malformed("list", data, to_str(data.get("request_id")))
    return _list_from_wire(data, ListPage)


@attrs.frozen(kw_only=True)
class UploadPolicy:
    """A getPolicy answer: one policy serves several files until it expires."""

    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    expire_in_seconds: float = 300.0
    max_file_size_mb: float | None = None
    capacity_limit_mb: float | None = None
    oss_access_key_id: str
    x_oss_object_acl: str | None = None
    x_oss_forbid_overwrite: str | None = None
    obtained_at: float
    """``anyio.current_time()`` when it was obtained."""


_POLICY_REQUIRED: Final = ("policy", "signature", "upload_dir", "upload_host", "oss_access_key_id")
_policy_from_wire = make_dict_structure_fn(
    UploadPolicy,
    _api,
    expire_in_seconds=override(struct_hook=lambda v, _: to_float(v) or 300.0),
    obtained_at=override(struct_hook=_keep),
)


def parse_policy(data: object, *, obtained_at: float) -> UploadPolicy:
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), Mapping):
        raise _malformed("upload policy", data)
    d = data["data"]
    if any(not to_str(d.get(k)) for k in _POLICY_REQUIRED):
        raise _malformed("upload policy", data, to_str(data.get("request_id")))
    return _policy_from_wire({**d, "obtained_at": obtained_at}, UploadPolicy)


def parse_error_body(content: bytes) -> tuple[str | None, str | None, str | None]:
    """``(code, message, request_id)`` from an error answer, tolerating any body."""
    try:
        data = json.loads(content)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        text = content[:200].decode("utf-8", "replace").strip()
        return None, text or None, None
    if not isinstance(data, Mapping):
        return None, None, None
    return to_str(data.get("code")), to_str(data.get("message")), to_str(data.get("request_id"))


# --- the journal ------------------------------------------------------------------------


def _stored_time(value: Any, _: Any) -> datetime | None:
    """An ISO 8601 time as a journal stores it; ``None`` for anything else."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _stored_mapping(value: Any, _: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _enum_value(member: enum.StrEnum) -> str:
    return member.value


def _is_json_object(t: Any) -> bool:
    return bool(t == dict[str, Any])


_journal = cattrs.Converter(
    forbid_extra_keys=True, prefer_attrib_converters=True, detailed_validation=False
)
for _scalar in (str, str | None, int, int | None, float, float | None, bool | None):
    _journal.register_structure_hook(_scalar, _keep)
_journal.register_structure_hook(dict[str, Any] | None, _keep)
_journal.register_structure_hook_func(_is_json_object, _keep)
_journal.register_structure_hook_func(lambda t: t == Mapping[str, Any], _stored_mapping)
_journal.register_structure_hook(TaskStatus, _status)
_journal.register_structure_hook(datetime | None, _stored_time)
_journal.register_unstructure_hook(datetime, datetime.isoformat)
_journal.register_unstructure_hook(enum.StrEnum, _enum_value)  # before ``str`` in the MRO
_journal.register_unstructure_hook_func(_is_json_object, _keep)  # JSON values as they are

# A request: its set fields (unset ones and empty mappings left out), paths as strings.
_request_to_journal = make_dict_unstructure_fn(
    VideoRequest,
    _journal,
    _cattrs_omit_if_default=True,
    reference_urls=override(unstruct_hook=lambda refs: [os.fspath(r) for r in refs]),
    extra_input=override(unstruct_hook=dict),
    extra_parameters=override(unstruct_hook=dict),
)
_journal.register_unstructure_hook(VideoRequest, _request_to_journal)

# Usage: every field (``None`` included) and ``extra``.
_usage_to_journal = make_dict_unstructure_fn(Usage, _journal, extra=override(unstruct_hook=dict))
_journal.register_unstructure_hook(Usage, _usage_to_journal)
_usage_from_journal = make_dict_structure_fn(Usage, _journal, _cattrs_forbid_extra_keys=False)


def _structure_stored_usage(data: Any, _: Any) -> Usage:
    return _usage_from_journal(data, Usage) if isinstance(data, Mapping) else Usage()


_journal.register_structure_hook(Usage, _structure_stored_usage)

# TaskResult: the fields that are set, ``extra`` left out, in the order always stored.
_RESULT_ORDER: Final = (
    "task_id",
    "status",
    "raw_status",
    "request_id",
    "video_url",
    "code",
    "message",
    "orig_prompt",
    "base_url",
    "submit_time",
    "scheduled_time",
    "end_time",
    "usage",
)
_result_fields = make_dict_unstructure_fn(
    TaskResult, _journal, _cattrs_omit_if_default=True, extra=override(omit=True)
)


def _result_to_journal(result: TaskResult) -> dict[str, Any]:
    data = _result_fields(result)
    return {name: data[name] for name in _RESULT_ORDER if name in data}


_journal.register_unstructure_hook(TaskResult, _result_to_journal)
_journal.register_structure_hook(
    TaskResult, make_dict_structure_fn(TaskResult, _journal, _cattrs_forbid_extra_keys=False)
)


def journal_unstructure(obj: Any) -> Any:
    """A model or a journal record (any attrs class) as the JSON values a journal stores."""
    return _journal.unstructure(obj)


def journal_structure(data: Any, cls: type[T]) -> T:
    """A model or a journal record back from what `journal_unstructure` gave.

    Raises:
        TypeError: ``data`` lacks a required field or holds an unknown one (a record
            class's own converters and validators raise theirs too).
    """
    try:
        return _journal.structure(data, cls)
    except ForbiddenExtraKeysError as exc:
        raise TypeError(f"stored {cls.__name__} has unknown fields: {exc}") from None
    except KeyError as exc:
        raise TypeError(f"stored {cls.__name__} lacks the field {exc}") from None


def register_journal_record(cls: type) -> None:
    """Build the journal converter's functions for a record class (an attrs class whose
    own converters and validators check its fields) once, up front."""
    _journal.register_structure_hook(cls, make_dict_structure_fn(cls, _journal))
    _journal.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, _journal))


def json_text(value: Any, where: str) -> str:
    """Compact JSON text of stored values (non-ASCII kept, NaN refused).

    Raises:
        TypeError: ``value`` holds something JSON cannot encode (naming ``where``).
    """
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{where} must hold JSON values only: {exc}") from None


def request_to_dict(request: VideoRequest) -> dict[str, Any]:
    """The request's fields as JSON values: paths as strings, unset fields left out."""
    return _request_to_journal(request)


def request_from_dict(data: Mapping[str, Any]) -> VideoRequest:
    """Rebuild a `VideoRequest` from `request_to_dict`'s output.

    Raises:
        InvalidRequestError: the fields no longer make a valid request.
        TypeError: an unknown field.
    """
    return VideoRequest(**data)


def result_to_dict(result: TaskResult) -> dict[str, Any]:
    """A `TaskResult`'s essentials as JSON values (times as ISO 8601)."""
    return _result_to_journal(result)


def result_from_dict(data: Mapping[str, Any]) -> TaskResult:
    """The `TaskResult` stored by `result_to_dict` (its ``extra`` was not stored).

    Raises:
        TypeError: ``data`` lacks ``task_id`` or ``status``.
    """
    return journal_structure(data, TaskResult)


# --- the CLI's --json -------------------------------------------------------------------

_cli = _journal.copy()

_TASK_ORDER: Final = ("task_id", "status", "request_id", "model", "region", "base_url")
_task_fields = make_dict_unstructure_fn(
    Task, _cli, submitted_at=override(omit=True), fingerprint=override(omit=True)
)
_summary_to_json: Callable[[TaskSummary], dict[str, Any]] = make_dict_unstructure_fn(
    TaskSummary,
    _cli,
    start_time=override(omit=True),
    end_time=override(omit=True),
    region=override(omit=True),
    extra=override(omit=True),
)


def task_json(task: Task) -> dict[str, Any]:
    """``wanr2v submit --json``'s ``task``: id, status, request id, model, region, base URL."""
    data = _task_fields(task)
    return {name: data[name] for name in _TASK_ORDER}


def result_json(result: TaskResult) -> dict[str, Any]:
    """A result in ``--json`` output: the journal's shape (`result_to_dict`)."""
    return _result_to_journal(result)


def summary_json(row: TaskSummary) -> dict[str, Any]:
    """A ``wanr2v list --json`` row: id, status, raw status, model, request id, creation time."""
    return _summary_to_json(row)


def usage_json(usage: Usage) -> dict[str, Any]:
    """A `Usage` as a result's ``usage`` in ``--json`` output (every field, ``sr``, ``extra``)."""
    return _usage_to_journal(usage)
