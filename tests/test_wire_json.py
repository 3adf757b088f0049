"""JSON both ways through ``_wire``'s converters: the journal's stored format, the
CLI's ``--json`` shapes and the service's wire.

- A journal written by wanr2v before the converters (schema 2) loads: the stored texts
  below were copied from what that code wrote, and the new code writes them again byte
  for byte.
- ``task_json`` / ``result_json`` / ``summary_json`` / ``usage_json`` give exactly the
  documents ``wanr2v ... --json`` printed (keys, values and key order).
- Round trips: a result, a request and a record read back equal from what was stored
  (a result's ``extra`` is not stored), for hand-picked and generated values.
- The service's wire: unknown keys land in ``extra`` and nowhere else, the spellings
  the service uses are read, a bad envelope is ``MalformedResponse``.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wanr2v import APIError
from wanr2v._models import Task, TaskResult, TaskStatus, Usage, VideoRequest
from wanr2v._wire import (
    SERVICE_TZ,
    json_text,
    parse_created,
    parse_list,
    parse_policy,
    parse_result,
    request_body,
    request_from_dict,
    request_to_dict,
    result_from_dict,
    result_json,
    result_to_dict,
    summary_json,
    task_json,
    usage_json,
)
from wanr2v.journal import SQLiteJournal, SubmissionRecord, SubmissionState
from wanr2v.journal._base import record_from_dict, record_to_dict
from wanr2v.journal._redis import _decode, _encode

BASE_URL = "https://dashscope-intl.aliyuncs.com/api/v1"

# --- what wanr2v stored before the converters (copied from its output) -------------------

STORED_REQUEST = (
    '{"model":"wan2.6-r2v-flash","prompt":"character1 waves — 日本語","reference_urls":'
    '["https://example.com/a.mp4","oss://b/c.png"],"size":"1280*720","duration":5,'
    '"audio":false,"seed":7,"extra_parameters":{"knob":1}}'
)
STORED_BODY = (
    '{"model":"wan2.6-r2v-flash","input":{"prompt":"character1 waves — 日本語",'
    '"reference_urls":["https://example.com/a.mp4","oss://b/c.png"]},"parameters":'
    '{"size":"1280*720","duration":5,"audio":false,"seed":7,"knob":1}}'
)
STORED_RESULT = (
    '{"task_id":"t-77","status":"SUCCEEDED","raw_status":"SUCCEEDED","request_id":"rq-9",'
    '"video_url":"https://dashscope-result.example/t-77.mp4?Expires=1","orig_prompt":'
    '"character1 waves","base_url":"https://dashscope-intl.aliyuncs.com/api/v1",'
    '"submit_time":"2025-12-16T00:25:09.123000+08:00","scheduled_time":'
    '"2025-12-16T00:25:10+08:00","end_time":"2025-12-16T00:25:59.869000+08:00","usage":'
    '{"duration":7.5,"size":"1280*720","input_video_duration":2.5,'
    '"output_video_duration":5.0,"video_count":1,"sr":720,"extra":{"future":"x"}}}'
)
STORED_ROW: tuple[Any, ...] = (
    "0b4f3c2e-1111-4a2b-9c3d-000000000002",
    "line-3",
    STORED_REQUEST,
    "DOWNLOADED",
    "ab" * 32,
    STORED_BODY,
    "t-77",
    BASE_URL,
    "singapore",
    "wan2.6-r2v-flash",
    1765815909.5,
    "SUCCEEDED",
    "https://dashscope-result.example/t-77.mp4?Expires=1",
    STORED_RESULT,
    "/out/line-3.mp4",
    None,
    None,
    None,
    1,
    1765815900.25,
    1765815990.75,
)
"""One ``submissions`` row, column by column, as the SQLite journal wrote it."""
STORED_REDIS = (
    '{"submission_id":"0b4f3c2e-1111-4a2b-9c3d-000000000002","batch_key":"line-3",'
    f'"request":{STORED_REQUEST},"state":"DOWNLOADED","fingerprint":"{"ab" * 32}",'
    f'"body":{STORED_BODY},"task_id":"t-77","base_url":"{BASE_URL}","region":"singapore",'
    '"model":"wan2.6-r2v-flash","sent_at":1765815909.5,"status":"SUCCEEDED","video_url":'
    '"https://dashscope-result.example/t-77.mp4?Expires=1",'
    f'"result":{STORED_RESULT},"download_path":"/out/line-3.mp4","error_type":null,'
    '"error_code":null,"error_message":null,"attempts":1,"created_at":1765815900.25,'
    '"updated_at":1765815990.75}'
)
"""One record as the Redis journal wrote it (the value in its ``records`` hash)."""

# The SQLite journal's schema 2, as that code created it.
SCHEMA_2 = """
CREATE TABLE submissions (
    submission_id  TEXT PRIMARY KEY,
    batch_key      TEXT NOT NULL,
    request        TEXT NOT NULL,
    state          TEXT NOT NULL,
    fingerprint    TEXT,
    body           TEXT,
    task_id        TEXT,
    base_url       TEXT,
    region         TEXT,
    model          TEXT,
    sent_at        REAL,
    status         TEXT,
    video_url      TEXT,
    result         TEXT,
    download_path  TEXT,
    error_type     TEXT,
    error_code     TEXT,
    error_message  TEXT,
    attempts       INTEGER NOT NULL DEFAULT 0,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL
);
CREATE UNIQUE INDEX submissions_batch_key ON submissions (batch_key);
CREATE UNIQUE INDEX submissions_task_id ON submissions (task_id) WHERE task_id IS NOT NULL;
CREATE INDEX submissions_state ON submissions (state);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE owner (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    token         TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    host          TEXT NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL,
    ttl           REAL NOT NULL
);
"""

REQUEST = VideoRequest(
    model="wan2.6-r2v-flash",
    prompt="character1 waves — 日本語",
    reference_urls=["https://example.com/a.mp4", "oss://b/c.png"],
    size="1280*720",
    duration=5,
    audio=False,
    seed=7,
    extra_parameters={"knob": 1},
)
USAGE = Usage(
    duration=7.5,
    size="1280*720",
    input_video_duration=2.5,
    output_video_duration=5.0,
    video_count=1,
    sr=720,
    extra={"future": "x"},
)
RESULT = TaskResult(
    task_id="t-77",
    status=TaskStatus.SUCCEEDED,
    raw_status="SUCCEEDED",
    request_id="rq-9",
    submit_time=datetime(2025, 12, 16, 0, 25, 9, 123000, tzinfo=SERVICE_TZ),
    scheduled_time=datetime(2025, 12, 16, 0, 25, 10, tzinfo=SERVICE_TZ),
    end_time=datetime(2025, 12, 16, 0, 25, 59, 869000, tzinfo=SERVICE_TZ),
    video_url="https://dashscope-result.example/t-77.mp4?Expires=1",
    orig_prompt="character1 waves",
    usage=USAGE,
    base_url=BASE_URL,
)
RECORD = SubmissionRecord(
    submission_id="0b4f3c2e-1111-4a2b-9c3d-000000000002",
    batch_key="line-3",
    request=json.loads(STORED_REQUEST),
    state=SubmissionState.DOWNLOADED,
    fingerprint="ab" * 32,
    body=json.loads(STORED_BODY),
    task_id="t-77",
    base_url=BASE_URL,
    region="singapore",
    model="wan2.6-r2v-flash",
    sent_at=1765815909.5,
    status="SUCCEEDED",
    video_url="https://dashscope-result.example/t-77.mp4?Expires=1",
    result=json.loads(STORED_RESULT),
    download_path="/out/line-3.mp4",
    attempts=1,
    created_at=1765815900.25,
    updated_at=1765815990.75,
)
# The vendor's answer the stored result came from.
ANSWER = {
    "request_id": "rq-9",
    "output": {
        "task_id": "t-77",
        "task_status": "SUCCEEDED",
        "submit_time": "2025-12-16 00:25:09.123",
        "scheduled_time": "2025-12-16 00:25:10.000",
        "end_time": "2025-12-16 00:25:59.869",
        "video_url": "https://dashscope-result.example/t-77.mp4?Expires=1",
        "orig_prompt": "character1 waves",
        "new_field": 3,
    },
    "usage": {
        "duration": 7.5,
        "input_video_duration": 2.5,
        "output_video_duration": 5,
        "video_count": 1,
        "SR": 720,
        "size": "1280*720",
        "future": "x",
    },
}


def write_schema_2_journal(path: Path, row: tuple[Any, ...] = STORED_ROW) -> None:
    """A journal file as wanr2v's schema-2 code left it, holding ``row``."""
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA_2)
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            "INSERT INTO meta VALUES (?, ?), (?, ?)",
            ("journal_id", '"7d0c7a1e-0000-4000-8000-000000000000"', "created_at", "1765815900.0"),
        )
        conn.execute(f"INSERT INTO submissions VALUES ({', '.join('?' for _ in row)})", row)
        conn.commit()
    finally:
        conn.close()


