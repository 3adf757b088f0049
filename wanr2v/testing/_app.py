"""The emulator's ASGI app: a thin fault-injecting layer around a Starlette router.

Layout of the URL space (all on one origin, so it works over loopback and in process):

- ``/api/v1/...``: the default region's API; ``/{region}/api/v1/...``: another region's.
- ``/_oss/upload``: the upload host (OSS PostObject form).
- ``/_oss/results/{region}/{task_id}.mp4``: the video host (signed URLs).
- ``/_emulator/...``: admin routes (stats, tasks, faults, clock, reset, world); no auth.

The outer layer classifies each request by endpoint, counts its answer, and plays
injected faults. It sits outside Starlette on purpose: a dropped connection must
never be turned into a 500 by Starlette's error middleware.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

import wanr2v.testing._rules as _rules
from wanr2v.testing._faults import (
    DEFAULT_HANG_S,
    DEFAULT_HUGE_BYTES,
    DEFAULT_TRICKLE_S,
    Endpoint,
    FaultKind,
    FaultRule,
)
from wanr2v.testing._records import Answer

if TYPE_CHECKING:
    from wanr2v.testing._emulator import Emulator

__all__ = ["ASGIApp", "ConnectionDropped", "ConnectionHung", "build_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
_CREATE_PATH = "/services/aigc/video-generation/video-synthesis"


class ConnectionDropped(Exception):
    """Raised in process (no socket to close) where a connection is dropped."""


class ConnectionHung(Exception):
    """Raised in process where the server would stay silent for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


def _answer(ans: Answer, *, head: bool = False) -> Response:
    if isinstance(ans.body, dict):
        content = json.dumps(ans.body, ensure_ascii=False, separators=(",", ":")).encode()
    else:
        content = ans.body or b""
    headers = dict(ans.headers)
    if head:
        headers["content-length"] = str(len(content))
        content = b""
    return Response(content, ans.status, headers=headers, media_type=ans.media_type)


def _origin(request: Request) -> str:
    host = request.headers.get("host")
    if not host:
        server = request.scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    return f"{request.scope.get('scheme', 'http')}://{host}"


def _region(request: Request) -> str:
    return str(request.scope["wanr2v.region"])


