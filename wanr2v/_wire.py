"""The one private cattrs converter: wire JSON <-> models.

Parsing is lenient, as the service adds fields and is loose with types: unknown keys
are kept in ``extra``, numbers may come as int, float or string, an unknown status
becomes ``TaskStatus.UNRECOGNIZED``, and a malformed answer raises a
`APIError`-family error, never a ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, TypeVar

import attrs
import cattrs

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


# --- the converter ----------------------------------------------------------------------


def build_converter() -> cattrs.Converter:
    """A fresh converter (never cattrs' global one)."""
    return cattrs.Converter(forbid_extra_keys=False)


def configure_converter(conv: cattrs.Converter) -> None:
    """Lenient hooks for scalars and the open ``Usage`` record."""
    conv.register_structure_hook(float | None, lambda v, _: to_float(v))
    conv.register_structure_hook(int | None, lambda v, _: to_int(v))
    conv.register_structure_hook(str | None, lambda v, _: to_str(v))
    conv.register_structure_hook(TaskStatus, lambda v, _: TaskStatus.parse(v))

    def structure_usage(data: Any, _: type) -> Usage:
        if not isinstance(data, Mapping):
            return Usage()
        known = {
            "duration",
            "size",
            "input_video_duration",
            "output_video_duration",
            "video_count",
            "SR",
        }
        return Usage(
            duration=to_float(data.get("duration")),
            size=to_str(data.get("size")),
            input_video_duration=to_float(data.get("input_video_duration")),
            output_video_duration=to_float(data.get("output_video_duration")),
            video_count=to_int(data.get("video_count")),
            sr=to_int(data.get("SR", data.get("sr"))),
            extra={k: v for k, v in data.items() if k not in known},
        )

    conv.register_structure_hook(Usage, structure_usage)


_converter = build_converter()
configure_converter(_converter)


def structure(data: Any, cls: type[T]) -> T:
    return _converter.structure(data, cls)


# --- requests ---------------------------------------------------------------------------


def request_body(req: VideoRequest, references: list[str] | None = None) -> dict[str, Any]:
    """The create body: ``{"model", "input", "parameters"}`` with only the fields set.

    Args:
        req: the request.
        references: the final reference URLs (local files replaced by ``oss://`` URLs);
            defaults to ``req.reference_urls``.
    """
    refs = references if references is not None else [os.fspath(r) for r in req.reference_urls]
    inp: dict[str, Any] = {"prompt": req.prompt}
    if req.negative_prompt is not None:
        inp["negative_prompt"] = req.negative_prompt
    inp["reference_urls"] = list(refs)
    inp.update(req.extra_input)
    params: dict[str, Any] = {}
    for name in ("size", "duration", "shot_type", "audio", "watermark", "seed", "prompt_extend"):
        value = getattr(req, name)
        if value is not None:
            params[name] = value
    params.update(req.extra_parameters)
    body: dict[str, Any] = {"model": req.model, "input": inp}
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
    return Task(
        task_id=task_id,
        status=TaskStatus.parse(out.get("task_status", "PENDING")),
        request_id=rid,
        base_url=base_url,
        region=region,
        model=model,
        submitted_at=submitted_at,
        fingerprint=fp,
    )


_RESULT_KEYS: Final = frozenset(
    {
        "task_id",
        "task_status",
        "submit_time",
        "scheduled_time",
        "end_time",
        "video_url",
        "orig_prompt",
        "code",
        "message",
    }
)


def parse_result(data: object, *, task_id: str, base_url: str | None = None) -> TaskResult:
    out, rid = _output(data, "query")
    raw_status = to_str(out.get("task_status"))
    usage_data = data.get("usage") if isinstance(data, Mapping) else None
    return TaskResult(
        task_id=to_str(out.get("task_id")) or task_id,
        status=TaskStatus.parse(raw_status),
        raw_status=raw_status,
        request_id=rid,
        submit_time=parse_service_time(out.get("submit_time")),
        scheduled_time=parse_service_time(out.get("scheduled_time")),
        end_time=parse_service_time(out.get("end_time")),
        video_url=to_str(out.get("video_url")),
        orig_prompt=to_str(out.get("orig_prompt")),
        code=to_str(out.get("code")),
        message=to_str(out.get("message")),
        usage=structure(usage_data, Usage) if isinstance(usage_data, Mapping) else None,
        base_url=base_url,
        extra={k: v for k, v in out.items() if k not in _RESULT_KEYS},
    )


@attrs.frozen(kw_only=True)
class ListPage:
    """One page of the list answer."""

    items: tuple[TaskSummary, ...]
    total: int | None
    total_page: int | None
    page_no: int | None
    page_size: int | None
    request_id: str | None


_SUMMARY_KEYS: Final = frozenset(
    {
        "task_id",
        "status",
        "task_status",
        "model_name",
        "request_id",
        "gmt_create",
        "start_time",
        "end_time",
        "region",
    }
)


def parse_list(data: object) -> ListPage:
    if not isinstance(data, Mapping):
        raise _malformed("list", data)
    rid = to_str(data.get("request_id"))
    rows = data.get("data")
    if rows is None:
        rows = []
    if not isinstance(rows, list):
        raise _malformed("list", data, rid)
    items = []
    for row in rows:
        if not isinstance(row, Mapping) or not to_str(row.get("task_id")):
            continue
        raw = to_str(row.get("status", row.get("task_status")))
        items.append(
            TaskSummary(
                task_id=to_str(row.get("task_id")) or "",
                status=TaskStatus.parse(raw),
                raw_status=raw,
                model_name=to_str(row.get("model_name")),
                request_id=to_str(row.get("request_id")),
                gmt_create=parse_epoch_ms(row.get("gmt_create")),
                start_time=parse_epoch_ms(row.get("start_time")),
                end_time=parse_epoch_ms(row.get("end_time")),
                region=to_str(row.get("region")),
                extra={k: v for k, v in row.items() if k not in _SUMMARY_KEYS},
            )
        )
    return ListPage(
        items=tuple(items),
        total=to_int(data.get("total")),
        total_page=to_int(data.get("total_page")),
        page_no=to_int(data.get("page_no")),
        page_size=to_int(data.get("page_size")),
        request_id=rid,
    )


@attrs.frozen(kw_only=True)
class UploadPolicy:
    """A getPolicy answer: one policy serves several files until it expires."""

    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    expire_in_seconds: float
    max_file_size_mb: float | None
    capacity_limit_mb: float | None
    oss_access_key_id: str
    x_oss_object_acl: str | None
    x_oss_forbid_overwrite: str | None
    obtained_at: float
    """``anyio.current_time()`` when it was obtained."""


def parse_policy(data: object, *, obtained_at: float) -> UploadPolicy:
    if not isinstance(data, Mapping) or not isinstance(data.get("data"), Mapping):
        raise _malformed("upload policy", data)
    d = data["data"]
    required = ("policy", "signature", "upload_dir", "upload_host", "oss_access_key_id")
    if any(not to_str(d.get(k)) for k in required):
        raise _malformed("upload policy", data, to_str(data.get("request_id")))
    return UploadPolicy(
        policy=to_str(d["policy"]) or "",
        signature=to_str(d["signature"]) or "",
        upload_dir=to_str(d["upload_dir"]) or "",
        upload_host=to_str(d["upload_host"]) or "",
        expire_in_seconds=to_float(d.get("expire_in_seconds")) or 300.0,
        max_file_size_mb=to_float(d.get("max_file_size_mb")),
        capacity_limit_mb=to_float(d.get("capacity_limit_mb")),
        oss_access_key_id=to_str(d["oss_access_key_id"]) or "",
        x_oss_object_acl=to_str(d.get("x_oss_object_acl")),
        x_oss_forbid_overwrite=to_str(d.get("x_oss_forbid_overwrite")),
        obtained_at=obtained_at,
    )


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
