"""``wanr2v demo``: a multi-character batch on the built-in emulator, no key, no network.

Modelled on the vendor's own example (protocol.md, ``seeds/``): characters come from
video clips, an object and a background from pictures; some references are local
files (uploaded through the temporary-upload flow), others the vendor's sample URLs.
Both models run, some tasks silent. The emulator runs in this process on a loopback
socket, its clock sped up so that minutes of generation pass in seconds.

This module builds the inputs and runs the batch; ``_cli`` draws the progress and the
summary.
"""

from __future__ import annotations

import contextlib
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import anyio
import attrs

from ._batch_records import BatchItem, summarize
from ._client import AsyncWanClient, ClientStatistics
from ._events import TaskEvent
from ._exceptions import WanError
from ._limits import Limits
from ._models import VideoRequest
from ._polling import PollPolicy

__all__ = [
    "DEMO_GENERATION_TIME",
    "DEMO_TIME_SCALE",
    "DemoReport",
    "demo_requests",
    "make_png",
    "run_demo",
    "write_assets",
]

DEMO_TIME_SCALE: Final = 20.0
"""Emulator seconds per real second: one minute of the service passes in 3 s."""

DEMO_GENERATION_TIME: Final[dict[str, tuple[float, float]]] = {
    "wan2.6-r2v-flash": (200.0, 300.0),
    "wan2.6-r2v": (240.0, 340.0),
}
"""Generation times in emulator seconds (3–6 minutes, like the vendor's 4.6 min example),
so the batch takes 10–17 s of real time."""

DEMO_SEED: Final = 2026

VENDOR_URLS: Final[dict[str, str]] = {
    "role1": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20260129/hfugmr/wan-r2v-role1.mp4",
    "role2": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20260129/qigswt/wan-r2v-role2.mp4",
    "object": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20260129/qpzxps/wan-r2v-object4.png",
    "background": "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20260129/wfjikw/wan-r2v-backgroud5.png",
}
"""The references of the vendor's sample (the emulator accepts them without fetching)."""

VENDOR_PROMPT: Final = (
    "character2 sits on a chair by the window, holding character3, and plays a gentle "
    "American country folk song beside character4. character1 says to character2: "
    '"Sounds good."'
)
"""The vendor's sample prompt, in English."""


# --- assets ---------------------------------------------------------------------------


def make_png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int]]) -> bytes:
    """A valid RGB PNG (stdlib only): ``pixel(x, y)`` gives each ``(r, g, b)``.

    Args:
        width: pixels, at least 1.
        height: pixels, at least 1.
        pixel: the colour of each pixel.
    """
    if width < 1 or height < 1:
        raise ValueError(f"make_png: need a positive size, got {width}x{height}")
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type 0 (None) for each scanline
        for x in range(width):
            rows.extend(pixel(x, y))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def _guitar(x: int, y: int) -> tuple[int, int, int]:
    """An object on white: a round body and a neck (256 × 256)."""
    body = (x - 128) ** 2 + (y - 170) ** 2 < 60**2
    hole = (x - 128) ** 2 + (y - 170) ** 2 < 14**2
    neck = 120 <= x <= 136 and 30 <= y <= 120
    if hole:
        return (40, 25, 10)
    if body:
        return (190, 110, 40)
    if neck:
        return (90, 55, 25)
    return (255, 255, 255)


def _room(x: int, y: int) -> tuple[int, int, int]:
    """A background: a wall with a window, and a wooden floor (480 × 270)."""
    if y > 200:
        return (150 - (x % 40), 100, 60)
    if 300 <= x <= 420 and 40 <= y <= 150:
        return (150, 200, 255) if (x - 300) % 60 and (y - 40) % 55 else (240, 240, 240)
    return (230, 215, 190)


def write_assets(folder: Path) -> dict[str, Path]:
    """Write the demo's local references into ``folder`` (blocking: run it in a thread).

    Returns:
        ``role1`` and ``role2`` (MP4 clips of 5 s and 4 s), ``object`` (a PNG picture of
        a guitar) and ``background`` (a PNG picture of a room), by name.
    """
    from .testing import make_mp4

    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "role1": ("role1.mp4", make_mp4(5.0)),
        "role2": ("role2.mp4", make_mp4(4.0)),
        "object": ("object4.png", make_png(256, 256, _guitar)),
        "background": ("background5.png", make_png(480, 270, _room)),
    }
    out: dict[str, Path] = {}
    for name, (filename, data) in files.items():
        path = folder / filename
        path.write_bytes(data)
        out[name] = path
    return out