# --- the journal's stored format -------------------------------------------------------


@pytest.mark.anyio
async def test_a_journal_written_before_the_converters_loads_and_is_written_alike(
    tmp_path: Path,
) -> None:
    """A schema-2 journal's record loads whole (request, result, usage, times), and an
    update writes its JSON columns back byte for byte."""
    path = tmp_path / "old.db"
    write_schema_2_journal(path)
    async with SQLiteJournal(path) as journal:
        rec = await journal.get(RECORD.submission_id)
        assert rec == RECORD
        assert rec is not None
        assert rec.video_request() == attrs.evolve(
            REQUEST, reference_urls=("https://example.com/a.mp4", "oss://b/c.png")
        )
        assert result_from_dict(rec.result or {}) == RESULT
        await journal.update(rec.submission_id, error_message="noted")
    conn = sqlite3.connect(path)
    try:
        request, body, result, message = conn.execute(
            "SELECT request, body, result, error_message FROM submissions"
        ).fetchone()
    finally:
        conn.close()
    assert (request, body, result, message) == (
        STORED_REQUEST,
        STORED_BODY,
        STORED_RESULT,
        "noted",
    )


def test_a_redis_record_written_before_the_converters_decodes_and_encodes_alike() -> None:
    """The Redis journal reads a stored record and writes the same text back."""
    rec = _decode(STORED_REDIS)
    assert rec == RECORD
    assert _encode(rec) == STORED_REDIS


