"""The emulator's state: regions, accounts, tasks, the schedule, uploads and counters.

Nothing here waits. The world advances lazily: each request first moves the
schedule to "now" on the emulator clock, popping due events from one heap
(a task's end frees its slot and starts the next queued task, at the time of
the event, not of the request). So 10,000 tasks cost 10,000 heap entries and
no coroutine at all. One lock guards everything, so the Python API (stats,
faults, clock) is safe from any thread while uvicorn serves in another.

The world knobs (``EmulatorConfig.list_lag``, ``query_lag``, ``commit_delay``,
``prompt_normalization``, ``page_size_cap``; `Emulator.set_world` at run time)
make the service less kind than the vendor's best case. A create delayed by
``commit_delay`` waits in a second heap and commits, in time order with the ends
before it, when the world next advances past its commit time.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import functools
import hashlib
import heapq
import hmac
import itertools
import json
import math
import os
import random
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import attrs

import wanr2v.testing._rules as _rules
from wanr2v.testing._clock import Clock, ScaledClock
from wanr2v.testing._config import WORLD_KNOBS, EmulatorConfig, Quotas, RegionConfig
from wanr2v.testing._faults import Faults
from wanr2v.testing._mp4 import make_mp4
from wanr2v.testing._records import Answer, EmulatorStats, HostRequest, TaskRecord
from wanr2v.testing._validation import (
    Invalid,
    ValidRequest,
    billed_usage,
    fails_at_inspection,
    validate,
)

if TYPE_CHECKING:
    import httpx

    from wanr2v.testing._app import ASGIApp

__all__ = ["Answer", "Emulator"]

_FINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"})
IN_PROCESS_ORIGIN = "http://wanr2v-emulator.local"


@attrs.define(eq=False)
class _Task:
    task_id: str
    region: str
    account: str
    api_key_id: str
    model: str
    request_id: str
    submit: float
    generation_time: float
    request: ValidRequest
    failure: tuple[str, str] | None
    duplicate: bool
    scheduled: float | None = None
    end: float | None = None
    canceled: bool = False
    first_final: float | None = None
    first_final_mono: float | None = None
    script: tuple[tuple[str, int | None], ...] | None = None  # see Emulator.script_polls
    polls: int = 0
    scripted: str | None = None

    def status(self, now: float) -> str:
        if self.canceled:
            return "CANCELED"
        if self.scripted is not None:
            return self.scripted
        if self.end is not None and now >= self.end:
            return "FAILED" if self.failure else "SUCCEEDED"
        if self.scheduled is not None and now >= self.scheduled:
            return "RUNNING"
        return "PENDING"


@attrs.define(eq=False)
class _Pool:
    """The running slots of one (account, model) in one region, and its FIFO queue."""

    limit: int | None
    running: int = 0
    queue: collections.deque[_Task] = attrs.field(factory=collections.deque)


@attrs.define(eq=False)
class _Region:
    name: str
    keys: Mapping[str, str]
    quotas: Quotas
    caps: _rules.RegionCapabilities
    tasks: dict[str, _Task] = attrs.field(factory=dict)
    pools: dict[tuple[str, str], _Pool] = attrs.field(factory=dict)
    windows: dict[tuple[str, ...], collections.deque[float]] = attrs.field(factory=dict)


@attrs.define(eq=False)
class _Upload:
    region: str
    model: str
    name: str
    data: bytes
    expires: float


def _error(status: int, code: str, message: str, request_id: str, **headers: str) -> Answer:
    return Answer(
        status,
        {"request_id": request_id, "code": code, "message": message},
        tuple((k.replace("_", "-"), v) for k, v in headers.items()),
    )


def _oss_error(status: int, code: str, message: str, request_id: str, **extra: str) -> Answer:
    fields = "".join(f"  <{k}>{v}</{k}>\n" for k, v in extra.items())
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>\n'
        f"  <Code>{code}</Code>\n  <Message>{message}</Message>\n"
        f"  <RequestId>{request_id}</RequestId>\n  <HostId>wanr2v-emulator</HostId>\n"
        f"{fields}</Error>\n"
    )
    return Answer(status, xml.encode(), (("x-oss-request-id", request_id),), "application/xml")


@functools.lru_cache(maxsize=65536)
def format_time(t: float) -> str:
    """Format emulator time as the vendor does: ``YYYY-MM-DD HH:mm:ss.SSS`` (UTC+8)."""
    d = dt.datetime.fromtimestamp(t, _rules.TIMEZONE)
    return d.strftime("%Y-%m-%d %H:%M:%S.") + f"{d.microsecond // 1000:03d}"


def _iso_utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class Emulator:
    """A fake DashScope task service: state and behaviour, without any server.

    Serve it with `serve`, or use it in process through
    `transport` (an httpx transport) or `app` (the ASGI app).

    Args:
        config: How to set it up (default: one region, quotas as the vendor's,
            real time, any ``sk-...`` key).

    Attributes:
        config: The configuration.
        clock: The emulator clock (a `ScaledClock` unless one was given).
        seed: The seed of every random draw (drawn at random when not configured).
        faults: The fault-injection rules.
    """

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config: EmulatorConfig = config or EmulatorConfig()
        config = self.config
        self.clock: Clock = config.clock or ScaledClock(config.time_scale)
        self.seed: int = (
            config.seed if config.seed is not None else random.SystemRandom().randrange(2**32)
        )
        self.faults: Faults = Faults(self.seed)
        self._lock = threading.RLock()
        self._secret = hashlib.sha256(f"wanr2v-emulator-{self.seed}".encode()).digest()
        self._served_origin: str | None = None
        self._app: ASGIApp | None = None
        self._reset_locked()

    # --- lifecycle ---------------------------------------------------------

    def _reset_locked(self) -> None:
        cfg = self.config
        self._regions: dict[str, _Region] = {}
        self._key_region: dict[str, str] = {}
        for name, rc in cfg.region_configs().items():
            self._regions[name] = self._make_region(name, rc)
            for key in rc.api_keys:
                self._key_region.setdefault(key, name)
        self._heap: list[tuple[float, int, _Task]] = []
        # Creates carried out but not committed yet (``commit_delay``), by commit time.
        self._commits: list[tuple[float, int, _Task]] = []
        self._seq = itertools.count()
        self._gen_rng = random.Random(self.seed)
        self._id_rng = random.Random(self.seed ^ 0x5EED)
        self._seed_rng = random.Random(self.seed ^ 0xA5A5)
        self._uploads: dict[str, _Upload] = {}
        self._counters: dict[str, dict[int, int]] = {}
        self._throttled = 0
        self._created = 0
        self._duplicates = 0
        self._seen_bodies: set[str] = set()
        self._records: list[_Task] = []
        self._next_scripts: collections.deque[tuple[tuple[str, int | None], ...]] = (
            collections.deque()
        )
        self._host_requests: collections.deque[HostRequest] = collections.deque(
            maxlen=cfg.max_recorded_requests
        )

    def _make_region(self, name: str, rc: RegionConfig) -> _Region:
        caps = rc.capabilities or _rules.REGION_CAPABILITIES.get(
            name, _rules.OTHER_REGION_CAPABILITIES
        )
        return _Region(name, rc.api_keys, rc.quotas or self.config.quotas, caps)

    def reset(self) -> None:
        """Forget every task, upload, counter and fault rule; keep config and clock."""
        with self._lock:
            self._reset_locked()
            self.faults.clear()
            self.faults.reset_counts()

    # --- world knobs -------------------------------------------------------

    def world(self) -> dict[str, Any]:
        """The world knobs in force (see `EmulatorConfig`): lags, delays, and
        what the service does to prompts and pages."""
        with self._lock:
            return {name: getattr(self.config, name) for name in WORLD_KNOBS}

    def set_world(self, **knobs: Any) -> dict[str, Any]:
        """Change world knobs at run time (e.g. ``set_world(list_lag=3.0)``); return them all.

        Raises:
            ValueError: an unknown knob or a bad value (nothing is changed then).
        """
        unknown = sorted(set(knobs) - set(WORLD_KNOBS))
        if unknown:
            raise ValueError(f"unknown world knob(s) {unknown}; have {list(WORLD_KNOBS)}.")
        with self._lock:
            self.config = attrs.evolve(self.config, **knobs)
            return self.world()

    # --- time --------------------------------------------------------------

    def now(self) -> float:
        """Return the emulator time (seconds since the epoch, emulator seconds)."""
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the emulator clock forward by ``seconds`` emulator seconds."""
        with self._lock:
            self.clock.advance(seconds)

    # --- addresses ---------------------------------------------------------

    @property
    def regions(self) -> tuple[str, ...]:
        """The names of the emulated regions, the default first."""
        return tuple(self._regions)

    @property
    def origin(self) -> str:
        """``scheme://host:port`` of the server (an in-process placeholder when not served)."""
        return self._served_origin or IN_PROCESS_ORIGIN

    @property
    def base_url(self) -> str:
        """The API base URL of the default region, e.g. ``http://127.0.0.1:PORT/api/v1``."""
        return self.base_url_for(self.config.default_region)

    def base_url_for(self, region: str) -> str:
        """The API base URL of ``region`` (``/api/v1`` for the default region)."""
        if region not in self._regions:
            raise KeyError(f"no emulated region {region!r}; have {sorted(self._regions)}")
        if region == self.config.default_region:
            return f"{self.origin}/api/v1"
        return f"{self.origin}/{region}/api/v1"

    def app(self) -> ASGIApp:
        """Return the ASGI app serving this emulator (built once)."""
        if self._app is None:
            from wanr2v.testing._app import build_app

            self._app = build_app(self)
        return self._app

    def transport(self) -> httpx.AsyncBaseTransport:
        """Return an httpx transport reaching this emulator in process.

        Injected connection drops surface as ``httpx.RemoteProtocolError`` and hangs
        as ``httpx.ReadTimeout`` (after the request's read timeout), as on a socket.
        """
        from wanr2v.testing._transport import EmulatorTransport

        return EmulatorTransport(self.app())

    # --- observability -----------------------------------------------------

    def stats(self) -> EmulatorStats:
        """Return a snapshot of the counters."""
        with self._lock:
            now = self.clock.now()
            self._advance_locked(now)
            by_status: dict[str, int] = {}
            for region in self._regions.values():
                for task in region.tasks.values():
                    s = task.status(now)
                    by_status[s] = by_status.get(s, 0) + 1
            requests = {k: dict(v) for k, v in self._counters.items()}
            return EmulatorStats(
                requests=requests,
                total_requests=sum(sum(v.values()) for v in requests.values()),
                throttled=self._throttled,
                tasks_created=self._created,
                duplicate_creates=self._duplicates,
                tasks_by_status=by_status,
                faults_injected=self.faults.fired(),
                emulator_time=now,
            )

    def task_records(self) -> list[TaskRecord]:
        """Return one record per task ever created, in creation order."""
        with self._lock:
            now = self.clock.now()
            self._advance_locked(now)
            out = []
            for t in self._records:
                status = t.status(now)
                out.append(
                    TaskRecord(
                        task_id=t.task_id,
                        region=t.region,
                        account=t.account,
                        model=t.model,
                        submit_time=t.submit,
                        scheduled_time=t.scheduled,
                        end_time=t.end,
                        generation_time=t.generation_time,
                        status=status,
                        final_status=status if status in _FINAL else None,
                        code=t.failure[0] if t.failure else None,
                        message=t.failure[1] if t.failure else None,
                        first_final_query=t.first_final,
                        first_final_query_monotonic=t.first_final_mono,
                        duplicate=t.duplicate,
                    )
                )
            return out

    def host_requests(self, host: str | None = None) -> list[HostRequest]:
        """Return the requests seen by the upload / video hosts (``host`` filters)."""
        with self._lock:
            return [r for r in self._host_requests if host is None or r.host == host]

    def count(self, endpoint: str, status: int) -> None:
        """Count one answer (used by the app; a dropped connection is status 0)."""
        with self._lock:
            by_status = self._counters.setdefault(endpoint, {})
            by_status[status] = by_status.get(status, 0) + 1
            if status == 429:
                self._throttled += 1

    def record_host_request(
        self, host: str, method: str, path: str, headers: tuple[tuple[str, str], ...]
    ) -> None:
        """Remember a request that reached the upload or the video host."""
        with self._lock:
            self._host_requests.append(
                HostRequest(
                    host=host,
                    method=method,
                    path=path,
                    headers=headers,
                    emulator_time=self.clock.now(),
                )
            )

    # --- helpers -----------------------------------------------------------

    def _admit_locked(
        self, region: _Region, headers: Mapping[str, str], kind: str, limit: int | None, rid: str
    ) -> tuple[str, float] | Answer:
        """Auth, then the per-account rate of ``kind``: ``(account, now)`` or the error."""
        who = self._auth(region, headers)
        if who is None:
            return _error(401, *_rules.INVALID_API_KEY, rid)
        account = who[0]
        now = self.clock.now()
        if not self._rate_ok(region, (kind, account), limit, now):
            return _error(429, *_rules.RATE_QUOTA, rid, retry_after=self._retry_after())
        return account, now

    def _retry_after(self) -> str:
        """``Retry-After`` in real seconds: the rule's emulator seconds over the time scale
        (a client waits on its own clock)."""
        scale = self.config.time_scale if self.config.clock is None else 1.0
        return f"{_rules.RETRY_AFTER_S / scale:g}"

    def new_request_id(self) -> str:
        """Return a fresh request id."""
        return str(uuid.UUID(bytes=os.urandom(16), version=4))

    def _new_task_id(self) -> str:
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))

    def _auth(self, region: _Region, headers: Mapping[str, str]) -> tuple[str, str] | None:
        """Return (account, key) for a valid ``Authorization`` header, else ``None``."""
        auth = headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            return None
        if region.keys:
            account = region.keys.get(key)
            return None if account is None else (account, key)
        if not key.startswith(_rules.API_KEY_PREFIX) or key in self._key_region:
            return None
        return _rules.OPEN_ACCOUNT, key

    def _rate_ok(
        self, region: _Region, bucket: tuple[str, ...], limit: int | None, now: float
    ) -> bool:
        """Sliding one-second window on the emulator clock."""
        if limit is None:
            return True
        window = region.windows.get(bucket)
        if window is None:
            window = region.windows[bucket] = collections.deque()
        edge = now - 1.0
        while window and window[0] <= edge:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def _pool(self, region: _Region, account: str, model: str) -> _Pool:
        pool = region.pools.get((account, model))
        if pool is None:
            pool = region.pools[(account, model)] = _Pool(region.quotas.running)
        return pool

    def _start_locked(self, task: _Task, at: float) -> None:
        task.scheduled = at + self.config.dispatch_delay
        run = task.generation_time
        if fails_at_inspection(task.failure):
            run = min(run, _rules.REFERENCE_FAILURE_AFTER_S)
        task.end = task.scheduled + run
        self._pool(self._regions[task.region], task.account, task.model).running += 1
        heapq.heappush(self._heap, (task.end, next(self._seq), task))

    def _fill_locked(self, pool: _Pool, at: float) -> None:
        while pool.queue and (pool.limit is None or pool.running < pool.limit):
            nxt = pool.queue.popleft()
            if not nxt.canceled:
                self._start_locked(nxt, at)

    def _advance_locked(self, now: float) -> None:
        commits = self._commits
        while commits and commits[0][0] <= now:
            # A late commit (``commit_delay``) lands in time order with the ends before it.
            at, _, late = heapq.heappop(commits)
            self._advance_locked(at)
            self._commit_locked(late, at)
        heap = self._heap
        while heap and heap[0][0] <= now:
            end, _, task = heapq.heappop(heap)
            if task.canceled:
                continue
            pool = self._pool(self._regions[task.region], task.account, task.model)
            pool.running -= 1
            self._fill_locked(pool, end)

    def _commit_locked(self, task: _Task, at: float) -> None:
        """A late create commits: from ``at`` on it is listed, queryable, queued or running."""
        region = self._regions[task.region]
        region.tasks[task.task_id] = task
        pool = self._pool(region, task.account, task.model)
        if pool.limit is not None and pool.running >= pool.limit:
            pool.queue.append(task)
        else:
            self._start_locked(task, at)

    def _draw_generation_time(self, req: ValidRequest) -> float:
        spec = self.config.generation_time
        if spec is None:
            lo, hi = _rules.GENERATION_TIME_S[req.model]
        elif callable(spec):
            return float(spec(self._gen_rng, req.as_request()))
        elif isinstance(spec, Mapping):
            lo, hi = spec[req.model]
        else:
            lo, hi = spec
        return self._gen_rng.uniform(lo, hi)

    def _region(self, name: str) -> _Region:
        return self._regions[name]

    # --- endpoints ---------------------------------------------------------

    def create(
        self,
        region_name: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        forced_failure: tuple[str, str] | None = None,
        dropped: bool = False,
    ) -> Answer:
        """``POST services/aigc/video-generation/video-synthesis``.

        ``dropped``: the connection is dropped after this create is carried out; with
        ``commit_delay`` the task then commits that much later (invisible until then).
        """
        rid = self.new_request_id()
        with self._lock:
            region = self._region(region_name)
            who = self._auth(region, headers)
            if who is None:
                return _error(401, *_rules.INVALID_API_KEY, rid)
            account, key = who
            if headers.get("x-dashscope-async", "").lower() != "enable":
                return _error(403, *_rules.SYNC_NOT_SUPPORTED, rid)
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                return _error(400, *_rules.BAD_JSON, rid)
            if not isinstance(data, dict):
                return _error(400, *_rules.BAD_JSON, rid)
            try:  # JSON may escape a lone surrogate: valid JSON, invalid Unicode
                json.dumps(data, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                return _error(400, *_rules.BAD_JSON, rid)
            model = data.get("model")
            if not isinstance(model, str) or not model:
                return _error(400, _rules.INVALID_PARAMETER, "Field required: model", rid)
            if model not in _rules.MODELS:
                return _error(400, *_rules.MODEL_NOT_EXIST, rid)
            if model not in region.caps.models:
                return _error(
                    400,
                    _rules.INVALID_PARAMETER,
                    f"Model not exist. {model} is not offered in region {region.name}; "
                    f"it serves {', '.join(sorted(region.caps.models))}.",
                    rid,
                )
            now = self.clock.now()
            self._advance_locked(now)
            if not self._rate_ok(
                region, ("create", account, model), region.quotas.create_per_s, now
            ):
                return _error(429, *_rules.RATE_QUOTA, rid, retry_after=self._retry_after())
            try:
                req = validate(
                    data,
                    model=model,
                    caps=region.caps,
                    region=region.name,
                    oss_resolve=headers.get("x-dashscope-ossresourceresolve", "").lower()
                    == "enable",
                    oss_lookup=lambda k, m: self._oss_lookup(region.name, k, m, now),
                    oss_data=lambda k: up.data if (up := self._uploads.get(k)) else None,
                )
            except Invalid as exc:
                return _error(exc.status, exc.code, exc.message, rid)
            pool = self._pool(region, account, model)
            busy = pool.limit is not None and pool.running >= pool.limit
            if region.quotas.strict_running and busy:
                return _error(429, *_rules.ALLOCATION_QUOTA, rid, retry_after=self._retry_after())
            canonical = json.dumps(
                [data.get("model"), data.get("input"), data.get("parameters")],
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=False,
            )
            digest = hashlib.sha256(canonical.encode()).hexdigest()
            duplicate = digest in self._seen_bodies
            self._seen_bodies.add(digest)
            if req.seed is None:
                req = attrs.evolve(req, seed=self._seed_rng.randrange(_rules.SEED_MAX + 1))
            late = self.config.commit_delay if dropped else 0.0
            task = _Task(
                task_id=self._new_task_id(),
                region=region.name,
                account=account,
                api_key_id=str(int(hashlib.sha256(key.encode()).hexdigest()[:12], 16)),
                model=model,
                request_id=rid,
                submit=now + late,
                generation_time=self._draw_generation_time(req),
                request=req,
                failure=forced_failure or req.failure,
                duplicate=duplicate,
            )
            if self._next_scripts:
                task.script, task.scripted = self._next_scripts.popleft(), "PENDING"
            self._created += 1
            self._duplicates += duplicate
            self._records.append(task)
            if late > 0:
                # Carried out, not committed: nowhere to be seen until ``now + late``.
                heapq.heappush(self._commits, (now + late, next(self._seq), task))
                return Answer(
                    200,
                    {
                        "request_id": rid,
                        "output": {"task_id": task.task_id, "task_status": "PENDING"},
                    },
                )
            region.tasks[task.task_id] = task
            if busy:
                pool.queue.append(task)
            else:
                self._start_locked(task, now)
            return Answer(
                200,
                {"request_id": rid, "output": {"task_id": task.task_id, "task_status": "PENDING"}},
            )

    def query(
        self, region_name: str, headers: Mapping[str, str], task_id: str, origin: str
    ) -> Answer:
        """``GET tasks/{task_id}``."""
        rid = self.new_request_id()
        with self._lock:
            region = self._region(region_name)
            admitted = self._admit_locked(region, headers, "query", region.quotas.query_per_s, rid)
            if isinstance(admitted, Answer):
                return admitted
            account, now = admitted
            self._advance_locked(now)
            task = region.tasks.get(task_id)
            if (
                task is None
                or task.account != account
                or now - task.submit >= self.config.task_ttl
                or now - task.submit < self.config.query_lag
            ):
                return Answer(
                    200,
                    {"request_id": rid, "output": {"task_id": task_id, "task_status": "UNKNOWN"}},
                )
            if task.script is not None and not task.canceled:
                self._play_script_locked(task, now)
            status = task.status(now)
            out: dict[str, Any] = {
                "task_id": task_id,
                "task_status": status,
                "submit_time": format_time(task.submit),
            }
            answer: dict[str, Any] = {"request_id": rid, "output": out}
            if status == "PENDING":
                return Answer(200, answer)
            if task.scheduled is not None and (status != "CANCELED"):
                out["scheduled_time"] = format_time(task.scheduled)
            if status == "RUNNING":
                return Answer(200, answer)
            assert task.end is not None
            out["end_time"] = format_time(task.end)
            if task.first_final is None:
                task.first_final = now
                task.first_final_mono = time.monotonic()
            if status == "SUCCEEDED":
                out["orig_prompt"] = (
                    normalize_prompt(task.request.prompt)
                    if self.config.prompt_normalization
                    else task.request.prompt
                )
                out["video_url"] = self._video_url(task, origin)
                answer["usage"] = billed_usage(task.request)
            elif status == "FAILED":
                assert task.failure is not None
                out["code"], out["message"] = task.failure
            return Answer(200, answer)

    def script_polls(
        self, *steps: tuple[str, int] | str, task_id: str | None = None, tasks: int = 1
    ) -> None:
        """Script tasks' states by how often they were queried, not by their clock.

        ``emu.script_polls(("PENDING", 3), ("RUNNING", 5), "SUCCEEDED")``: the next
        created task answers PENDING to its first 3 queries, RUNNING to the next 5,
        then SUCCEEDED (or FAILED, with ``InternalError.Algo`` unless the task was to
        fail otherwise) from the 9th on, whatever the emulator clock says. Only
        queries the emulator answers count (not those a fault or a 429 took). A
        running task keeps its slot as long as its clock says; a task still queued
        leaves the queue when its script runs it (it takes no slot). Its times follow
        the script (``scheduled_time`` / ``end_time``: the query that first saw it
        RUNNING / final, unless its clock had them earlier).

        Args:
            steps: ``(state, queries)`` pairs (``PENDING`` or ``RUNNING``), then the
                final state (``SUCCEEDED`` or ``FAILED``).
            task_id: script this existing task (its count starts now) instead of the
                next created ones.
            tasks: how many of the next created tasks get the script.
        """
        *middle, final = steps
        if not isinstance(final, str) or final not in ("SUCCEEDED", "FAILED"):
            raise ValueError(f"a poll script ends with SUCCEEDED or FAILED, got {final!r}")
        script: list[tuple[str, int | None]] = []
        for step in middle:
            if (
                not isinstance(step, tuple)
                or len(step) != 2
                or step[0] not in ("PENDING", "RUNNING")
                or not isinstance(step[1], int)
                or step[1] < 0
            ):
                raise ValueError(
                    f"a poll script step is (PENDING or RUNNING, queries >= 0), got {step!r}"
                )
            script.append((step[0], step[1]))
        script.append((final, None))
        if tasks < 1:
            raise ValueError(f"tasks must be >= 1, got {tasks}")
        with self._lock:
            if task_id is None:
                self._next_scripts.extend([tuple(script)] * tasks)
                return
            for region in self._regions.values():
                task = region.tasks.get(task_id)
                if task is not None:
                    task.script, task.polls = tuple(script), 0
                    return
            raise KeyError(f"no task {task_id!r}")

    def _play_script_locked(self, task: _Task, now: float) -> None:
        """Count one query of a scripted task and set its state from the script."""
        assert task.script is not None
        task.polls += 1
        left = task.polls
        state = task.script[-1][0]
        for step, queries in task.script:
            if queries is None or left <= queries:
                state = step
                break
            left -= queries
        if state != "PENDING" and task.scheduled is None:  # queued: the script runs it
            queue = self._pool(self._regions[task.region], task.account, task.model).queue
            if task in queue:
                queue.remove(task)
        if state != "PENDING" and (task.scheduled is None or task.scheduled > now):
            task.scheduled = now
        if state in _FINAL:
            if task.end is None or task.end > now:
                task.end = now
            if state == "FAILED" and task.failure is None:
                task.failure = ("InternalError.Algo", "Inference error: the task failed.")
        task.scripted = state

    def cancel(self, region_name: str, headers: Mapping[str, str], task_id: str) -> Answer:
        """``POST tasks/{task_id}/cancel``."""
        rid = self.new_request_id()
        with self._lock:
            region = self._region(region_name)
            admitted = self._admit_locked(
                region, headers, "cancel", region.quotas.cancel_per_s, rid
            )
            if isinstance(admitted, Answer):
                return admitted
            account, now = admitted
            self._advance_locked(now)
            task = region.tasks.get(task_id)
            if (
                task is None
                or task.account != account
                or now - task.submit >= self.config.task_ttl
                or task.status(now) != "PENDING"
            ):
                return _error(400, *_rules.CANCEL_NOT_PENDING, rid)
            task.canceled = True
            started = task.scheduled is not None
            task.end = now
            task.scheduled = None
            if started:
                pool = self._pool(region, account, task.model)
                pool.running -= 1
                self._fill_locked(pool, now)
            return Answer(200, {"request_id": rid})

    def list_tasks(self, region_name: str, headers: Mapping[str, str], query_string: str) -> Answer:
        """``GET tasks`` with the vendor's filters and paging; a flat answer."""
        rid = self.new_request_id()
        params = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        with self._lock:
            region = self._region(region_name)
            admitted = self._admit_locked(region, headers, "list", region.quotas.list_per_s, rid)
            if isinstance(admitted, Answer):
                return admitted
            account, now = admitted
            self._advance_locked(now)
            try:
                page_no = _positive_int(params, "page_no", _rules.DEFAULT_PAGE_NO)
                page_size = _positive_int(params, "page_size", _rules.DEFAULT_PAGE_SIZE)
                if page_size > _rules.MAX_PAGE_SIZE:
                    raise Invalid(
                        400,
                        _rules.INVALID_PARAMETER,
                        f"page_size must be at most {_rules.MAX_PAGE_SIZE}.",
                    )
                start = _list_time(params, "start_time")
                end = _list_time(params, "end_time")
            except Invalid as exc:
                return _error(exc.status, exc.code, exc.message, rid)
            cap = self.config.page_size_cap
            if cap is not None:
                page_size = min(page_size, cap)
            window = _rules.LIST_MAX_WINDOW_S
            if start is None and end is None:
                end, start = now, now - window
            elif start is None:
                assert end is not None
                start = end - window
            elif end is None:
                end = start + window
            if end < start:
                return _error(
                    400, _rules.INVALID_PARAMETER, "end_time must not be before start_time.", rid
                )
            if end - start > window:
                return _error(
                    400, _rules.INVALID_PARAMETER, "The time range cannot exceed 24 hours.", rid
                )
            want_id = params.get("task_id") or None
            want_model = params.get("model_name") or None
            want_status = (params.get("status") or "").upper() or None
            if want_id is not None:
                one = region.tasks.get(want_id)
                candidates: Any = () if one is None else (one,)
            else:
                candidates = reversed(region.tasks.values())
            first, stop = (page_no - 1) * page_size, page_no * page_size
            total = 0
            page = []
            shown_until = now - self.config.list_lag
            for task in candidates:
                if task.account != account or not start <= task.submit <= end:
                    continue
                if task.submit > shown_until:
                    continue  # ``list_lag``: not in the list yet
                if want_model is not None and task.model != want_model:
                    continue
                status = task.status(now) if want_status is not None else ""
                if want_status is not None and status != want_status:
                    continue
                if first <= total < stop:
                    page.append((task, status or task.status(now)))
                total += 1
            data = [
                {
                    "task_id": t.task_id,
                    "status": s,
                    "model_name": t.model,
                    "request_id": t.request_id,
                    "gmt_create": int(t.submit * 1000),
                    "start_time": None if t.scheduled is None else int(t.scheduled * 1000),
                    "end_time": int(t.end * 1000) if t.end is not None and s in _FINAL else None,
                    "region": region.caps.region_id,
                    "api_key_id": t.api_key_id,
                }
                for t, s in page
            ]
            return Answer(
                200,
                {
                    "request_id": rid,
                    "total": total,
                    "total_page": math.ceil(total / page_size),
                    "page_no": page_no,
                    "page_size": page_size,
                    "data": data,
                },
            )

    # --- uploads -----------------------------------------------------------

    def _sign(self, text: str) -> str:
        return base64.b64encode(
            hmac.new(self._secret, text.encode(), hashlib.sha1).digest()
        ).decode()

    def get_policy(
        self, region_name: str, headers: Mapping[str, str], query_string: str, origin: str
    ) -> Answer:
        """``GET uploads?action=getPolicy&model=...``."""
        rid = self.new_request_id()
        params = {k: v[-1] for k, v in parse_qs(query_string, keep_blank_values=True).items()}
        with self._lock:
            region = self._region(region_name)
            admitted = self._admit_locked(
                region, headers, "policy", region.quotas.policy_per_s, rid
            )
            if isinstance(admitted, Answer):
                return admitted
            account, now = admitted
            if params.get("action") != "getPolicy":
                return _error(400, *_rules.URL_ERROR, rid)
            model = params.get("model")
            if not model:
                return _error(400, _rules.INVALID_PARAMETER, "Field required: model", rid)
            if model not in _rules.MODELS or model not in region.caps.models:
                return _error(400, *_rules.MODEL_NOT_EXIST, rid)
            ttl = self.config.policy_ttl
            stamp = dt.datetime.fromtimestamp(now, _rules.TIMEZONE).strftime("%Y-%m-%d")
            upload_dir = (
                f"dashscope-instant/{hashlib.md5(account.encode()).hexdigest()}/{stamp}/"
                f"{uuid.UUID(bytes=os.urandom(16), version=4)}"
            )
            policy_doc = {
                "expiration": _iso_utc(now + ttl),
                "conditions": [
                    ["content-length-range", 0, _rules.MAX_FILE_SIZE_MB * 1024 * 1024],
                    ["starts-with", "$key", upload_dir],
                    {"bucket": "dashscope-file-mgr"},
                ],
                "x-wanr2v": {"region": region.name, "model": model, "expires": now + ttl},
            }
            policy = base64.b64encode(json.dumps(policy_doc).encode()).decode()
            return Answer(
                200,
                {
                    "request_id": rid,
                    "data": {
                        "policy": policy,
                        "signature": self._sign(policy),
                        "upload_dir": upload_dir,
                        "upload_host": f"{origin}/_oss/upload",
                        "expire_in_seconds": int(ttl),
                        "max_file_size_mb": _rules.MAX_FILE_SIZE_MB,
                        "capacity_limit_mb": _rules.CAPACITY_LIMIT_MB,
                        "oss_access_key_id": _rules.OSS_ACCESS_KEY_ID,
                        "x_oss_object_acl": "private",
                        "x_oss_forbid_overwrite": "true",
                    },
                },
            )

    def upload(self, fields: Mapping[str, str], file: tuple[str, bytes] | None) -> Answer:
        """``POST {upload_host}``: an OSS PostObject form. 200 with an empty body."""
        rid = self.new_request_id()
        policy = fields.get("policy", "")
        if (
            not policy
            or fields.get("OSSAccessKeyId") != _rules.OSS_ACCESS_KEY_ID
            or not hmac.compare_digest(fields.get("Signature", ""), self._sign(policy))
        ):
            return _oss_error(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
                rid,
            )
        doc = json.loads(base64.b64decode(policy))
        meta = doc["x-wanr2v"]
        key = fields.get("key", "")
        upload_dir = doc["conditions"][1][2]
        with self._lock:
            now = self.clock.now()
            if now >= meta["expires"]:
                return _oss_error(
                    403, "AccessDenied", "Invalid according to Policy: Policy expired.", rid
                )
            if not key.startswith(upload_dir + "/"):
                return _oss_error(
                    403,
                    "AccessDenied",
                    f'Invalid according to Policy: Policy Condition failed: ["starts-with", "$key", "{upload_dir}"]',
                    rid,
                )
            if file is None:
                return _oss_error(400, "InvalidArgument", "The file field is missing.", rid)
            _, data = file
            if len(data) > _rules.MAX_FILE_SIZE_MB * 1024 * 1024:
                return _oss_error(
                    400,
                    "EntityTooLarge",
                    "Your proposed upload exceeds the maximum allowed size.",
                    rid,
                )
            if (
                fields.get("x-oss-forbid-overwrite", "false").lower() == "true"
                and key in self._uploads
            ):
                return _oss_error(
                    409, "FileAlreadyExists", "The object you specified already exists.", rid
                )
            self._uploads[key] = _Upload(
                region=meta["region"],
                model=meta["model"],
                name=key.rsplit("/", 1)[-1],
                data=data,
                expires=now + _rules.UPLOAD_TTL_S,
            )
        status = int(fields.get("success_action_status", "204") or 204)
        status = status if status in (200, 201, 204) else 204
        return Answer(status, b"", (("x-oss-request-id", rid),), "text/plain")

    def _oss_lookup(self, region: str, key: str, model: str, now: float) -> str | None:
        up = self._uploads.get(key)
        if up is None or up.region != region or up.model != model or now >= up.expires:
            return None
        return up.name

    # --- results -----------------------------------------------------------

    def _video_sig(self, region: str, task_id: str, expires: int) -> str:
        return self._sign(f"GET\n{region}/{task_id}.mp4\n{expires}")

    def _video_url(self, task: _Task, origin: str) -> str:
        assert task.end is not None
        expires = int(task.end + self.config.video_url_ttl)
        sig = self._video_sig(task.region, task.task_id, expires)
        from urllib.parse import quote

        return (
            f"{origin}/_oss/results/{task.region}/{task.task_id}.mp4?Expires={expires}"
            f"&OSSAccessKeyId={_rules.OSS_ACCESS_KEY_ID}&Signature={quote(sig, safe='')}"
        )

    def video(
        self,
        region_name: str,
        task_id: str,
        query_string: str,
        range_header: str | None,
        *,
        force_expired: bool = False,
    ) -> Answer:
        """``GET {video_url}``: the MP4, with ``Range`` support; 403 once expired."""
        rid = self.new_request_id()
        params = {k: v[-1] for k, v in parse_qs(query_string).items()}
        with self._lock:
            now = self.clock.now()
            self._advance_locked(now)
            try:
                expires = int(params.get("Expires", ""))
            except ValueError:
                return _oss_error(
                    403, "AccessDenied", "Anonymous access is forbidden for this operation.", rid
                )
            if force_expired or now > expires:
                return _oss_error(
                    403,
                    "AccessDenied",
                    "Request has expired.",
                    rid,
                    Expires=_iso_utc(expires),
                    ServerTime=_iso_utc(now),
                )
            region = self._regions.get(region_name)
            if not hmac.compare_digest(
                params.get("Signature", ""), self._video_sig(region_name, task_id, expires)
            ):
                return _oss_error(
                    403,
                    "SignatureDoesNotMatch",
                    "The request signature we calculated does not match the signature you provided.",
                    rid,
                )
            task = None if region is None else region.tasks.get(task_id)
            if task is None or task.status(now) != "SUCCEEDED":
                return _oss_error(404, "NoSuchKey", "The specified key does not exist.", rid)
            data = make_mp4(task.request.duration)
        return _ranged(data, range_header, task_id)


def _ranged(data: bytes, range_header: str | None, etag_seed: str) -> Answer:
    size = len(data)
    etag = '"' + hashlib.md5(etag_seed.encode()).hexdigest().upper() + '"'
    base = (("accept-ranges", "bytes"), ("etag", etag))
    if not range_header:
        return Answer(200, data, base, "video/mp4")
    unit, _, spec = range_header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return Answer(200, data, base, "video/mp4")
    first_s, _, last_s = spec.strip().partition("-")
    try:
        if first_s == "":
            n = int(last_s)
            first, last = max(size - n, 0), size - 1
            if n == 0:
                raise ValueError
        else:
            first = int(first_s)
            last = min(int(last_s), size - 1) if last_s else size - 1
    except ValueError:
        return Answer(200, data, base, "video/mp4")
    if first >= size or first > last:
        return Answer(416, b"", (*base, ("content-range", f"bytes */{size}")), "video/mp4")
    return Answer(
        206,
        data[first : last + 1],
        (*base, ("content-range", f"bytes {first}-{last}/{size}")),
        "video/mp4",
    )


_WHITESPACE_RUN = re.compile(r"\s+")


def normalize_prompt(prompt: str) -> str:
    """What ``prompt_normalization`` does to ``orig_prompt``: Unicode NFC, trimmed, every
    run of whitespace one space."""
    return _WHITESPACE_RUN.sub(" ", unicodedata.normalize("NFC", prompt)).strip()


def _positive_int(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise Invalid(
            400, _rules.INVALID_PARAMETER, f"{name} must be a positive integer, got {raw!r}."
        )
    return value


def _list_time(params: Mapping[str, str], name: str) -> float | None:
    raw = params.get(name)
    if not raw:
        return None
    try:
        when = dt.datetime.strptime(raw, "%Y%m%d%H%M%S").replace(tzinfo=_rules.TIMEZONE)
    except ValueError:
        raise Invalid(
            400, _rules.INVALID_PARAMETER, f"{name} must be YYYYMMDDhhmmss, got {raw!r}."
        ) from None
    return when.timestamp()
