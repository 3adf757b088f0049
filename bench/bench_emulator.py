"""How many requests per second the emulator serves on loopback (target: >= 2,000 queries/s).

The emulator runs as it does in tests: uvicorn in a background thread of this
process. The load comes from separate processes (so they do not share the
emulator's GIL), each driving keep-alive connections with raw sockets and a
selector: no HTTP client library, so the generator is not the bottleneck.
Everything is bounded (a few seconds per scenario) and stays on 127.0.0.1.

Usage::

    python bench/bench_emulator.py [--seconds 3] [--procs 2] [--conns 16] [--tasks 200]

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import selectors
import socket
import sys
import time
import urllib.request
from typing import Any

from wanr2v.testing import EmulatorConfig, Quotas, serve

KEY = "sk-bench"
CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
BODY = json.dumps(
    {"model": "wan2.6-r2v-flash", "input": {"prompt": "x", "reference_urls": ["https://a.b/c.mp4"]}}
).encode()


def _request(method: str, path: str, body: bytes = b"", extra: str = "") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _worker(port: int, requests: list[bytes], seconds: float, conns: int, out: Any) -> None:
    """Drive ``conns`` keep-alive connections, one request in flight each, for ``seconds``."""
    sel = selectors.DefaultSelector()
    state = {}
    for i in range(conns):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        state[s] = [bytearray(), i]
        s.sendall(requests[i % len(requests)])
        sel.register(s, selectors.EVENT_READ)
    done = 0
    statuses: dict[int, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            buf, nth = state[s]
            chunk = s.recv(262144)
            if not chunk:
                raise RuntimeError("server closed a connection")
            buf += chunk
            while True:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                head = bytes(buf[:end]).lower()
                at = head.find(b"content-length:")
                length = int(
                    head[at + 15 : head.find(b"\r\n", at) if b"\r\n" in head[at:] else None]
                )
                if len(buf) < end + 4 + length:
                    break
                status = int(head[9:12])
                statuses[status] = statuses.get(status, 0) + 1
                del buf[: end + 4 + length]
                done += 1
                nth += conns
                s.sendall(requests[nth % len(requests)])
            state[s][1] = nth
    for s in state:
        s.close()
    out.put((done, statuses))


def _run(
    port: int, requests: list[bytes], seconds: float, procs: int, conns: int
) -> dict[str, Any]:
    ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
    queue = ctx.Queue()
    workers = [
        ctx.Process(target=_worker, args=(port, requests, seconds, conns, queue))
        for _ in range(procs)
    ]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    results = [queue.get(timeout=seconds + 30) for _ in workers]
    elapsed = time.perf_counter() - t0
    server_cpu = time.process_time() - cpu0
    for w in workers:
        w.join(timeout=10)
    total = sum(r[0] for r in results)
    statuses: dict[int, int] = {}
    for _, st in results:
        for k, v in st.items():
            statuses[k] = statuses.get(k, 0) + v
    return {"requests": total, "seconds": elapsed, "statuses": statuses, "server_cpu": server_cpu}


def main(argv: list[str] | None = None) -> int:
    """Run the scenarios and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per scenario")
    parser.add_argument("--procs", type=int, default=2, help="load-generator processes")
    parser.add_argument("--conns", type=int, default=16, help="connections per process")
    parser.add_argument("--tasks", type=int, default=200, help="tasks to query")
    args = parser.parse_args(argv)

    config = EmulatorConfig(
        time_scale=100.0, seed=1, quotas=Quotas.off(), generation_time=(60, 300)
    )
    rows = []
    with serve(config) as emu:
        port = int(emu.origin.rsplit(":", 1)[1])
        ids = []
        for _ in range(args.tasks):
            req = urllib.request.Request(
                emu.base_url + "/services/aigc/video-generation/video-synthesis",
                data=BODY,
                headers={
                    "Authorization": f"Bearer {KEY}",
                    "X-DashScope-Async": "enable",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(req) as resp:
                ids.append(json.load(resp)["output"]["task_id"])
        scenarios = [
            ("query (GET tasks/{id})", [_request("GET", f"/api/v1/tasks/{t}") for t in ids]),
            (
                "create (quotas off)",
                [_request("POST", CREATE, BODY, "X-DashScope-Async: enable\r\n")],
            ),
            ("list (GET tasks, page of 10)", [_request("GET", "/api/v1/tasks?page_size=10")]),
        ]
        for name, requests in scenarios:
            r = _run(port, requests, args.seconds, args.procs, args.conns)
            rows.append((name, r))
        stats = emu.stats()

    print(
        f"Emulator on loopback, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"{args.procs} client processes x {args.conns} keep-alive connections, "
        f"{args.seconds:g} s per scenario.\n"
    )
    print("| scenario | requests | seconds | requests/s | statuses | server CPU s/s |")
    print("|---|---:|---:|---:|---|---:|")
    for name, r in rows:
        rate = r["requests"] / r["seconds"]
        st = ", ".join(f"{k}: {v}" for k, v in sorted(r["statuses"].items()))
        print(
            f"| {name} | {r['requests']} | {r['seconds']:.2f} | {rate:,.0f} | {st} | "
            f"{r['server_cpu'] / r['seconds']:.2f} |"
        )
    print(f"\nTasks held by the emulator at the end: {stats.tasks_created}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
