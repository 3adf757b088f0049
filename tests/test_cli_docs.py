"""Every ``wanr2v`` command line the docs show exists: it parses with the real parser.

The command lines are taken from ``README.md`` and ``docs/*.md`` (inline code spans
and the lines of shell and text blocks; Python blocks and prose are left out) and from
the ``--help`` pages' own examples. Placeholders are allowed: an upper-case word (or
``…``) given to an option that takes a number or a choice is replaced by a valid value
first, ``[--opt X]`` is read as ``--opt X``, and a bare mention of a command
(``wanr2v resume``) only has to name one that exists.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import NamedTuple, NoReturn

import pytest

from wanr2v._cli._parser import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
SPAN = re.compile(r"(?<!`)`(?!`)(?P<code>[^`\n]+)`(?!`)")
COMMAND = re.compile(
    r"(?:^|\$\(|&&|\|\||;)\s*(?:\$\s+)?(?:[A-Z_]+=\S+\s+)*(?:python -m )?wanr2v\s+(?P<rest>[^\n]*)",
    re.MULTILINE,
)
"""A command at the start of a line or span (after ``$``, ``$(``, ``&&``, ``;`` or
``VAR=value`` words), so that ``pip install wanr2v`` or ``from wanr2v import`` is none."""
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*|…|\.\.\.)$")
SHELL_LANGS = {"bash", "sh", "shell", "console", "text", ""}


class Line(NamedTuple):
    where: str
    rest: str


def _commands_in(text: str, where: str) -> list[Line]:
    out = []
    for m in COMMAND.finditer(text):
        rest = m.group("rest").strip()
        if rest:
            out.append(Line(where, rest))
    return out


def doc_lines() -> list[Line]:
    """The command lines of the pages: code spans, and shell/text block lines."""
    found: list[Line] = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = page.relative_to(ROOT).as_posix()
        fenced = list(FENCE.finditer(text))
        for block in fenced:
            if block.group("lang") not in SHELL_LANGS:
                continue
            first = text.count("\n", 0, block.start("body")) + 1
            for i, line in enumerate(block.group("body").splitlines()):
                found += _commands_in(line, f"{name}:{first + i}")
        prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for n, line in enumerate(prose.splitlines(), start=1):
            for span in SPAN.finditer(line):
                found += _commands_in(span.group("code"), f"{name}:{n}")
    return found


def _parsers(
    parser: argparse.ArgumentParser, path: str = "wanr2v"
) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _parsers(sub, f"{path} {name}")
    return out


def help_lines() -> list[Line]:
    """The command lines of the ``--help`` pages' descriptions and examples."""
    found: list[Line] = []
    for path, parser in _parsers(build_parser()):
        for text in (parser.description or "", parser.epilog or ""):
            for line in text.splitlines():
                found += _commands_in(line.strip(), f"{path} --help")
    return found


LINES = doc_lines()
HELP_LINES = help_lines()


def _tokens(rest: str) -> list[str]:
    """The words of a command line, up to a pipe, redirect, ``&``, ``;`` or ``)``."""
    rest = re.sub(r"<(\w+)>", lambda m: m.group(1).upper(), rest)  # <command>: a placeholder
    lexer = shlex.shlex(rest, posix=True, punctuation_chars="|&;<>()")
    lexer.whitespace_split = True
    words = []
    for word in lexer:
        if word and set(word) <= set("|&;<>()"):
            break
        words.append(word)
    # Synopsis brackets: "[--out DIR]" is "--out DIR", "TASK_ID…" is "TASK_ID".
    words = [w.strip("[]") for w in words]
    return [w.rstrip("…") if w not in ("…",) and w.endswith("…") else w for w in words if w]


def _subparser(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    for word in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or word not in subs[0].choices:
            break
        parser = subs[0].choices[word]
    return parser


def _fill(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """Placeholders given to typed options made valid; bare ``…`` words dropped."""
    target = _subparser(parser, words)
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        action = target._option_string_actions.get(word)
        takes_value = action is not None and action.nargs != 0
        if takes_value and i + 1 < len(words) and PLACEHOLDER.match(words[i + 1]):
            assert action is not None
            if action.choices:
                value = str(next(iter(action.choices)))
            elif action.type in (int, float):
                value = "1"
            else:
                value = words[i + 1]
            out += [word, value]
            i += 2
            continue
        if word not in ("…", "..."):
            out.append(word)
        i += 1
    return out


class Refused(Exception):
    """The parser refused a command line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Refused(message)


def _strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` and its subparsers raising `Refused` instead of exiting."""
    for _, p in _parsers(parser):
        p.__class__ = _Parser
    return parser


def check(line: Line) -> None:
    """Parse one command line; fail naming where it is shown and why it is refused."""
    parser = _strict(build_parser())
    words = _tokens(line.rest)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if words and PLACEHOLDER.match(words[0]):
        return  # "wanr2v <command> --help": any command
    if not words or words[0] not in (*commands, "--help", "--version"):
        pytest.fail(f"{line.where}: `wanr2v {line.rest}` names no command ({', '.join(commands)})")
    if len(words) == 1 or "--help" in words or "-h" in words:
        return  # a bare mention of a command, or its help
    try:
        parser.parse_args(_fill(parser, words))
    except Refused as exc:
        pytest.fail(f"{line.where}: `wanr2v {line.rest}` does not parse: {exc}")


def test_the_docs_show_command_lines() -> None:
    """The extraction finds the pages' command lines (so the check below checks something)."""
    shown = {line.rest.split()[0] for line in LINES}
    assert {"run", "resume", "journal", "emulator", "demo"} <= shown
    assert len(LINES) > 20 and len(HELP_LINES) > 10


@pytest.mark.parametrize("line", LINES, ids=[f"{x.where}" for x in LINES])
def test_each_command_line_in_the_docs_parses(line: Line) -> None:
    """Each ``wanr2v …`` line of README.md and docs/*.md parses with the real parser."""
    check(line)


@pytest.mark.parametrize(
    "line", HELP_LINES, ids=[f"{x.where}:{i}" for i, x in enumerate(HELP_LINES)]
)
def test_each_example_in_the_help_parses(line: Line) -> None:
    """Each example of ``wanr2v … --help`` parses with the real parser."""
    check(line)


@pytest.mark.parametrize(
    "rest",
    [
        "status --journal batch.db",  # what docs/journal.md once said
        "resume batch.db",
        "journal list batch.db",
        "run FILE --budjet 20",
        "wait TASK_ID --timeout soon",
        "frobnicate",
    ],
)
def test_a_command_line_that_does_not_exist_is_caught(rest: str) -> None:
    """The check refuses what the parser refuses (it can fail)."""
    with pytest.raises(pytest.fail.Exception):
        check(Line("here", rest))