def demo_requests(assets: dict[str, Path]) -> dict[str, VideoRequest]:
    """The demo batch (5 tasks): both models, local files and URLs, some silent.

    Args:
        assets: what `write_assets` returned.
    """
    local = {name: str(path) for name, path in assets.items()}
    return {
        "vendor-example": VideoRequest(
            model="wan2.6-r2v-flash",
            prompt=VENDOR_PROMPT,
            reference_urls=[local["role1"], local["role2"], local["object"], local["background"]],
            size="1280*720",
            duration=10,
            shot_type="multi",
            audio=True,
            watermark=True,
        ),
        "duet": VideoRequest(
            model="wan2.6-r2v",
            prompt=(
                "character1 and character2 sing a duet in front of character3; the camera "
                "cuts between close-ups of each singer."
            ),
            reference_urls=[local["role1"], local["role2"], local["background"]],
            size="1280*720",
            duration=5,
            shot_type="multi",
        ),
        "silent-portrait": VideoRequest(
            model="wan2.6-r2v-flash",
            prompt="character1 tunes character2 slowly, in a quiet portrait shot.",
            reference_urls=[local["role2"], local["object"]],
            size="720*1280",
            duration=5,
            audio=False,
        ),
        "vendor-urls": VideoRequest(
            model="wan2.6-r2v-flash",
            prompt=(
                "character1 hands character3 to character2 in character4; both laugh. "
                "No music, no speech."
            ),
            reference_urls=list(VENDOR_URLS.values()),
            size="960*960",
            duration=6,
            shot_type="multi",
            audio=False,
        ),
        "solo-1080p": VideoRequest(
            model="wan2.6-r2v",
            prompt="character1 walks into character2 and waves at the camera.",
            reference_urls=[local["role1"], VENDOR_URLS["background"]],
            size="1920*1080",
            duration=5,
        ),
    }


# --- running --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class DemoReport:
    """What the demo did.

    Attributes:
        items: the batch outcomes, in request order.
        wall_seconds: real seconds from the first create to the last download.
        client: the client's counters (queries sent by kind, 429s, creates).
        emulator: the emulator's counters (``tasks_created``, ``duplicate_creates``,
            ``throttled``, answers by endpoint); ``None`` when running against an
            emulator in another process.
        base_url: where the batch ran.
        time_scale: emulator seconds per real second.
        out: the folder holding the videos.
    """

    items: list[BatchItem]
    wall_seconds: float
    client: ClientStatistics
    emulator: dict[str, Any] | None
    base_url: str
    time_scale: float
    out: Path

    @property
    def estimated_cost_usd(self) -> float:
        """The batch at the vendor's list prices (protocol.md, pricing)."""
        return summarize(self.items, self.wall_seconds).estimated_cost_usd


async def run_demo(
    out: Path,
    *,
    on_event: Callable[[TaskEvent], object] | None = None,
    on_start: Callable[[str, int], object] | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
    time_scale: float | None = None,
) -> DemoReport:
    """Run the demo batch and save its videos into ``out`` (as ``{key}.mp4``).

    Args:
        out: the folder for the videos (created if missing).
        on_event: called with every task lifecycle event (for a progress display).
        on_start: called with the base URL and the number of tasks before the first create.
        base_url: an emulator already running elsewhere (``wanr2v emulator``); default:
            one started here, on loopback, for the duration of the demo.
        api_key: the key for ``base_url`` (the built-in emulator needs none).
        time_scale: emulator seconds per real second (default `DEMO_TIME_SCALE`
            for the built-in emulator, 1 for another).
    """
    async with contextlib.AsyncExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wanr2v-demo-")))
        assets = await anyio.to_thread.run_sync(write_assets, folder / "references")
        requests = demo_requests(assets)
        emu: Any = None
        if base_url is None:
            from .testing import EmulatorConfig, serve
            from .testing._client import EMULATOR_KEY

            scale = time_scale or DEMO_TIME_SCALE
            config = EmulatorConfig(
                time_scale=scale, seed=DEMO_SEED, generation_time=DEMO_GENERATION_TIME
            )
            # serve() starts uvicorn in a thread and waits for it: not on the event loop.
            server = serve(config)
            emu = await anyio.to_thread.run_sync(server.__enter__)
            stack.push_async_callback(
                anyio.to_thread.run_sync, lambda: server.__exit__(None, None, None)
            )
            base_url, api_key = emu.base_url, EMULATOR_KEY
        else:
            scale = time_scale or 1.0
        client = AsyncWanClient(
            api_key=api_key,
            base_url=base_url,
            limits=Limits().scaled(scale),
            poll_policy=PollPolicy().scaled(scale),
            reconcile_wait=900.0 / scale,
        )
        await stack.enter_async_context(client)
        if on_event is not None:
            stack.callback(client.subscribe(on_event))
        await anyio.Path(out).mkdir(parents=True, exist_ok=True)
        if on_start is not None:
            on_start(client.base_url, len(requests))
        started = time.monotonic()
        items: list[BatchItem] = []
        order = {key: i for i, key in enumerate(requests)}
        async with client.as_completed(requests) as results:
            async for item in results:
                if item.ok and item.result is not None:
                    try:
                        path = await client.download(item.result, out / f"{item.key}.mp4")
                    except WanError as exc:
                        item = attrs.evolve(item, error=exc)
                    else:
                        item = attrs.evolve(item, path=path)
                items.append(item)
        items.sort(key=lambda it: order[it.key])
        wall = time.monotonic() - started
        emulator_stats: dict[str, Any] | None = None
        if emu is not None:
            emulator_stats = attrs.asdict(emu.stats())
        return DemoReport(
            items=items,
            wall_seconds=wall,
            client=client.statistics(),
            emulator=emulator_stats,
            base_url=client.base_url,
            time_scale=scale,
            out=out,
        )
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the stack may swallow)