def test_what_is_stored_is_what_was_stored_before() -> None:
    """A request, a result (parsed from the vendor's answer) and a record become the
    same stored texts as before; the body sent is the same too."""
    assert json_text(request_to_dict(REQUEST), "request") == STORED_REQUEST
    assert json_text(request_body(REQUEST), "body") == STORED_BODY
    parsed = parse_result(ANSWER, task_id="t-77", base_url=BASE_URL)
    assert parsed == attrs.evolve(RESULT, extra={"new_field": 3})
    assert json_text(result_to_dict(parsed), "result") == STORED_RESULT
    assert json_text(record_to_dict(RECORD), "record") == STORED_REDIS
    assert type(record_to_dict(RECORD)["state"]) is str


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (
            {"task_id": "t-80", "status": "UNRECOGNIZED", "raw_status": "PAUSED"},
            TaskResult(task_id="t-80", status=TaskStatus.UNRECOGNIZED, raw_status="PAUSED"),
        ),
        (
            {
                "task_id": "t-78",
                "status": "FAILED",
                "raw_status": "FAILED",
                "request_id": "rq-f",
                "code": "DataInspectionFailed",
                "message": "bad input",
                "submit_time": "2025-12-16T00:25:09+08:00",
            },
            TaskResult(
                task_id="t-78",
                status=TaskStatus.FAILED,
                raw_status="FAILED",
                request_id="rq-f",
                code="DataInspectionFailed",
                message="bad input",
                submit_time=datetime(2025, 12, 16, 0, 25, 9, tzinfo=SERVICE_TZ),
            ),
        ),
        (
            {"task_id": "t-1", "status": "SUCCEEDED", "usage": {"duration": 10.0}, "later": 1},
            TaskResult(task_id="t-1", status=TaskStatus.SUCCEEDED, usage=Usage(duration=10.0)),
        ),
    ],
)
def test_stored_results_read_back(stored: dict[str, Any], expected: TaskResult) -> None:
    """Stored results of every kind read back; a key a later version adds is ignored."""
    assert result_from_dict(stored) == expected


def test_a_stored_record_with_a_missing_unknown_or_mistyped_field_is_a_type_error() -> None:
    """A record that is not what a store writes is refused with TypeError, as before
    (an unknown field is not dropped: the next update would lose it)."""
    data = record_to_dict(RECORD)
    with pytest.raises(TypeError, match="later"):
        record_from_dict({**data, "later": 1})
    with pytest.raises(TypeError, match="submission_id"):
        record_from_dict({k: v for k, v in data.items() if k != "submission_id"})
    with pytest.raises(TypeError):
        record_from_dict({**data, "task_id": 5})
    with pytest.raises(TypeError):
        record_from_dict({**data, "attempts": "1"})
    with pytest.raises(ValueError):
        record_from_dict({**data, "state": "LOST"})


