"""Serving an emulator with uvicorn on a real (loopback) socket, in a background thread.

A thread, not a task: the caller may be sync code, an asyncio test or a trio test,
and the server must keep answering while the caller blocks.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

from wanr2v.testing._config import EmulatorConfig
from wanr2v.testing._emulator import Emulator

__all__ = ["EmulatorServer", "serve"]

DEFAULT_HOST = "127.0.0.1"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only
    # when their proto says TCP; without it every keep-alive answer waits ~40 ms
    # for a delayed ACK (headers and body go out as two segments).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _uvicorn_config(emu: Emulator, log_level: str) -> Any:
    import uvicorn

    return uvicorn.Config(
        emu.app(),
        lifespan="off",
        log_level=log_level,
        access_log=False,
        http="auto",  # httptools when installed (about twice as fast), else h11
        loop="asyncio",
        proxy_headers=False,
        server_header=False,
        date_header=False,  # the app sends the emulator clock's Date
        backlog=2048,
        timeout_keep_alive=30,
        # Injected hangs and slow answers must not hold up a shutdown.
        timeout_graceful_shutdown=1,
    )


class EmulatorServer:
    """An emulator served by uvicorn in a daemon thread.

    Args:
        emulator: The emulator to serve.
        host: The address to listen on (loopback by default).
        port: The port (0: a free one, see `port`).
        log_level: uvicorn's log level.
    """

    def __init__(
        self,
        emulator: Emulator,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        log_level: str = "warning",
    ) -> None:
        self.emulator = emulator
        self.host = host
        self._sock = _bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        self._log_level = log_level
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def origin(self) -> str:
        """``http://host:port`` of the server."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; return once the server accepts connections."""
        import uvicorn

        self._server = uvicorn.Server(_uvicorn_config(self.emulator, self._log_level))
        self.emulator._served_origin = self.origin

        def run() -> None:
            try:
                self._server.run(sockets=[self._sock])
            except BaseException as exc:  # pragma: no cover - reported by start()
                self._error = exc

        self._thread = threading.Thread(
            target=run, name=f"wanr2v-emulator:{self.port}", daemon=True
        )
        self._thread.start()
        ready = threading.Event()
        for _ in range(int(timeout / 0.005)):
            if self._server.started or not self._thread.is_alive():
                break
            ready.wait(0.005)
        if not self._server.started:
            self.stop()
            raise RuntimeError(f"the emulator did not start: {self._error!r}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self._sock.close()
        self.emulator._served_origin = None


@contextlib.contextmanager
def serve(
    config: EmulatorConfig | Emulator | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = 0,
    log_level: str = "warning",
) -> Iterator[Emulator]:
    """Serve an emulator on a socket for the duration of a ``with`` block.

    Example::

        with serve(EmulatorConfig(time_scale=100), port=0) as emu:
            print(emu.base_url)  # http://127.0.0.1:PORT/api/v1

    Args:
        config: A config to build the emulator from, or an emulator to serve.
        host: The address to listen on (loopback by default).
        port: The port (0: a free one).
        log_level: uvicorn's log level.

    Yields:
        The served emulator; its ``base_url`` points at the socket.
    """
    emu = config if isinstance(config, Emulator) else Emulator(config)
    server = EmulatorServer(emu, host=host, port=port, log_level=log_level)
    server.start()
    try:
        yield emu
    finally:
        server.stop()
