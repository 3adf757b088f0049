"""Download throughput and memory: wanr2v's Downloader against a raw httpx stream.

Serves one file (100 MB of random bytes by default) from a uvicorn server in a child
process on 127.0.0.1, then times, best of ``--repeat``:

- ``httpx stream, discard``: ``client.stream`` + ``aiter_raw``, bytes dropped (the ceiling);
- ``httpx stream -> file``: the same, written with blocking ``f.write`` (the usual code);
- ``Downloader``: wanr2v's, with ``fsync=False`` and with the default ``fsync=True``.

Peak memory is measured in fresh child processes (tracemalloc peak and the growth of the
resident set, ``VmHWM``), also for ``client.get`` (the whole body in memory) for contrast.
Prints a markdown table. Loopback only; the file and the outputs live in a temp folder.

Usage::

    python bench/bench_download.py [--size-mb 100] [--repeat 3] [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx

from wanr2v._download import Downloader
from wanr2v._models import TaskResult, TaskStatus

MIB = 1024 * 1024


# --- the server (child process) -----------------------------------------------------------


def serve(path: str) -> None:
    """Serve ``path`` at ``/video.mp4`` (Range supported) and print the port."""
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import FileResponse
    from starlette.routing import Route

    class Video(FileResponse):
        chunk_size = 256 * 1024

    async def video(request: object) -> FileResponse:
        return Video(path, media_type="video/mp4")

    app = Starlette(routes=[Route("/video.mp4", video)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", http="h11", ws="none")
    uvicorn.Server(config).run(sockets=[sock])


# --- the contenders -----------------------------------------------------------------------


async def raw_discard(http: httpx.AsyncClient, url: str, dest: Path) -> None:
    async with http.stream("GET", url) as response:
        response.raise_for_status()
        async for _ in response.aiter_raw():
            pass


async def raw_to_file(http: httpx.AsyncClient, url: str, dest: Path) -> None:
    async with http.stream("GET", url) as response:
        response.raise_for_status()
        with dest.open("wb") as fh:
            async for chunk in response.aiter_raw():
                fh.write(chunk)


async def whole_body(http: httpx.AsyncClient, url: str, dest: Path) -> None:
    response = await http.get(url)
    response.raise_for_status()
    dest.write_bytes(response.content)  # noqa: ASYNC240 - the naive baseline blocks on purpose


def downloader(fsync: bool) -> Callable[[httpx.AsyncClient, str, Path], Awaitable[None]]:
    async def run(http: httpx.AsyncClient, url: str, dest: Path) -> None:
        result = TaskResult(task_id="bench", status=TaskStatus.SUCCEEDED, video_url=url)
        await Downloader(http, fsync=fsync).download(result, dest)

    return run


CONTENDERS: dict[str, Callable[[httpx.AsyncClient, str, Path], Awaitable[None]]] = {
    "httpx stream, discard": raw_discard,
    "httpx stream -> file (blocking writes)": raw_to_file,
    "Downloader (fsync=False)": downloader(False),
    "Downloader (fsync=True, default)": downloader(True),
    "httpx client.get (whole body in memory)": whole_body,
}
TIMED = list(CONTENDERS)[:4]
MEASURED = [TIMED[1], TIMED[2], TIMED[3], list(CONTENDERS)[4]]


# --- measuring ----------------------------------------------------------------------------


def vm_hwm() -> int:
    """Peak resident set size of this process, in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def vm_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def timed(name: str, url: str, out: Path, repeat: int) -> float:
    """Best wall time of ``repeat`` runs, in seconds."""
    best = float("inf")
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(repeat):
            dest = out / "timed.mp4"
            dest.unlink(missing_ok=True)
            start = time.perf_counter()
            await CONTENDERS[name](http, url, dest)
            best = min(best, time.perf_counter() - start)
    return best


async def measure(name: str, url: str, out: Path) -> dict[str, int]:
    """Peak memory of one download in this (fresh) process."""
    async with httpx.AsyncClient(timeout=60) as http:
        # Warm up imports, the connection pool and the thread pool before the baseline.
        await CONTENDERS[name](http, url.replace("video.mp4", "video.mp4?warm"), out / "w.mp4")
        (out / "w.mp4").unlink(missing_ok=True)
        base_rss = vm_rss()
        tracemalloc.start()
        await CONTENDERS[name](http, url, out / "m.mp4")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {"tracemalloc_peak": peak, "rss_growth": max(0, vm_hwm() - base_rss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.measure:
        name, url, out = args.measure
        figures = anyio.run(measure, name, url, Path(out), backend=args.backend)
        print(json.dumps(figures))
        return
    if not 1 <= args.size_mb <= 1024:
        parser.error("--size-mb must be within 1..1024")

    with tempfile.TemporaryDirectory(prefix="wanr2v-bench-") as tmp:
        folder = Path(tmp)
        source = folder / "source.mp4"
        with source.open("wb") as fh:
            for _ in range(args.size_mb):
                fh.write(os.urandom(MIB))
        size = source.stat().st_size
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(source)], stdout=subprocess.PIPE, text=True
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            url = f"http://127.0.0.1:{port}/video.mp4"
            for _ in range(100):
                try:
                    httpx.head(url, timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            seconds = {
                name: anyio.run(timed, name, url, folder, args.repeat, backend=args.backend)
                for name in TIMED
            }
            memory = {}
            for name in MEASURED:
                child = subprocess.run(
                    [sys.executable, __file__, "--backend", args.backend, "--measure", name, url,
                     str(folder)],
                    capture_output=True, text=True, check=True, timeout=300,
                )  # fmt: skip
                memory[name] = json.loads(child.stdout.strip().splitlines()[-1])
        finally:
            server.terminate()
            server.wait(10)

    baseline = seconds[TIMED[1]]
    print(
        f"\nDownload of {size / MIB:.0f} MiB over loopback (uvicorn/h11 server in a child "
        f"process), {args.backend}, best of {args.repeat}\n"
    )
    print("| contender | MiB/s | vs httpx -> file | tracemalloc peak | RSS growth |")
    print("|---|---:|---:|---:|---:|")
    for name in CONTENDERS:
        rate = f"{size / MIB / seconds[name]:.0f}" if name in seconds else "-"
        ratio = f"{100 * baseline / seconds[name]:.0f} %" if name in seconds else "-"
        mem = memory.get(name)
        peak = f"{mem['tracemalloc_peak'] / MIB:.1f} MiB" if mem else "-"
        rss = f"{mem['rss_growth'] / MIB:.1f} MiB" if mem else "-"
        print(f"| {name} | {rate} | {ratio} | {peak} | {rss} |")


if __name__ == "__main__":
    main()