# --- the CLI's --json -------------------------------------------------------------------


def test_cli_task_shape() -> None:
    """``submit --json``'s task: six keys in this order, the submit time and fingerprint left out."""
    task = parse_created(
        {"request_id": "rc", "output": {"task_id": "t-77", "task_status": "PENDING"}},
        base_url=BASE_URL,
        region="singapore",
        model="wan2.6-r2v-flash",
        submitted_at=1765815909.5,
        fp="ab" * 32,
    )
    assert list(task_json(task).items()) == [
        ("task_id", "t-77"),
        ("status", "PENDING"),
        ("request_id", "rc"),
        ("model", "wan2.6-r2v-flash"),
        ("region", "singapore"),
        ("base_url", BASE_URL),
    ]
    assert type(task_json(task)["status"]) is str  # the value, not the enum
    assert list(task_json(Task(task_id="t")).items()) == [
        ("task_id", "t"),
        ("status", "PENDING"),
        ("request_id", None),
        ("model", None),
        ("region", None),
        ("base_url", None),
    ]


@pytest.mark.parametrize(
    ("result", "shape"),
    [
        (RESULT, json.loads(STORED_RESULT)),
        (
            TaskResult(
                task_id="t-78",
                status=TaskStatus.FAILED,
                raw_status="FAILED",
                request_id="rq-f",
                code="DataInspectionFailed",
                message="bad input",
                submit_time=datetime(2025, 12, 16, 0, 25, 9, tzinfo=SERVICE_TZ),
            ),
            {
                "task_id": "t-78",
                "status": "FAILED",
                "raw_status": "FAILED",
                "request_id": "rq-f",
                "code": "DataInspectionFailed",
                "message": "bad input",
                "submit_time": "2025-12-16T00:25:09+08:00",
            },
        ),
        (
            TaskResult(task_id="t-79", status=TaskStatus.RUNNING, raw_status="RUNNING"),
            {"task_id": "t-79", "status": "RUNNING", "raw_status": "RUNNING"},
        ),
        (
            TaskResult(
                task_id="t-80",
                status=TaskStatus.UNRECOGNIZED,
                raw_status="PAUSED",
                extra={"not": "shown"},
            ),
            {"task_id": "t-80", "status": "UNRECOGNIZED", "raw_status": "PAUSED"},
        ),
    ],
)
def test_cli_result_shape(result: TaskResult, shape: dict[str, Any]) -> None:
    """A result in ``--json``: set fields only, times in ISO 8601, in the printed order."""
    assert list(result_json(result).items()) == list(shape.items())
    assert all(type(v) in (str, dict) for v in result_json(result).values())  # no enums


def test_cli_summary_shape() -> None:
    """A ``list --json`` row: six keys in order, ``None`` kept, the creation time in UTC."""
    page = parse_list(
        {
            "data": [
                {
                    "task_id": "a",
                    "status": "SUCCEEDED",
                    "model_name": "wan2.6-r2v",
                    "request_id": "rqa",
                    "gmt_create": 1765815909123,
                    "start_time": 1765815910000,
                    "region": "ap-southeast-1",
                    "x": 1,
                },
                {"task_id": "b", "task_status": "weird"},
            ]
        }
    )
    assert [list(summary_json(row).items()) for row in page.items] == [
        [
            ("task_id", "a"),
            ("status", "SUCCEEDED"),
            ("raw_status", "SUCCEEDED"),
            ("model_name", "wan2.6-r2v"),
            ("request_id", "rqa"),
            ("gmt_create", "2025-12-15T16:25:09.123000+00:00"),
        ],
        [
            ("task_id", "b"),
            ("status", "UNRECOGNIZED"),
            ("raw_status", "weird"),
            ("model_name", None),
            ("request_id", None),
            ("gmt_create", None),
        ],
    ]


def test_cli_usage_shape() -> None:
    """A usage: every field (``None`` too), ``sr`` lower-case, ``extra`` last."""
    assert list(usage_json(USAGE).items()) == list(json.loads(STORED_RESULT)["usage"].items())
    assert usage_json(Usage()) == {
        "duration": None,
        "size": None,
        "input_video_duration": None,
        "output_video_duration": None,
        "video_count": None,
        "sr": None,
        "extra": {},
    }


