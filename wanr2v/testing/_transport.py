"""An httpx transport that reaches an emulator in process, socket faults included."""

from __future__ import annotations

import math

import anyio
import httpx

from wanr2v.testing._app import ASGIApp, ConnectionDropped, ConnectionHung

__all__ = ["EmulatorTransport"]


class EmulatorTransport(httpx.AsyncBaseTransport):
    """``httpx.ASGITransport`` around the emulator's app, failing as a socket would.

    An injected dropped connection raises ``httpx.RemoteProtocolError``; an injected
    hang waits for the request's read timeout and raises ``httpx.ReadTimeout`` (or,
    when the hang is shorter than the timeout, ``RemoteProtocolError`` at its end).

    Args:
        app: The emulator's ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request to the app."""
        try:
            return await self._inner.handle_async_request(request)
        except ConnectionDropped:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None
        except ConnectionHung as hung:
            timeout = request.extensions.get("timeout", {}).get("read")
            limit = math.inf if timeout is None else float(timeout)
            await anyio.sleep(min(limit, hung.seconds))
            if limit < hung.seconds:
                raise httpx.ReadTimeout("The read operation timed out", request=request) from None
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None

    async def aclose(self) -> None:
        """Close the transport."""
        await self._inner.aclose()
