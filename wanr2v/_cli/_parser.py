"""The ``wanr2v`` argument parser: every subcommand with its options, help and
examples, each bound to its command function (``handler`` in the parsed options).

Building it imports the command modules but runs nothing; ``--help`` pages end with
examples and the exit-code table.
"""

from __future__ import annotations

import argparse
from typing import Any, Final

from .. import _config
from .._models import TaskStatus
from .._version import __version__
from ._commands import cmd_cancel, cmd_download, cmd_list, cmd_status, cmd_submit, cmd_wait
from ._context import DEFAULT_DEMO_OUT, DEFAULT_RUN_OUT, ENV_LOG
from ._output import EXIT_CODES_HELP
from ._run import cmd_journal_show, cmd_resume, cmd_run
from ._serve import cmd_demo, cmd_emulator

__all__ = ["build_parser"]

DEFAULT_RUN_NAME: Final = "{key}.mp4"

MAIN_EPILOG: Final = f"""\
examples:
  wanr2v demo                                        # no key needed: built-in emulator
  export DASHSCOPE_API_KEY=sk-...                    # the key of your region
  wanr2v submit --prompt "character1 waves" --ref me.mp4 --wait --out videos/
  wanr2v run requests.jsonl --journal batch.db --out videos/
  wanr2v resume --journal batch.db                   # after a crash, Ctrl-C or kill -9
  wanr2v status TASK_ID --json

environment:
  DASHSCOPE_API_KEY        the API key (required; never printed)
  DASHSCOPE_HTTP_BASE_URL  a base URL override (like --base-url)
  DASHSCOPE_REGION         beijing (default), singapore or virginia (like --region)
  WANR2V_LOG               debug, info or warning: log to stderr (like -v / -vv)

{EXIT_CODES_HELP}"""

RUN_EPILOG: Final = f"""\
A batch file holds one request per line (JSONL), each with the fields of
AsyncWanClient.async_call and an optional "key" (default: the line number):

  {{"key": "intro", "model": "wan2.6-r2v-flash", "prompt": "character1 waves at character2",
   "reference_urls": ["clips/me.mp4", "https://example.com/dog.png"], "duration": 5}}

or a TOML file with optional [defaults] and [[requests]] tables:

  [defaults]
  model = "wan2.6-r2v-flash"
  size = "1280*720"

  [[requests]]
  key = "intro"
  prompt = "character1 waves at character2"
  reference_urls = ["clips/me.mp4", "dog.png"]

Relative paths are relative to the batch file; local files are uploaded for you.
Every submission is recorded in the journal before its create is sent, so a batch
killed at any point (kill -9 included) finishes with `wanr2v resume --journal FILE`
without paying twice. Running the same batch file again with the same journal
finishes what is unfinished and skips what is done.

Videos are named {{key}}.mp4 (--name "{{key}}-{{task_id}}.mp4" to change it). An item that
failed before its task was made (a missing reference file) runs again with
--retry-failed once fixed; --budget USD creates no task that would take the batch
(what the journal already billed included) over that sum.

examples:
  wanr2v run requests.jsonl --journal batch.db --out videos/
  wanr2v run requests.toml --dry-run --budget 20       # check everything, show the cost
  wanr2v run requests.jsonl --journal batch.db --retry-failed
  wanr2v run requests.jsonl --journal batch.db --json > summary.json
  wanr2v journal show batch.db                         # states, tasks, costs

{EXIT_CODES_HELP}"""

DEMO_EPILOG: Final = f"""\
The demo needs no key and no network: it starts the emulator of the DashScope task
API in this process (on loopback, its clock sped up), writes a few local reference
files (two character clips, a picture of an object, a picture of a background),
runs five tasks modelled on the vendor's example (both models, some silent, local
files and URLs mixed), saves the videos and prints what it cost and what it sent.

examples:
  wanr2v demo
  wanr2v demo --out /tmp/videos --json
  wanr2v emulator --time-scale 20 &                 # or against a running emulator:
  wanr2v demo --base-url http://127.0.0.1:PORT/api/v1 --time-scale 20

{EXIT_CODES_HELP}"""


def _add_reach_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--name",
        metavar="TEMPLATE",
        default=DEFAULT_RUN_NAME,
        help="video file names: {key}, {task_id}, {model} (default: %(default)s)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the items that failed without creating a task (e.g. a missing file)",
    )
    p.add_argument(
        "--budget",
        metavar="USD",
        help="create no task that would take the batch over USD (estimated; what the "
        "journal already billed included)",
    )


