"""A journaled batch in a child process, for the kill-and-resume chaos test.

``python tests/_chaos_runner.py run|resume --base-url URL --journal DB --out DIR
--tasks N --seed S``: ``run`` sends the chaos requests with ``run_many`` (journaled,
downloading); ``resume`` finishes the journal's submissions with ``client.resume``.
The test process serves the emulator (loopback only) and SIGKILLs this one when
the journal shows a point of progress drawn from the seed. Prints one summary line when it finishes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests._chaos import SCALE, client_kwargs, requests
from wanr2v import AsyncWanClient
from wanr2v._polling import PollPolicy
from wanr2v.journal import SQLiteJournal


async def main(args: argparse.Namespace) -> int:
    if not args.base_url.startswith(("http://127.0.0.1:", "http://[::1]:")):
        print("refusing a base URL that is not loopback", file=sys.stderr)
        return 2
    kwargs = client_kwargs()
    journal = await SQLiteJournal.open(args.journal, secrets=[kwargs["api_key"]])
    async with (
        journal,
        AsyncWanClient(
            base_url=args.base_url, poll_policy=PollPolicy().scaled(SCALE), **kwargs
        ) as client,
    ):
        with anyio.fail_after(args.deadline):
            if args.mode == "run":
                items = await client.run_many(
                    requests(args.tasks, args.seed), journal=journal, download_to=args.out
                )
            else:
                items = await client.resume(journal, download_to=args.out)
    ok = sum(it.ok or it.path is not None for it in items)
    errors = sorted({type(it.error).__name__ for it in items if it.error is not None})
    print(f"{args.mode}: {len(items)} items, {ok} ok, errors={errors}", flush=True)
    # Like `wanr2v`: 3 when something is unfinished and a resume would go on with it.
    return 0 if ok == len(items) else 3


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["run", "resume"])
    p.add_argument("--base-url", required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    # A bound for a hung child only (the parent declares a round hung sooner): never a
    # deadline that a slow, loaded machine could reach.
    p.add_argument("--deadline", type=float, default=900.0)
    sys.exit(anyio.run(main, p.parse_args()))
