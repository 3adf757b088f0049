"""``python -m wanr2v.testing``: serve an emulator until Ctrl-C.

The parser and `main` are public to the package so that ``wanr2v emulator``
can reuse them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from wanr2v.testing._config import EmulatorConfig, Quotas, RegionConfig
from wanr2v.testing._emulator import Emulator
from wanr2v.testing._server import DEFAULT_HOST, _bind, _uvicorn_config

__all__ = ["build_parser", "config_from_args", "main"]


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Add the emulator's options to ``parser`` (a new one if ``None``) and return it."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog="python -m wanr2v.testing",
            description="Serve an emulator of the DashScope Wan 2.6 reference-to-video API.",
        )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port; 0 picks a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="emulator seconds per real second, e.g. 100 (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of every random draw")
    parser.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="a valid key (repeatable); without any, every sk-... key is accepted",
    )
    parser.add_argument(
        "--region",
        action="append",
        default=[],
        metavar="NAME[=KEY,...]",
        help="an extra region served at /NAME/api/v1, with its own keys (repeatable)",
    )
    parser.add_argument(
        "--generation-time",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=None,
        help="generation time bounds in emulator seconds (default: vendor-like per model)",
    )
    parser.add_argument("--no-quotas", action="store_true", help="turn every quota off")
    parser.add_argument(
        "--strict-running",
        action="store_true",
        help="answer 429 Throttling.AllocationQuota past 5 running tasks instead of queueing",
    )
    world = parser.add_argument_group(
        "world knobs", "a world less kind than the default one (times in emulator seconds)"
    )
    world.add_argument(
        "--list-lag",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="a new task shows in the task list S seconds after its create",
    )
    world.add_argument(
        "--query-lag",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="a task younger than S seconds answers UNKNOWN on query",
    )
    world.add_argument(
        "--commit-delay",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="a create whose connection dropped after it was carried out commits S seconds "
        "later (invisible until then)",
    )
    world.add_argument(
        "--prompt-normalization",
        action="store_true",
        help="show orig_prompt normalized (Unicode NFC, trimmed, whitespace runs collapsed)",
    )
    world.add_argument(
        "--page-size-cap",
        type=_page_cap,
        default=None,
        metavar="N",
        help="serve at most N rows per task-list page, whatever page_size asks",
    )
    parser.add_argument(
        "--log-level", default="warning", help="uvicorn log level (default: %(default)s)"
    )
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _page_cap(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """Turn parsed options into an `EmulatorConfig`."""
    quotas = Quotas.off() if args.no_quotas else Quotas()
    if args.strict_running:
        import attrs

        quotas = attrs.evolve(quotas, strict_running=True)
    regions = {}
    for spec in args.region:
        name, _, keys = spec.partition("=")
        regions[name] = RegionConfig(api_keys=[k for k in keys.split(",") if k])
    return EmulatorConfig(
        api_keys=list(args.api_key),
        regions=regions,
        quotas=quotas,
        time_scale=args.time_scale,
        seed=args.seed,
        generation_time=tuple(args.generation_time) if args.generation_time else None,
        list_lag=args.list_lag,
        query_lag=args.query_lag,
        commit_delay=args.commit_delay,
        prompt_normalization=args.prompt_normalization,
        page_size_cap=args.page_size_cap,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the emulator in the foreground until interrupted; return the exit status."""
    args = build_parser().parse_args(argv)
    import uvicorn

    emu = Emulator(config_from_args(args))
    sock = _bind(args.host, args.port)
    host = f"[{args.host}]" if ":" in args.host else args.host
    emu._served_origin = f"http://{host}:{sock.getsockname()[1]}"
    print(f"wanr2v emulator listening on {emu.base_url}", flush=True)
    for region in emu.regions[1:]:
        print(f"  region {region}: {emu.base_url_for(region)}", flush=True)
    print(f"  seed {emu.seed}, time scale {args.time_scale:g}", flush=True)
    changed = {k: v for k, v in emu.world().items() if v not in (0.0, False, None)}
    if changed:
        print("  world: " + ", ".join(f"{k}={v}" for k, v in changed.items()), flush=True)
    server = uvicorn.Server(_uvicorn_config(emu, args.log_level))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
