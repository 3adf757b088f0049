"""Hostile servers: how long each case takes to end in a typed error, and the memory it costs.

Each case plays one of the emulator's hostile fault kinds over loopback against a
client with ``timeout=5, max_retries=1`` (the setup the cases were first found with)
and the default caps (answers 4 MiB, videos 1 GiB). Peak RSS growth is ``VmHWM`` after
minus ``VmRSS`` before (the peak is reset first; the emulator serves from the same
process, so the figure bounds the client's). Linux only. Run::

    python bench/bench_hostile.py
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from wanr2v import AsyncWanClient, TaskResult, WanError
from wanr2v.testing import Emulator, EmulatorConfig, FaultRule, serve
from wanr2v.testing._client import client_for

KEY = "sk-measure-SECRET-0123456789abcdef"
REQ: dict[str, Any] = {
    "model": "wan2.6-r2v-flash",
    "prompt": "character1 in the rain",
    "reference_urls": ["https://cdn.example.com/me.mp4"],
}
Action = Callable[[AsyncWanClient, TaskResult | None], Awaitable[object]]


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


async def case(
    emu: Emulator, name: str, rules: Sequence[FaultRule], action: Action, *, video: bool = False
) -> None:
    """Run one case and print its table row."""
    emu.reset()
    async with client_for(
        emu, api_key=KEY, timeout=5.0, max_retries=1, reconcile_grace=2.0
    ) as client:
        done = await client.call(**REQ) if video else None
        for rule in rules:
            emu.faults.add(rule)
        _reset_peak()
        before = _status_kb("VmRSS")
        started = time.monotonic()
        try:
            await action(client, done)
            outcome = "no error"
        except WanError as exc:
            outcome = type(exc).__name__
            if KEY in str(exc) or KEY in repr(exc):
                outcome += " (KEY LEAKED)"
        took = time.monotonic() - started
        growth = (_status_kb("VmHWM") - before) / 1024
    print(f"| {name} | {outcome} | {took:.1f} s | {growth:.0f} MB |", flush=True)


async def main(emu: Emulator, out: Path) -> None:
    """Every case, one table."""
    print("| the server | ends in | after | peak RSS growth |\n|---|---|---|---|")

    async def fetch(c: AsyncWanClient, _: TaskResult | None) -> object:
        return await c.fetch("t-1")

    async def create(c: AsyncWanClient, _: TaskResult | None) -> object:
        return await c.async_call(**REQ)

    async def download(c: AsyncWanClient, done: TaskResult | None) -> object:
        assert done is not None
        return await c.download(done, out)

    def rule(kind: str, endpoint: str, **kw: Any) -> FaultRule:
        return FaultRule(kind=kind, endpoint=endpoint, **kw)

    await case(emu, "query answer that never ends", [rule("endless_body", "query")], fetch)
    await case(
        emu, "query answer, one byte every 3 s", [rule("trickle", "query", delay=3.0)], fetch
    )
    await case(
        emu,
        "create answer, one byte every 3 s (then reconciled)",
        [rule("trickle", "create", delay=3.0, count=1)],
        create,
    )
    await case(
        emu, "400 echoing the Authorization header", [rule("echo_headers", "create")], create
    )
    await case(
        emu,
        "lost create, then a list repeating one page forever",
        [rule("drop_after_commit", "create", count=1), rule("repeat_page", "list")],
        create,
    )
    await case(emu, "100 MB JSON answer", [rule("huge_answer", "query", size=100_000_000)], fetch)
    await case(emu, "endless video body", [rule("endless_body", "video")], download, video=True)


if __name__ == "__main__":
    folder = Path(tempfile.mkdtemp())
    with serve(EmulatorConfig(time_scale=60.0, generation_time=(30.0, 60.0))) as emulator:
        anyio.run(main, emulator, folder)
    print("files left in the download folder:", sorted(p.name for p in folder.iterdir()))