# --- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        RESULT,
        attrs.evolve(RESULT, usage=None),
        attrs.evolve(RESULT, video_url=None, usage=Usage()),
        TaskResult(
            task_id="t-2",
            status=TaskStatus.FAILED,
            raw_status="FAILED",
            code="InternalError",
            message="boom",
            end_time=datetime(2025, 1, 1, 12, 0, tzinfo=UTC),
        ),
        TaskResult(task_id="t-3", status=TaskStatus.PENDING),
        TaskResult(task_id="t-4", status=TaskStatus.RUNNING, submit_time=datetime(2025, 1, 1)),
    ],
    ids=["full", "no-usage", "no-url-empty-usage", "failed", "bare", "naive-time"],
)
def test_a_result_round_trips_through_the_journal(result: TaskResult) -> None:
    """structure(unstructure(result)) == result, through JSON text."""
    assert result_from_dict(json.loads(json_text(result_to_dict(result), "r"))) == result


def test_a_request_and_a_record_round_trip_through_the_journal() -> None:
    """A request and a record read back equal from their stored JSON."""
    assert request_from_dict(json.loads(STORED_REQUEST)) == REQUEST
    assert request_from_dict(request_to_dict(REQUEST)) == REQUEST
    assert record_from_dict(json.loads(json_text(record_to_dict(RECORD), "r"))) == RECORD
    bare = SubmissionRecord.new("k", REQUEST, created_at=1.0, updated_at=2.0)
    assert record_from_dict(record_to_dict(bare)) == bare


_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
_text = st.none() | st.text(max_size=8)
_float = st.none() | st.floats(allow_nan=False, allow_infinity=False)
_int = st.none() | st.integers(-(2**40), 2**40)
_time = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([None, UTC, SERVICE_TZ]),
)
_usages = st.builds(
    Usage,
    duration=_float,
    size=_text,
    input_video_duration=_float,
    output_video_duration=_float,
    video_count=_int,
    sr=_int,
    extra=st.dictionaries(st.text(max_size=4), _json, max_size=3),
)
_results = st.builds(
    TaskResult,
    task_id=st.text(min_size=1, max_size=8),
    status=st.sampled_from(TaskStatus),
    raw_status=_text,
    request_id=_text,
    submit_time=_time,
    scheduled_time=_time,
    end_time=_time,
    video_url=_text,
    orig_prompt=_text,
    code=_text,
    message=_text,
    usage=st.none() | _usages,
    base_url=_text,
)


@settings(max_examples=150, deadline=None, database=None)
@given(result=_results)
def test_generated_results_round_trip_through_the_journal(result: TaskResult) -> None:
    """Any result without ``extra`` reads back equal from its stored JSON, in a record."""
    stored = json.loads(json_text(result_to_dict(result), "r"))
    assert result_from_dict(stored) == result
    rec = SubmissionRecord.new("k", REQUEST, result=stored, status=result.status.value)
    back = record_from_dict(json.loads(json_text(record_to_dict(rec), "rec")))
    assert back == rec
    assert result_from_dict(back.result or {}) == result


# --- the service's wire -----------------------------------------------------------------


_RESULT_WIRE_KEYS = {
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
_USAGE_WIRE_KEYS = {
    "duration",
    "size",
    "input_video_duration",
    "output_video_duration",
    "video_count",
    "SR",
    "sr",
}
_ms_time = st.none() | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=SERVICE_TZ))
_wire_usages = st.builds(
    Usage,
    duration=_float,
    size=_text,
    input_video_duration=_float,
    output_video_duration=_float,
    video_count=st.none() | st.integers(-(2**52), 2**52),
    sr=st.none() | st.integers(-(2**52), 2**52),
    extra=st.dictionaries(
        st.text(max_size=4).filter(lambda k: k not in _USAGE_WIRE_KEYS), _json, max_size=3
    ),
)


