"""The http client an ``AsyncWanClient`` makes for itself: httpx, minus per-request layers.

`LeanAsyncClient` is an ``httpx.AsyncClient`` whose `request`
sends a plain request (at most a JSON body and headers, on a client without event
hooks, auth, a base URL, proxy mounts or stored cookies: every API call wanr2v makes)
straight to its transport: the ``httpx.Request`` is built directly, and httpx's
auth, redirect and hook generators and its response wrappers are skipped (about a
quarter of httpx's client CPU per request on loopback). The answer is the same
``httpx.Response`` (read whole, its connection back in the pool, cookies stored,
httpx's ``HTTP Request:`` log line), except that ``elapsed`` is not set. Anything else
(``stream``, ``send``, uploads, downloads) takes httpx's full path. Errors are the
transport's, already httpx exceptions.
"""

from __future__ import annotations

import json as jsonlib
import logging
from typing import Any

import httpx

__all__ = ["AnswerTooLarge", "LeanAsyncClient", "plain_request", "read_capped"]

_httpx_logger = logging.getLogger("httpx")
_NONE_ONLY = frozenset({"content", "data", "files", "params", "cookies", "extensions"})
_CLIENT_DEFAULT_ONLY = frozenset({"auth", "follow_redirects", "timeout"})


def plain_request(kwargs: dict[str, Any]) -> bool:
    """Whether ``request``'s other arguments leave a plain request (all unset)."""
    for key, value in kwargs.items():
        if key in _NONE_ONLY:
            if value is not None:
                return False
        elif key not in _CLIENT_DEFAULT_ONLY or value is not httpx.USE_CLIENT_DEFAULT:
            return False
    return True


def lean_ok(client: httpx.AsyncClient) -> bool:
    """Whether ``client`` has nothing a plain request must go through (hooks, auth…)."""
    return not (
        client.is_closed
        or getattr(client, "_mounts", None)
        or client.auth is not None
        or str(client.base_url)
        or any(client.event_hooks.values())
        or len(client.cookies.jar)
    )


def merged_headers(client: httpx.AsyncClient, headers: Any) -> dict[str, str]:
    """The client's default headers with ``headers`` over them (lower-case keys)."""
    merged = dict(client.headers.multi_items())  # httpx's keys are lower case
    if headers:
        for key, value in headers.items():
            merged[key.lower()] = value
    return merged


def json_body(json: Any, merged: dict[str, str]) -> bytes | None:
    """``json`` encoded as httpx encodes it (the same bytes on the wire)."""
    if json is None:
        return None
    merged.setdefault("content-type", "application/json")
    return jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def finish(client: httpx.AsyncClient, response: httpx.Response) -> httpx.Response:
    """Store cookies and write httpx's log line, as httpx's own path does."""
    if "set-cookie" in response.headers:
        client.cookies.extract_cookies(response)
    if _httpx_logger.isEnabledFor(logging.INFO):
        _httpx_logger.info(
            'HTTP Request: %s %s "%s %d %s"',
            response.request.method,
            response.request.url,
            response.http_version,
            response.status_code,
            response.reason_phrase,
        )
    return response


class AnswerTooLarge(Exception):
    """An answer's body passed the cap; ``what`` says how it was known."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


async def read_capped(response: httpx.Response, cap: int) -> bytes:
    """The whole (decoded) body of a streamed ``response``, at most ``cap`` bytes of it.

    A stated ``Content-Length`` (without a content encoding) is checked before anything
    is read, then the body is read at once (the common case); otherwise the bytes are
    counted as they arrive, so an endless answer stops at the cap.

    Raises:
        AnswerTooLarge: the body is (or announces to be) longer than ``cap``.
    """
    length = response.headers.get("content-length")
    if "content-encoding" not in response.headers and length is not None and length.isdigit():
        if int(length) > cap:
            raise AnswerTooLarge(f"announced {length} bytes")
        return await response.aread()
    chunks: list[bytes] = []
    size = 0
    stream = response.aiter_bytes()
    try:
        async for chunk in stream:
            size += len(chunk)
            if size > cap:
                raise AnswerTooLarge(f"more than {cap} bytes")
            chunks.append(chunk)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]  # an async generator
    return b"".join(chunks)


class LeanAsyncClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose plain requests skip httpx's per-request layers."""

    async def request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        json: Any = None,
        headers: Any = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """As ``httpx.AsyncClient.request``; plain requests take the lean path (above)."""
        if not (plain_request(kwargs) and lean_ok(self)):
            return await super().request(method, url, json=json, headers=headers, **kwargs)
        response = await self._send_plain(method, url, json, headers)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return finish(self, response)

    async def lean_exchange(
        self, method: str, url: httpx.URL | str, *, json: Any, headers: Any, max_bytes: int
    ) -> tuple[httpx.Response, bytes] | None:
        """A plain request on the lean path, its body read with `read_capped`;
        ``None`` when this client has something a plain request must go through."""
        if not lean_ok(self):
            return None
        response = await self._send_plain(method, url, json, headers)
        try:
            content = await read_capped(response, max_bytes)
        finally:
            await response.aclose()
        return finish(self, response), content

    async def _send_plain(
        self, method: str, url: httpx.URL | str, json: Any, headers: Any
    ) -> httpx.Response:
        """Build a plain request and hand it to the transport (the body not read yet)."""
        merged = merged_headers(self, headers)
        body = json_body(json, merged)
        request = httpx.Request(
            method,
            url,
            headers=merged,
            content=body,
            extensions={"timeout": self.timeout.as_dict()},
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        return response