def _add_reach_resume_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also run again the items that failed without creating a task",
    )
    p.add_argument(
        "--budget", metavar="USD", help="a spending cap (default: the one `run` was given)"
    )


def _add_journal_parser(sub: Any, formatter: type[argparse.HelpFormatter]) -> None:
    p = sub.add_parser(
        "journal",
        help="look into a batch journal",
        description="look into a batch journal",
        formatter_class=formatter,
    )
    jsub = p.add_subparsers(dest="journal_command", metavar="SUBCOMMAND", required=True)
    show = jsub.add_parser(
        "show",
        help="every item: state, task, status, cost, file or error",
        description="every item of a journal: state, task, status, cost, file or error",
        epilog="examples:\n  wanr2v journal show batch.db\n  wanr2v journal show batch.db "
        "--json\n\n" + EXIT_CODES_HELP,
        formatter_class=formatter,
        parents=[_common(service=False)],
    )
    show.add_argument("journal", metavar="DB", help="the journal of `wanr2v run`")
    show.set_defaults(handler=cmd_journal_show)


# --- parser ---------------------------------------------------------------------------


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


def _common(*, service: bool = True) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    if service:
        parent.add_argument(
            "--base-url",
            metavar="URL",
            help=f"any DashScope base URL (default: ${_config.ENV_BASE_URL}, else the region's)",
        )
        parent.add_argument(
            "--region",
            help=f"beijing, singapore or virginia (default: ${_config.ENV_REGION}, else beijing)",
        )
        parent.add_argument(
            "--time-scale",
            type=float,
            metavar="X",
            help="the service runs X times faster than real time (an emulator started "
            "with --time-scale X); paces polling and rates to match (default 1)",
        )
    parent.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parent.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help=f"log what is sent and retried on stderr (-vv: debug); or {ENV_LOG}=info|debug",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The ``wanr2v`` argument parser (every subcommand, with help and examples)."""
    parser = argparse.ArgumentParser(
        prog="wanr2v",
        description="Wan 2.6 reference-to-video (DashScope) from the command line: single "
        "tasks, durable batches that never pay twice, and a built-in emulator.",
        epilog=MAIN_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"wanr2v {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = _common()

    def add(name: str, help_: str, epilog: str = EXIT_CODES_HELP, **kw: Any) -> Any:
        return sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=epilog,
            formatter_class=_Formatter,
            parents=kw.pop("parents", [common]),
            **kw,
        )

    p = add(
        "submit",
        "create one task (and optionally wait and download)",
        epilog="examples:\n"
        '  wanr2v submit --prompt "character1 waves at character2" --ref me.mp4 --ref dog.png\n'
        "  wanr2v submit --model wan2.6-r2v --prompt ... --ref https://.../a.mp4 "
        "--wait --out videos/\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument(
        "--model", default="wan2.6-r2v-flash", choices=_config.MODELS, help="default: %(default)s"
    )
    p.add_argument("--prompt", required=True, help="name subjects character1…5 in ref order")
    p.add_argument(
        "--ref",
        action="append",
        required=True,
        metavar="URL_OR_PATH",
        help="a reference: http(s)://, oss://, file:// or a local file (repeat, 1–5)",
    )
    p.add_argument("--negative-prompt")
    p.add_argument("--size", help="W*H, e.g. 1280*720 (service default 1920*1080)")
    p.add_argument("--duration", type=int, help="seconds, 2–10 (service default 5)")
    p.add_argument("--shot-type", choices=("single", "multi"))
    p.add_argument(
        "--audio", action=argparse.BooleanOptionalAction, help="flash only; --no-audio: silent"
    )
    p.add_argument("--watermark", action=argparse.BooleanOptionalAction)
    p.add_argument("--seed", type=int)
    p.add_argument("--wait", action="store_true", help="wait for the task to end")
    p.add_argument(
        "--out",
        metavar="DIR_OR_FILE",
        help="wait, then save the video here (a folder, or a file name ending in .mp4)",
    )
    p.set_defaults(handler=cmd_submit)

    p = add(
        "status",
        "query tasks once",
        epilog="examples:\n  wanr2v status TASK_ID [TASK_ID ...] --json\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    p.set_defaults(handler=cmd_status)

    p = add(
        "wait",
        "wait for tasks to end, optionally saving the videos",
        epilog="examples:\n  wanr2v wait TASK_ID --out videos/\n  wanr2v wait A B C --timeout 900"
        "\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    p.add_argument("--out", metavar="DIR", help="save each succeeded video here")
    p.add_argument("--timeout", type=float, metavar="S", help="give up after S seconds")
    p.set_defaults(handler=cmd_wait)

    p = add(
        "cancel",
        "cancel tasks (only while PENDING)",
        epilog="examples:\n  wanr2v cancel TASK_ID\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    p.set_defaults(handler=cmd_cancel)

    p = add(
        "list",
        "list the account's tasks (default: the last 24 h)",
        epilog="examples:\n  wanr2v list --status RUNNING\n"
        "  wanr2v list --model wan2.6-r2v --start 2025-12-16T00:00 --end 2025-12-16T12:00 --json"
        "\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("--model", choices=_config.MODELS)
    p.add_argument(
        "--status", choices=[s.value for s in TaskStatus if s is not TaskStatus.UNRECOGNIZED]
    )
    p.add_argument("--start", metavar="ISO_TIME", help="window start (naive times are UTC)")
    p.add_argument("--end", metavar="ISO_TIME", help="window end (at most 24 h after --start)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default %(default)s)")
    p.set_defaults(handler=cmd_list)

    p = add(
        "download",
        "save succeeded tasks' videos ({task_id}.mp4, or a file name)",
        epilog="examples:\n  wanr2v download TASK_ID --out videos/\n"
        "  wanr2v download TASK_ID --out my-video.mp4\n\n" + EXIT_CODES_HELP,
    )
    p.add_argument("task_ids", nargs="+", metavar="TASK_ID")
    p.add_argument(
        "--out",
        metavar="DIR_OR_FILE",
        default=".",
        help="a folder (default: .), or a file name ending in .mp4 for one task",
    )
    p.set_defaults(handler=cmd_download)

    p = add("run", "run a batch file (JSONL or TOML) through a journal", epilog=RUN_EPILOG)
    p.add_argument(
        "file", metavar="FILE", help="requests: .jsonl (one JSON object a line) or .toml"
    )
    p.add_argument(
        "--journal", metavar="DB", help="the journal (SQLite) file (default: FILE.journal.db)"
    )
    p.add_argument(
        "--out", metavar="DIR", default=DEFAULT_RUN_OUT, help="video folder (default: %(default)s)"
    )
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed item")
    p.add_argument(
        "--cancel-pending",
        action="store_true",
        help="on Ctrl-C, cancel tasks still PENDING (not billed) instead of leaving them",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="check the file, its local files and every local rule, and show the cost "
        "(against --budget); send nothing",
    )
    _add_reach_run_options(p)
    p.add_argument(
        "--allow-duplicates",
        action="store_true",
        help="let one request run (and be paid) under several keys (refused by default)",
    )
    p.set_defaults(handler=cmd_run)

    p = add(
        "resume",
        "finish a journaled batch after a crash, Ctrl-C or kill -9",
        epilog="The journal remembers the output folder, base URL, region and time scale.\n"
        "Known tasks are polled, creates whose answer was lost are reconciled (never sent\n"
        "twice), results are downloaded.\n\nexamples:\n  wanr2v resume --journal batch.db\n\n"
        + EXIT_CODES_HELP,
    )
    p.add_argument("--journal", metavar="DB", required=True, help="the journal of `wanr2v run`")
    p.add_argument("--out", metavar="DIR", help="video folder (default: the one remembered)")
    p.add_argument("--cancel-pending", action="store_true", help=argparse.SUPPRESS)
    _add_reach_resume_options(p)
    p.set_defaults(handler=cmd_resume)
    _add_journal_parser(sub, _Formatter)

    from ..testing._cli import build_parser as emulator_parser

    p = add(
        "emulator",
        "serve the DashScope task API emulator until Ctrl-C",
        epilog="Here --region NAME=KEY serves an extra region at /NAME/api/v1 (repeatable).\n"
        "Point the other commands at it with --base-url and the same --time-scale;\n"
        "any sk-... key works unless --api-key is given.\n\nexamples:\n"
        "  wanr2v emulator --time-scale 60 --port 8000\n"
        '  wanr2v emulator --json               # line 1: {"base_url": ...} for scripts\n',
        parents=[_common(service=False)],
    )
    emulator_parser(p)
    p.set_defaults(handler=cmd_emulator)

    p = add("demo", "a multi-character batch on the built-in emulator (no key)", DEMO_EPILOG)
    p.add_argument(
        "--out",
        metavar="DIR",
        default=DEFAULT_DEMO_OUT,
        help="video folder (default: ./%(default)s)",
    )
    p.set_defaults(handler=cmd_demo)
    return parser