@st.composite
def _service_results(draw: st.DrawFn) -> TaskResult:
    raw = draw(st.none() | st.sampled_from(["SUCCEEDED", "running", " FAILED ", "PAUSED"]))
    return TaskResult(
        task_id=draw(st.text(min_size=1, max_size=8)),
        status=TaskStatus.parse(raw),
        raw_status=raw,
        request_id=draw(_text),
        submit_time=draw(_ms_time),
        scheduled_time=draw(_ms_time),
        end_time=draw(_ms_time),
        video_url=draw(_text),
        orig_prompt=draw(_text),
        code=draw(_text),
        message=draw(_text),
        usage=draw(st.none() | _wire_usages),
        base_url=draw(_text),
        extra=draw(
            st.dictionaries(
                st.text(max_size=6).filter(lambda k: k not in _RESULT_WIRE_KEYS),
                _json,
                max_size=3,
            )
        ),
    )


def _service_answer(r: TaskResult) -> dict[str, Any]:
    """What the service would send for ``r`` (written by hand, independently of _wire)."""

    def when(t: datetime | None) -> str | None:
        return (
            None if t is None else t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"
        )

    output = {
        **r.extra,
        "task_id": r.task_id,
        "task_status": r.raw_status,
        "submit_time": when(r.submit_time),
        "scheduled_time": when(r.scheduled_time),
        "end_time": when(r.end_time),
        "video_url": r.video_url,
        "orig_prompt": r.orig_prompt,
        "code": r.code,
        "message": r.message,
    }
    answer: dict[str, Any] = {"request_id": r.request_id, "output": output}
    if r.usage is not None:
        u = r.usage
        answer["usage"] = {
            **u.extra,
            "duration": u.duration,
            "size": u.size,
            "input_video_duration": u.input_video_duration,
            "output_video_duration": u.output_video_duration,
            "video_count": u.video_count,
            "SR": u.sr,
        }
    return answer


@settings(max_examples=150, deadline=None, database=None)
@given(result=_service_results())
def test_generated_service_answers_parse_to_their_result(result: TaskResult) -> None:
    """An answer written from a result (the service's key names, time format and status
    strings, unknown keys beside the known ones) parses back to that result."""
    answer = json.loads(json.dumps(_service_answer(result)))
    assert parse_result(answer, task_id="unused", base_url=result.base_url) == result


def test_unknown_result_keys_land_in_extra_and_nowhere_else() -> None:
    """Every key of ``output`` the model does not read is kept in ``extra``, including
    keys named like fields that come from elsewhere (``request_id``, ``usage``)."""
    answer = {
        "request_id": "top",
        "usage": {"duration": 5, "SR": "1080", "extra": 1},
        "output": {
            "task_id": 42,
            "task_status": " succeeded ",
            "submit_time": "2025-12-16 00:25:09",
            "code": 7,
            "request_id": "inner",
            "usage": "inner",
            "base_url": "inner",
            "raw_status": "inner",
            "extra": "inner",
        },
    }
    r = parse_result(answer, task_id="fallback", base_url=BASE_URL)
    assert (r.task_id, r.status, r.raw_status, r.request_id, r.base_url, r.code) == (
        "42",
        TaskStatus.SUCCEEDED,
        " succeeded ",
        "top",
        BASE_URL,
        "7",
    )
    assert r.submit_time == datetime(2025, 12, 16, 0, 25, 9, tzinfo=SERVICE_TZ)
    assert r.extra == {
        k: "inner" for k in ("request_id", "usage", "base_url", "raw_status", "extra")
    }
    assert r.usage == Usage(duration=5.0, sr=1080, extra={"extra": 1})


def test_missing_result_fields_fall_back() -> None:
    """No ``task_id``: the caller's; no status: UNRECOGNIZED; no ``usage``: None."""
    r = parse_result({"output": {"task_id": ""}}, task_id="mine")
    assert r == TaskResult(task_id="mine", status=TaskStatus.UNRECOGNIZED)


def test_usage_reads_sr_in_either_case() -> None:
    """``SR`` is the service's spelling; ``sr`` is read when ``SR`` is absent (and kept
    in ``extra``, as before); non-numbers become None."""
    r = parse_result({"output": {}, "usage": {"sr": 720, "video_count": "x"}}, task_id="t")
    assert r.usage == Usage(sr=720, extra={"sr": 720})
    r = parse_result({"output": {}, "usage": {"SR": 1080, "sr": 720}}, task_id="t")
    assert r.usage == Usage(sr=1080, extra={"sr": 720})


