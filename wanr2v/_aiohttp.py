"""An optional fast transport: httpx's API on aiohttp's connection pool (asyncio only).

``pip install 'wanr2v[aiohttp]'``, then::

    async with wanr2v.AioHttpClient() as http, AsyncWanClient(http_client=http) as client:
        ...

`AioHttpClient` is an ``httpx.AsyncClient`` whose transport is
``httpx-aiohttp``'s ``AiohttpTransport`` (the aiohttp option openai-python offers):
requests, answers and errors keep httpx's types, so the rest of wanr2v does not know
the difference, while the connection pool and the HTTP/1.1 parser are aiohttp's (C
accelerated), several times cheaper per request on CPU than httpcore's.

Guarantees and limits:

- asyncio only: aiohttp does not run under trio. Under any other event loop the
  client warns once (``RuntimeWarning``) and sends through httpx's default transport,
  with the same pool size, so code written for asyncio keeps working under trio.
- One event loop: the aiohttp session is made on first use and belongs to that loop;
  using the client from another loop (a second ``asyncio.run``) raises
  ``RuntimeError``: make one client per loop.
- Errors keep the money rule: only a failure to *establish* a connection
  (``aiohttp.ClientConnectorError``, a connect or pool timeout) becomes
  ``httpx.ConnectError`` / ``httpx.ConnectTimeout``, which say nothing was sent.
  ``httpx-aiohttp`` maps every ``aiohttp.ClientConnectionError`` to
  ``ConnectTimeout``, a server that dropped the connection mid-exchange too; here such
  a failure is ``httpx.ReadError`` (the request may have arrived), so a create is
  reconciled, never blindly re-sent.
- Plain requests take a lean path: `AioHttpClient.request` with at most a
  JSON body and headers, on a client without event hooks, auth, a base URL, proxy
  mounts or stored cookies, goes straight to the aiohttp session and builds the
  ``httpx.Response`` from the whole answer, skipping httpx's per-request client
  layer (URL merging, cookie adapters, streaming wrappers: about half of this
  client's CPU per request). The answer is the same ``httpx.Response`` (headers,
  decoded body, request, cookies stored, httpx's ``HTTP Request:`` log line), except
  that ``elapsed`` is not set. Anything else (``stream``, ``send``, files, params,
  hooks…) takes httpx's full path.
- An ``AsyncWanClient`` never closes an http client you pass it: close this one
  (``async with``, or ``await http.aclose()``), or aiohttp reports an unclosed
  session. Its pool (``max_connections``, default 100) should hold at least
  ``Limits.max_connections`` (default 20): the governor never has more requests in
  flight than that.
"""

from __future__ import annotations

import asyncio
import importlib.util
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ._config import DEFAULT_TIMEOUT
from ._http import lean_cookies
from ._lean import (
    AnswerTooLarge,
    finish,
    json_body,
    lean_ok,
    merged_headers,
    plain_request,
)

__all__ = ["AioHttpClient"]

_INSTALL_HINT = "AioHttpClient needs aiohttp and httpx-aiohttp: pip install 'wanr2v[aiohttp]'"


def _remap(exc: BaseException) -> httpx.TransportError | None:
    """The httpx exception for an aiohttp failure (raised as is, or as httpx-aiohttp's
    mapping with the aiohttp error as its cause); ``None`` when it is not one."""
    import aiohttp

    cause = exc if isinstance(exc, aiohttp.ClientError) else exc.__cause__
    if not isinstance(cause, aiohttp.ClientError):
        return None
    message = str(cause) or type(cause).__name__
    cls: type[httpx.TransportError]
    if isinstance(cause, aiohttp.ClientConnectorError):
        cls = httpx.ConnectError  # no connection was made: nothing sent
    elif isinstance(cause, aiohttp.ConnectionTimeoutError):
        cls = httpx.ConnectTimeout  # waiting for a pooled or new connection: nothing sent
    elif isinstance(cause, aiohttp.ServerTimeoutError):
        cls = httpx.ReadTimeout
    elif isinstance(cause, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)):
        cls = httpx.ReadError  # dropped mid-exchange: the request may have arrived
    else:
        cls = httpx.RemoteProtocolError  # e.g. an answer aiohttp could not parse
    return cls(f"{type(cause).__name__}: {message}")