def _parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], tuple[str, bytes] | None]:
    """Parse a ``multipart/form-data`` body: text fields, and the ``file`` field."""
    boundary = ""
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    fields: dict[str, str] = {}
    file: tuple[str, bytes] | None = None
    if not boundary:
        return fields, file
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            continue
        if data.endswith(b"\r\n"):
            data = data[:-2]
        name = filename = None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                for item in line.split(";")[1:]:
                    k, _, v = item.strip().partition("=")
                    if k == "name":
                        name = v.strip('"')
                    elif k == "filename":
                        filename = v.strip('"')
        if name is None:
            continue
        if name == "file":
            file = (filename or "file", data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, file


def _routes(emu: Emulator) -> list[Route]:
    async def create(request: Request) -> Response:
        body = await request.body()
        fail = request.scope.get("wanr2v.fail")
        dropped = bool(request.scope.get("wanr2v.dropped"))
        return _answer(
            emu.create(
                _region(request), request.headers, body, forced_failure=fail, dropped=dropped
            )
        )

    async def query(request: Request) -> Response:
        return _answer(
            emu.query(
                _region(request), request.headers, request.path_params["task_id"], _origin(request)
            )
        )

    async def cancel(request: Request) -> Response:
        return _answer(
            emu.cancel(_region(request), request.headers, request.path_params["task_id"])
        )

    async def list_tasks(request: Request) -> Response:
        qs = request.scope["query_string"].decode("latin-1")
        return _answer(emu.list_tasks(_region(request), request.headers, qs))

    async def policy(request: Request) -> Response:
        qs = request.scope["query_string"].decode("latin-1")
        return _answer(emu.get_policy(_region(request), request.headers, qs, _origin(request)))

    async def url_error(request: Request) -> Response:
        return _answer(
            Answer(
                400,
                {
                    "request_id": emu.new_request_id(),
                    "code": _rules.URL_ERROR[0],
                    "message": _rules.URL_ERROR[1],
                },
            )
        )

    async def not_found(request: Request) -> Response:
        return _answer(
            Answer(
                404,
                {
                    "request_id": emu.new_request_id(),
                    "code": _rules.NOT_FOUND[0],
                    "message": _rules.NOT_FOUND[1],
                },
            )
        )

    def _record(host: str, request: Request) -> None:
        emu.record_host_request(
            host,
            request.method,
            request.url.path,
            tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]),
        )

    async def upload(request: Request) -> Response:
        _record("upload", request)
        body = await request.body()
        fields, file = _parse_multipart(request.headers.get("content-type", ""), body)
        return _answer(emu.upload(fields, file))

    async def video(request: Request) -> Response:
        _record("video", request)
        name = request.path_params["name"]
        task_id = name[:-4] if name.endswith(".mp4") else name
        ans = emu.video(
            request.path_params["region"],
            task_id,
            request.scope["query_string"].decode("latin-1"),
            request.headers.get("range"),
            force_expired=bool(request.scope.get("wanr2v.expired")),
        )
        return _answer(ans, head=request.method == "HEAD")

    # --- admin ---------------------------------------------------------------

    def _json(data: Any, status: int = 200) -> Response:
        return Response(
            json.dumps(data, default=str).encode(), status, media_type="application/json"
        )

    async def admin_stats(request: Request) -> Response:
        import attrs

        return _json(attrs.asdict(emu.stats()))

    async def admin_tasks(request: Request) -> Response:
        import attrs

        return _json([attrs.asdict(r) for r in emu.task_records()])

    async def admin_requests(request: Request) -> Response:
        host = request.query_params.get("host")
        return _json(
            [
                {
                    "host": r.host,
                    "method": r.method,
                    "path": r.path,
                    "headers": [list(h) for h in r.headers],
                }
                for r in emu.host_requests(host)
            ]
        )

    async def admin_faults(request: Request) -> Response:
        if request.method == "DELETE":
            emu.faults.clear()
            return _json({"cleared": True})
        if request.method == "POST":
            try:
                data = json.loads(await request.body())
                rules = data if isinstance(data, list) else [data]
                ids = [emu.faults.add(FaultRule.from_dict(r)) for r in rules]
            except (ValueError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
            return _json({"ids": ids})
        return _json(
            [{"id": i, "remaining": left, **rule.to_dict()} for i, rule, left in emu.faults.rules()]
        )

    async def admin_clock(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = json.loads(await request.body() or b"{}")
                emu.advance(float(data.get("seconds", 0)))
            except (ValueError, TypeError, AttributeError) as exc:
                return _json({"error": str(exc)}, 400)
        return _json({"now": emu.now()})

    async def admin_world(request: Request) -> Response:
        if request.method == "POST":
            try:
                data = json.loads(await request.body() or b"{}")
                if not isinstance(data, dict):
                    raise TypeError("send a JSON object of world knobs")
                return _json(emu.set_world(**data))
            except (ValueError, TypeError) as exc:
                return _json({"error": str(exc)}, 400)
        return _json(emu.world())

    async def admin_reset(request: Request) -> Response:
        emu.reset()
        return _json({"reset": True})

    return [
        Route("/api" + _CREATE_PATH, create, methods=["POST"]),
        Route("/api/tasks", list_tasks, methods=["GET"]),
        Route("/api/tasks/{task_id}", query, methods=["GET"]),
        Route("/api/tasks/{task_id}/cancel", cancel, methods=["POST"]),
        Route("/api/uploads", policy, methods=["GET"]),
        Route("/api/{rest:path}", url_error, methods=_ALL_METHODS),
        Route("/_oss/upload", upload, methods=["POST"]),
        Route("/_oss/results/{region}/{name}", video, methods=["GET", "HEAD"]),
        Route("/_emulator/stats", admin_stats, methods=["GET"]),
        Route("/_emulator/tasks", admin_tasks, methods=["GET"]),
        Route("/_emulator/requests", admin_requests, methods=["GET"]),
        Route("/_emulator/faults", admin_faults, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/clock", admin_clock, methods=["GET"]),
        Route("/_emulator/clock/advance", admin_clock, methods=["POST"]),
        Route("/_emulator/reset", admin_reset, methods=["POST"]),
        Route("/_emulator/world", admin_world, methods=["GET", "POST"]),
        Route("/{rest:path}", not_found, methods=_ALL_METHODS),
    ]


def _classify(emu: Emulator, method: str, path: str) -> tuple[str, str, str | None]:
    """Return (endpoint, region, rewritten API path or ``None``) for a request."""
    default = emu.config.default_region
    if path.startswith("/_emulator/"):
        return "admin", default, None
    if path.startswith("/_oss/"):
        if path.startswith("/_oss/results/"):
            parts = path.split("/")
            return "video", parts[3] if len(parts) > 3 else default, None
        return "upload", default, None
    if path.startswith("/api/v1"):
        region, rest = default, path[len("/api/v1") :]
    else:
        head, sep, tail = path[1:].partition("/api/v1")
        if not sep or "/" in head or head not in emu.regions:
            return "other", default, None
        region, rest = head, tail
    if rest != "/":
        rest = rest.rstrip("/")
    endpoint = "other"
    if rest == _CREATE_PATH:
        endpoint = "create" if method == "POST" else "other"
    elif rest == "/tasks":
        endpoint = "list" if method == "GET" else "other"
    elif rest.startswith("/tasks/"):
        tail = rest[len("/tasks/") :]
        if "/" not in tail and method == "GET":
            endpoint = "query"
        elif tail.endswith("/cancel") and tail.count("/") == 1 and method == "POST":
            endpoint = "cancel"
    elif rest == "/uploads":
        endpoint = "policy" if method == "GET" else "other"
    return endpoint, region, "/api" + rest


_FAULTABLE = frozenset(e.value for e in Endpoint)


def _socket_of(send: Send) -> Any:
    """The uvicorn request cycle behind ``send``, when served on a real socket."""
    cycle = getattr(send, "__self__", None)
    if getattr(cycle, "transport", None) is not None and hasattr(cycle, "disconnected"):
        return cycle
    return None


def _with_date(message: Message, now: float) -> Message:
    """The emulated server's ``Date`` header, on its own (possibly scaled) clock, as a
    real server's comes from its clock (uvicorn's own, in real time, is turned off)."""
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
    headers.append((b"date", email.utils.formatdate(now, usegmt=True).encode()))
    return {**message, "headers": headers}


class _EmulatorASGI:
    def __init__(self, emu: Emulator, inner: ASGIApp) -> None:
        self.emu = emu
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        emu = self.emu
        endpoint, region, api_path = _classify(emu, scope["method"], scope["path"])
        if api_path is not None:
            scope = dict(scope)
            scope["path"] = api_path
            scope["raw_path"] = api_path.encode()
        if endpoint == "admin":
            await self.inner(scope, receive, send)
            return
        scope["wanr2v.region"] = region
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = _with_date(message, emu.now())
            await send(message)

        rule = emu.faults.pick(Endpoint(endpoint), region) if endpoint in _FAULTABLE else None
        if rule is not None and await self._fault(rule, endpoint, scope, receive, send):
            return
        try:
            await self.inner(scope, receive, counting_send)
        except ClientDisconnect:  # the client went away mid-request (e.g. killed): no answer
            status = 0
        emu.count(endpoint, status)

    async def _fault(
        self, rule: FaultRule, endpoint: str, scope: Scope, receive: Receive, send: Send
    ) -> bool:
        """Play a fault; return whether the request is done (else it goes on normally)."""
        emu = self.emu
        kind = rule.kind
        if kind in (FaultKind.THROTTLE, FaultKind.SERVER_ERROR, FaultKind.UNAVAILABLE):
            status, code, message = rule.error()
            headers: tuple[tuple[str, str], ...] = ()
            if status == 429 and rule.send_retry_after:
                # Real seconds, as the emulator's own 429s (a client waits on its clock).
                retry_after = (
                    f"{rule.retry_after:g}" if rule.retry_after is not None else emu._retry_after()
                )
                headers = (("retry-after", retry_after),)
            body = {"request_id": emu.new_request_id(), "code": code, "message": message}
            await _answer(Answer(status, body, headers))(scope, receive, send)
            emu.count(endpoint, status)
            return True
        if kind is FaultKind.SLOW:
            await anyio.sleep(rule.delay if rule.delay is not None else 1.0)
        elif kind is FaultKind.FAIL_TASK:
            _, code, message = rule.error()
            scope["wanr2v.fail"] = (code, message)
        elif kind is FaultKind.EXPIRED_URL:
            scope["wanr2v.expired"] = True
        elif kind is FaultKind.DROP:
            emu.count(endpoint, 0)
            await self._drop(send)
            return True
        elif kind is FaultKind.DROP_AFTER_COMMIT:

            async def swallow(message: Message) -> None:
                return None

            scope["wanr2v.dropped"] = True  # a create commits ``commit_delay`` later

            await self.inner(scope, receive, swallow)
            emu.count(endpoint, 0)
            await self._drop(send)
            return True
        elif kind is FaultKind.HANG:
            emu.count(endpoint, 0)
            await self._hang(
                rule.delay if rule.delay is not None else DEFAULT_HANG_S, receive, send
            )
            return True
        elif kind in _HOSTILE:
            await self._hostile(rule, endpoint, scope, receive, send)
            return True
        return False

    # --- hostile servers ---------------------------------------------------------------

    async def _hostile(
        self, rule: FaultRule, endpoint: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        emu = self.emu
        kind = rule.kind
        if _socket_of(send) is None:  # in process there is no socket to misbehave on
            emu.count(endpoint, 0)
            raise ConnectionDropped(f"{kind.value} needs a real socket")
        if kind is FaultKind.ECHO_HEADERS:
            ordered = sorted(scope["headers"], key=lambda kv: kv[0].lower() != b"authorization")
            echoed = "; ".join(f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in ordered)
            body = {
                "request_id": emu.new_request_id(),
                "code": rule.code or _rules.INVALID_PARAMETER,
                "message": f"{rule.message or 'Bad request'}; the request's headers were: {echoed}",
            }
            await _answer(Answer(rule.status or 400, body))(scope, receive, send)
            emu.count(endpoint, rule.status or 400)
            return
        if kind is FaultKind.REPEAT_PAGE:
            await _answer(self._repeated_page(scope))(scope, receive, send)
            emu.count(endpoint, 200)
            return
        if kind is FaultKind.TRICKLE:
            await self._trickle(rule, scope, receive, send)
            emu.count(endpoint, 200)
            return
        if kind is FaultKind.HUGE_ANSWER:
            size = rule.size if rule.size is not None else DEFAULT_HUGE_BYTES
            head = b'{"request_id":"' + emu.new_request_id().encode() + b'","pad":"'
            tail = b'"}'
            pad = max(0, size - len(head) - len(tail))

            async def huge() -> AsyncIterator[bytes]:
                yield head
                block = b"a" * 65536
                left = pad
                while left > 0:
                    yield block[: min(left, len(block))]
                    left -= min(left, len(block))
                yield tail

            await _stream(
                send,
                receive,
                200,
                [(b"content-type", b"application/json"), (b"content-length", str(size).encode())],
                huge(),
            )
            emu.count(endpoint, 200)
            return
        # ENDLESS_BODY
        if endpoint == "video":
            headers = [(b"content-type", b"video/mp4")]
            first, block = b"\x00\x00\x00\x18ftypmp42", b"\x00" * 65536
        else:
            headers = [(b"content-type", b"application/json")]
            first, block = b'{"request_id":"endless","output":{"task_id":"', b"x" * 65536

        async def endless() -> AsyncIterator[bytes]:
            yield first
            while True:
                yield block

        await _stream(send, receive, 200, headers, endless())
        emu.count(endpoint, 200)

    def _repeated_page(self, scope: Scope) -> Answer:
        emu = self.emu
        qs = scope["query_string"].decode("latin-1")
        params = {k: v[-1] for k, v in parse_qs(qs, keep_blank_values=True).items()}
        params["page_no"] = "1"
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        ans = emu.list_tasks(str(scope["wanr2v.region"]), headers, urlencode(params))
        if ans.status != 200 or not isinstance(ans.body, dict):
            return ans
        try:
            page_size = max(1, min(int(params.get("page_size", "10")), 100))
        except ValueError:
            page_size = 10
        rows = list(ans.body.get("data") or [])[:page_size]
        model = params.get("model_name") or "wan2.6-r2v-flash"
        now_ms = int(emu.now() * 1000)
        i = 0
        while len(rows) < page_size:
            rows.append(
                {
                    "task_id": f"repeat-{i:04d}-0000-0000-000000000000",
                    "status": "SUCCEEDED",
                    "model_name": model,
                    "gmt_create": now_ms - 86_000_000,
                }
            )
            i += 1
        total = 1_000_000
        body = {
            **ans.body,
            "data": rows,
            "total": total,
            "total_page": -(-total // page_size),
            "page_no": int(params.get("page_no", "1")),
            "page_size": page_size,
        }
        return Answer(200, body, ans.headers)

    async def _trickle(self, rule: FaultRule, scope: Scope, receive: Receive, send: Send) -> None:
        """Carry the request out, then send its answer one byte at a time."""
        start: Message = {}
        parts: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(_with_date(message, self.emu.now()))
            elif message["type"] == "http.response.body":
                parts.append(bytes(message.get("body", b"")))

        await self.inner(scope, receive, capture)
        body = b"".join(parts)
        pause = rule.delay if rule.delay is not None else DEFAULT_TRICKLE_S

        async def drip() -> AsyncIterator[bytes]:
            for i in range(len(body)):
                if i:
                    await anyio.sleep(pause)
                yield body[i : i + 1]

        await _stream(
            send, receive, int(start.get("status", 200)), list(start.get("headers", [])), drip()
        )

    async def _drop(self, send: Send) -> None:
        cycle = _socket_of(send)
        if cycle is None:
            raise ConnectionDropped("the emulator dropped the connection")
        # Mark the cycle disconnected first, so uvicorn does not answer 500 for us.
        cycle.disconnected = True
        cycle.keep_alive = False
        cycle.transport.abort()
        await anyio.lowlevel.checkpoint()

    async def _hang(self, seconds: float, receive: Receive, send: Send) -> None:
        if _socket_of(send) is None:
            raise ConnectionHung(seconds)
        with anyio.move_on_after(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
        await self._drop(send)


_HOSTILE = frozenset(
    {
        FaultKind.ENDLESS_BODY,
        FaultKind.TRICKLE,
        FaultKind.ECHO_HEADERS,
        FaultKind.REPEAT_PAGE,
        FaultKind.HUGE_ANSWER,
    }
)


async def _stream(
    send: Send,
    receive: Receive,
    status: int,
    headers: list[tuple[bytes, bytes]],
    chunks: AsyncIterator[bytes],
) -> None:
    """Send an answer chunk by chunk (at the pace the client reads: uvicorn's ``send``
    waits while the socket's buffer is full) until done or the client goes away."""
    cycle = _socket_of(send)
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            async for chunk in chunks:
                if cycle is not None and (cycle.disconnected or cycle.transport.is_closing()):
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # A send to a vanished client returns at once: let the loop notice it.
                await anyio.lowlevel.checkpoint()
            else:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # uvicorn: the client disconnected
            pass
        tg.cancel_scope.cancel()


def build_app(emu: Emulator) -> ASGIApp:
    """Build the ASGI app of an emulator."""
    inner = Starlette(routes=_routes(emu))
    return _EmulatorASGI(emu, inner)