def test_list_rows_take_either_status_key_and_skip_rows_without_an_id() -> None:
    """A row's ``status`` wins over ``task_status``; rows without a task id are skipped;
    times are epoch milliseconds; the page's numbers are lenient."""
    page = parse_list(
        {
            "request_id": "l",
            "total": "3",
            "page_no": 1.0,
            "data": [
                {"task_id": "a", "status": "RUNNING", "task_status": "FAILED", "end_time": 0},
                {"task_id": "b", "task_status": "FAILED", "start_time": "nope"},
                {"status": "SUCCEEDED"},
                "junk",
            ],
        }
    )
    assert (page.total, page.total_page, page.page_no, page.request_id) == (3, None, 1, "l")
    assert [(s.task_id, s.status, s.raw_status) for s in page.items] == [
        ("a", TaskStatus.RUNNING, "RUNNING"),
        ("b", TaskStatus.FAILED, "FAILED"),
    ]
    assert page.items[0].end_time == datetime(1970, 1, 1, tzinfo=UTC)
    assert page.items[1].start_time is None
    assert page.items[0].extra == {}
    assert parse_list({}).items == ()


@pytest.mark.parametrize(
    "answer",
    [None, [], {"output": []}, {"request_id": "r", "output": "x"}],
)
def test_a_bad_envelope_is_malformed_response(answer: Any) -> None:
    """A query answer without an ``output`` object is a MalformedResponse APIError."""
    with pytest.raises(APIError) as info:
        parse_result(answer, task_id="t")
    assert info.value.code == "MalformedResponse"


def test_a_create_without_a_task_id_is_malformed_and_the_status_defaults_to_pending() -> None:
    """A create answer must name its task; an absent status is PENDING."""
    kw: dict[str, Any] = {
        "base_url": BASE_URL,
        "region": "singapore",
        "model": "m",
        "submitted_at": 1.0,
        "fp": "f",
    }
    with pytest.raises(APIError, match="Malformed create"):
        parse_created({"request_id": "r", "output": {"task_status": "PENDING"}}, **kw)
    task = parse_created({"output": {"task_id": 9}}, **kw)
    assert task == Task(
        task_id="9",
        status=TaskStatus.PENDING,
        base_url=BASE_URL,
        region="singapore",
        model="m",
        submitted_at=1.0,
        fingerprint="f",
    )


def test_upload_policy_defaults_and_required_fields() -> None:
    """A policy needs its five strings; the expiry defaults to 300 s; numbers are lenient."""
    data = {
        "policy": "p",
        "signature": "s",
        "upload_dir": "d",
        "upload_host": "https://h",
        "oss_access_key_id": "k",
        "max_file_size_mb": "100",
        "obtained_at": 99,
    }
    policy = parse_policy({"data": data}, obtained_at=5.0)
    assert (policy.expire_in_seconds, policy.max_file_size_mb, policy.obtained_at) == (
        300.0,
        100.0,
        5.0,
    )
    assert (
        parse_policy({"data": {**data, "expire_in_seconds": 0}}, obtained_at=5.0).expire_in_seconds
        == 300.0
    )
    with pytest.raises(APIError, match="Malformed upload policy"):
        parse_policy({"data": {**data, "signature": ""}}, obtained_at=5.0)


def test_the_create_body_keeps_the_documented_order_and_the_final_references() -> None:
    """input: prompt, negative prompt, references, extras; parameters only when set."""
    req = VideoRequest(
        model="wan2.6-r2v",
        prompt="character1 walks",
        reference_urls=["/tmp/a.mp4"],
        negative_prompt="blur",
        extra_input={"future": True},
    )
    body = request_body(req, ["oss://up/a.mp4"])
    assert json.dumps(body) == json.dumps(
        {
            "model": "wan2.6-r2v",
            "input": {
                "prompt": "character1 walks",
                "negative_prompt": "blur",
                "reference_urls": ["oss://up/a.mp4"],
                "future": True,
            },
        }
    )
    assert request_body(req)["input"]["reference_urls"] == ["/tmp/a.mp4"]


def test_wire_imports_only_models_and_exceptions() -> None:
    """``_wire`` depends on ``_models`` and ``_exceptions`` only among wanr2v's modules
    (the journal, the client and the CLI import it, never the reverse)."""
    import ast

    import wanr2v._wire as wire

    tree = ast.parse(Path(wire.__file__).read_text())
    local = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
    }
    assert local == {"_models", "_exceptions"}