async def _read_capped(answer: Any, cap: int) -> bytes:
    """An aiohttp answer's raw body, at most ``cap`` bytes (see ``_lean.read_capped``)."""
    length = answer.content_length
    if length is not None and "Content-Encoding" not in answer.headers:
        if length > cap:
            raise AnswerTooLarge(f"announced {length} bytes")
        data: bytes = await answer.read()
        return data
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.content.iter_any():
        size += len(chunk)
        if size > cap:
            raise AnswerTooLarge(f"more than {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Body(httpx.AsyncByteStream):
    """An answer's body from aiohttp, its errors translated as above."""

    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except Exception as exc:
            mapped = _remap(exc)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        except Exception as exc:
            mapped = _remap(exc)
            if mapped is None:
                raise
            raise mapped from exc


class _Transport(httpx.AsyncBaseTransport):
    """aiohttp under asyncio, httpx's own transport (with a warning) elsewhere."""

    def __init__(self, *, limits: httpx.Limits, verify: Any, cert: Any, trust_env: bool) -> None:
        self._options: dict[str, Any] = {
            "limits": limits,
            "verify": verify,
            "cert": cert,
            "trust_env": trust_env,
        }
        self._aio: httpx.AsyncBaseTransport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fallback: httpx.AsyncBaseTransport | None = None

    def _aiohttp(self, loop: asyncio.AbstractEventLoop) -> httpx.AsyncBaseTransport:
        if self._aio is None:
            try:
                from httpx_aiohttp import AiohttpTransport
            except ImportError as exc:  # pragma: no cover - checked at construction
                raise ImportError(_INSTALL_HINT) from exc
            self._aio = AiohttpTransport(**self._options)
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(
                "This AioHttpClient was first used on another event loop (aiohttp "
                "sessions belong to one loop): make one AioHttpClient per asyncio.run()."
            )
        return self._aio

    def _default(self) -> httpx.AsyncBaseTransport:
        if self._fallback is None:
            warnings.warn(
                "AioHttpClient: aiohttp runs on asyncio only; under this event loop it "
                "sends through httpx's default transport instead.",
                RuntimeWarning,
                stacklevel=2,
            )
            self._fallback = httpx.AsyncHTTPTransport(**self._options)
        return self._fallback

    def session(self) -> Any:
        """The aiohttp session for a lean request, or ``None`` (not on asyncio)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        aio: Any = self._aiohttp(loop)
        client = aio.client
        if client is None or client.__class__.__name__ != "ClientSession":
            client = aio.client = aio.get_client()
        return client

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio (or another loop): no asyncio loop is running
            return await self._default().handle_async_request(request)
        transport = self._aiohttp(loop)
        try:
            response = await transport.handle_async_request(request)
        except Exception as exc:
            mapped = _remap(exc)
            if mapped is None:
                raise
            raise mapped from exc
        stream = response.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        response.stream = _Body(stream)
        return response

    async def aclose(self) -> None:
        aio, self._aio = self._aio, None
        fallback, self._fallback = self._fallback, None
        if aio is not None:
            await aio.aclose()
        if fallback is not None:
            await fallback.aclose()


class AioHttpClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` on aiohttp's connection pool, for ``http_client=``.

    Example::

        async with AioHttpClient() as http, AsyncWanClient(http_client=http) as client:
            result = await client.call(model="wan2.6-r2v-flash", prompt=..., reference_urls=[...])

    Args:
        max_connections: the pool's size (connections kept alive too); keep it at or
            above ``Limits.max_connections``.
        timeout: seconds for one request (connect, read, write and pool wait);
            ``AsyncWanClient(timeout=...)`` applies only to the client it makes itself.
        verify: TLS verification, as for ``httpx.AsyncClient``.
        cert: a client certificate, as for ``httpx.AsyncClient``.
        trust_env: read proxies and certificates from the environment, as for
            ``httpx.AsyncClient``.
        **kwargs: other ``httpx.AsyncClient`` options (not ``transport``, ``mounts``,
            ``limits`` or ``http2``: aiohttp speaks HTTP/1.1).

    Raises:
        ImportError: aiohttp or httpx-aiohttp is not installed.
    """

    def __init__(
        self,
        *,
        max_connections: int = 100,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        verify: Any = True,
        cert: Any = None,
        trust_env: bool = True,
        **kwargs: Any,
    ) -> None:
        try:
            import aiohttp  # noqa: F401
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT) from exc
        # Imported only when a request needs the httpx transport (streams, files): the
        # plain requests go straight to aiohttp, and the import costs ~0.7 MB.
        if importlib.util.find_spec("httpx_aiohttp") is None:
            raise ImportError(_INSTALL_HINT)
        for name in ("transport", "mounts", "limits", "http2"):
            if name in kwargs:
                raise TypeError(f"AioHttpClient does not take {name}=: it sets its own.")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}.")
        self.max_connections: int = max_connections
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        super().__init__(
            timeout=timeout,
            verify=verify,
            cert=cert,
            trust_env=trust_env,
            limits=limits,
            transport=_Transport(limits=limits, verify=verify, cert=cert, trust_env=trust_env),
            **kwargs,
        )
        lean_cookies(self)

        self._lean_transport: _Transport = self._transport  # type: ignore[assignment]
        self._lean_timeout: tuple[httpx.Timeout, Any] | None = None

    def __repr__(self) -> str:
        return f"AioHttpClient(max_connections={self.max_connections})"

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
        session = self._lean_session() if plain_request(kwargs) else None
        if session is None:
            return await super().request(method, url, json=json, headers=headers, **kwargs)
        return await self._lean_request(session, method, url, json, headers)

    def _lean_session(self) -> Any:
        if self._transport is not self._lean_transport or not lean_ok(self):
            return None
        return self._lean_transport.session()

    def _aiohttp_timeout(self) -> Any:
        timeout = self.timeout
        cached = self._lean_timeout
        if cached is None or cached[0] is not timeout:
            import aiohttp

            value = aiohttp.ClientTimeout(
                sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool
            )
            cached = self._lean_timeout = (timeout, value)
        return cached[1]

    async def lean_exchange(
        self, method: str, url: httpx.URL | str, *, json: Any, headers: Any, max_bytes: int
    ) -> tuple[httpx.Response, bytes] | None:
        """A plain request straight on aiohttp, at most ``max_bytes`` of its answer read
        (`AnswerTooLarge` past it); ``None`` when this client has
        something a plain request must go through."""
        session = self._lean_session()
        if session is None:
            return None
        response = await self._lean_request(session, method, url, json, headers, max_bytes)
        content = response.content
        if len(content) > max_bytes:  # decoded past the cap (a compressed answer)
            raise AnswerTooLarge(f"more than {max_bytes} bytes decoded")
        return response, content

    async def _lean_request(
        self,
        session: Any,
        method: str,
        url: httpx.URL | str,
        json: Any,
        headers: Any,
        max_bytes: int | None = None,
    ) -> httpx.Response:
        merged = merged_headers(self, headers)
        body = json_body(json, merged)
        try:
            async with session.request(
                method,
                str(url),
                data=body,
                headers=merged,
                allow_redirects=False,
                auto_decompress=False,  # httpx decodes, as on its own path
                timeout=self._aiohttp_timeout(),
            ) as answer:
                if max_bytes is None:
                    raw = await answer.read()
                else:
                    raw = await _read_capped(answer, max_bytes)
                status, reason, raw_headers = answer.status, answer.reason, answer.raw_headers
        except Exception as exc:
            mapped = _remap(exc)
            if mapped is None:
                raise
            raise mapped from exc
        # The record of what was sent (``response.request``): built from a stream, which
        # skips httpx's body encoding and derived headers (aiohttp set its own), read at
        # once so its ``content`` is there (a third of the cost of ``content=``).
        request = httpx.Request(method, url, headers=merged, stream=httpx.ByteStream(body or b""))
        request.read()
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason.encode()
        response = httpx.Response(
            status, headers=raw_headers, content=raw, request=request, extensions=extensions
        )
        return finish(self, response)
