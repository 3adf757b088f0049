"""A batch script: a JSONL file of requests → a journal → videos on disk → a summary.

Usage::

    export DASHSCOPE_API_KEY=sk-...                  # or, to try it without a key:
    #   python -m wanr2v.testing --port 8000 --generation-time 5 20 &
    #   export DASHSCOPE_HTTP_BASE_URL=http://127.0.0.1:8000/api/v1 DASHSCOPE_API_KEY=sk-local
    python examples/batch/batch.py examples/batch/requests.jsonl --journal batch.db --out videos

Each line of the file holds the fields of ``AsyncWanClient.async_call`` and an optional
``"key"``. Every submission is recorded in the journal before its create is sent, so
the script can be killed at any moment (``kill -9`` included) and run again with the
same arguments: it then resumes, polling the tasks it knows and never paying for a
video twice. Exit status: 0 when every video is saved, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from wanr2v import AsyncWanClient, TaskEvent
from wanr2v.journal import SQLiteJournal


def read_requests(path: Path) -> dict[str, dict[str, Any]]:
    """The batch file's requests by key (the line number when a line has no key)."""
    requests: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = json.loads(line)
        key = str(fields.pop("key", f"line-{number}"))
        if key in requests:
            raise SystemExit(f"{path}:{number}: duplicate key {key!r}")
        requests[key] = fields
    return requests


async def run(requests_file: Path, journal_path: Path, out: Path) -> int:
    requests = read_requests(requests_file)
    started = time.monotonic()

    def progress(event: TaskEvent) -> None:
        if event.kind in ("running", "succeeded", "failed", "canceled", "unknown"):
            print(f"{time.monotonic() - started:7.1f}s  {event.key}: {event.kind}", flush=True)

    async with AsyncWanClient() as client, SQLiteJournal(journal_path) as journal:
        client.subscribe(progress)
        known = {record.batch_key for record in await journal.list()}
        if known:
            # A previous run recorded these: finish them (reconciling any create whose
            # answer was lost), then submit what the file holds beyond them.
            print(f"resuming {len(known)} recorded submission(s) from {journal_path}")
            items = await client.resume(journal, download_to=out)
            new = {key: fields for key, fields in requests.items() if key not in known}
            items += await client.run_many(new, journal=journal, download_to=out)
        else:
            items = await client.run_many(requests, journal=journal, download_to=out)

        print()
        for item in items:
            outcome = str(item.path) if item.ok else f"{type(item.error).__name__}: {item.error}"
            print(f"{item.key:<12} {outcome}")
        stats = client.statistics()
        saved = sum(item.ok for item in items)
        print(
            f"\n{saved}/{len(items)} saved in {time.monotonic() - started:.1f}s; "
            f"requests {dict(stats.requests)}, 429s {stats.rate_limited}, "
            f"reconciled {stats.reconciled}"
        )
        return 0 if saved == len(items) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requests", type=Path, help="a JSONL file, one request a line")
    parser.add_argument("--journal", type=Path, default=Path("batch.db"))
    parser.add_argument("--out", type=Path, default=Path("videos"))
    args = parser.parse_args(argv)
    return anyio.run(run, args.requests, args.journal, args.out)


if __name__ == "__main__":
    sys.exit(main())
