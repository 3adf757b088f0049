"""Every page's code runs: the docs' examples are executed against the emulator.

Conventions of ``docs/*.md`` (the API reference pages hold no examples):

- A fenced block opened with `` ```python `` is a complete program. It is run as a
  script in a fresh temporary folder, with ``DASHSCOPE_API_KEY`` and
  ``DASHSCOPE_HTTP_BASE_URL`` pointing at a loopback emulator (as the docs tell readers
  to do); examples that start their own emulator ignore them.
- A block opened with `` ```python title="test_….py" `` or ``title="conftest.py"``
  is part of a test suite: the page's such files are written side by side and run
  with ``pytest``.
- A `` ```bash `` block right after the comment ``<!-- run: bash -->`` is a shell
  session, run with ``bash -eu`` in the same kind of folder and environment (the CLI
  page); other ``bash`` blocks, `` ```text `` and `` ```py `` (a fragment) are shown,
  not run.
- Each guide page opens with a runnable example: its first code block is a
  `` ```python `` block or a runnable ``bash`` one.

The blocks run in subprocesses, several at once, so the whole page set takes about as
long as its slowest example.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

pytest.importorskip("starlette", reason="the docs' examples need the 'emulator' extra")
pytest.importorskip("uvicorn", reason="the docs' examples need the 'emulator' extra")

from wanr2v.testing import EmulatorConfig, serve

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDE_PAGES = sorted(p for p in DOCS.glob("*.md"))
TIMEOUT = 240.0
"""Real seconds one example may take: a hang bound, with headroom for a loaded machine
(the examples start in parallel, each a fresh interpreter)."""

FENCE = re.compile(
    r"(?P<marker>^<!-- run: bash -->\n)?"
    r"^```(?P<lang>[\w-]+)?(?P<attrs>[^\n]*)\n(?P<body>.*?)^```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
TITLE = re.compile(r'title="(?P<title>[^"]+)"')


class Block(NamedTuple):
    page: str
    number: int
    lang: str
    title: str | None
    code: str
    line: int
    shell: bool = False


def blocks(page: Path) -> list[Block]:
    """The unindented fenced blocks of a page (indented ones sit in admonitions)."""
    text = page.read_text(encoding="utf-8")
    out = []
    for i, m in enumerate(FENCE.finditer(text)):
        title = TITLE.search(m.group("attrs") or "")
        out.append(
            Block(
                page=page.name,
                number=i,
                lang=m.group("lang") or "",
                title=title.group("title") if title else None,
                code=m.group("body"),
                line=text.count("\n", 0, m.start("lang")) + 1,
                shell=m.group("marker") is not None and m.group("lang") == "bash",
            )
        )
    return out


def scripts() -> list[Block]:
    return [
        b
        for p in GUIDE_PAGES
        for b in blocks(p)
        if (b.lang == "python" and b.title is None) or b.shell
    ]


def suites() -> dict[str, list[Block]]:
    out: dict[str, list[Block]] = {}
    for p in GUIDE_PAGES:
        files = [b for b in blocks(p) if b.lang == "python" and b.title is not None]
        if files:
            out[p.name] = files
    return out


class Outcome(NamedTuple):
    returncode: int
    output: str


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> Outcome:
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return Outcome(-1, f"timed out after {TIMEOUT}s\n{out}")
    return Outcome(proc.returncode, proc.stdout)


SCRIPTS = scripts()
SUITES = suites()


def _has_cli() -> bool:
    """The ``wanr2v`` command and its extra (rich) are installed."""
    try:
        import rich  # noqa: F401

        import wanr2v._cli  # noqa: F401
    except ImportError:
        return False
    return shutil.which("wanr2v", path=str(Path(sys.executable).parent)) is not None


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[Outcome]]]:
    """Every example started at once (a few at a time) against one loopback emulator.

    Each script gets its own account on the emulator, so their quotas do not mix."""
    keys = {f"sk-docs-{i:03d}-example": f"account-{i}" for i in range(len(SCRIPTS) + 1)}
    config = EmulatorConfig(api_keys=keys, generation_time=(1.0, 2.0), seed=0)
    base_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DASHSCOPE_") and k not in ("PYTHONPATH",)
    }
    base_env["PYTHONPATH"] = str(ROOT)
    base_env["PYTHONDONTWRITEBYTECODE"] = "1"
    key_list = list(keys)
    with serve(config) as emulator, ThreadPoolExecutor(max_workers=8) as pool:
        futures: dict[str, Future[Outcome]] = {}
        for i, block in enumerate(SCRIPTS):
            cwd = tmp_path_factory.mktemp(f"{Path(block.page).stem}-{block.number}")
            env = {
                **base_env,
                "DASHSCOPE_API_KEY": key_list[i],
                "DASHSCOPE_HTTP_BASE_URL": emulator.base_url,
            }
            if block.shell:
                if not _has_cli():
                    continue
                (cwd / "example.sh").write_text(block.code, encoding="utf-8")
                env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
                cmd = ["bash", "-eu", "example.sh"]
            else:
                (cwd / "example.py").write_text(block.code, encoding="utf-8")
                cmd = [sys.executable, "example.py"]
            futures[f"{block.page}#{block.number}"] = pool.submit(_run, cmd, cwd, env)
        for page, files in SUITES.items():
            cwd = tmp_path_factory.mktemp(f"{Path(page).stem}-suite")
            for f in files:
                assert f.title is not None
                (cwd / f.title).write_text(f.code, encoding="utf-8")
            env = {**base_env, "DASHSCOPE_API_KEY": key_list[-1]}
            futures[f"{page}#pytest"] = pool.submit(
                _run,
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    "-p",
                    "no:asyncio",
                    "-W",
                    "error",
                ],
                cwd,
                env,
            )
        yield futures


@pytest.mark.parametrize("block", SCRIPTS, ids=[f"{b.page}:{b.line}" for b in SCRIPTS])
def test_example_runs(block: Block, launched: dict[str, Future[Outcome]]) -> None:
    """The example runs to the end without an error."""
    if block.shell and not _has_cli():
        pytest.skip("the wanr2v command (the 'cli' extra) is not installed")
    outcome = launched[f"{block.page}#{block.number}"].result(timeout=TIMEOUT * 4)
    assert outcome.returncode == 0, (
        f"{block.page}, line {block.line}: exit {outcome.returncode}\n{outcome.output}"
    )


@pytest.mark.parametrize("page", sorted(SUITES))
def test_example_suite_passes(page: str, launched: dict[str, Future[Outcome]]) -> None:
    """The page's test files pass under pytest (with the wanr2v plugin's fixtures)."""
    pytest.importorskip("trio", reason="the page's conftest runs its tests under trio too")
    outcome = launched[f"{page}#pytest"].result(timeout=TIMEOUT * 4)
    assert outcome.returncode == 0, f"{page}: pytest exit {outcome.returncode}\n{outcome.output}"


@pytest.mark.parametrize("page", GUIDE_PAGES, ids=[p.name for p in GUIDE_PAGES])
def test_page_opens_with_runnable_example(page: Path) -> None:
    """Each guide page's first code block is a complete, runnable ``python`` example."""
    found = blocks(page)
    assert found, f"{page.name} has no example"
    first = found[0]
    assert first.lang == "python" or first.shell, (
        f"{page.name}: the first code block (line {first.line}) is `{first.lang}`, "
        "not a runnable `python` example"
    )


def test_every_page_is_in_the_nav() -> None:
    """mkdocs.yml lists every page (a page left out would not be built into the nav)."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = [p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")]
    missing = [p for p in pages if p not in nav]
    assert not missing, f"pages missing from mkdocs.yml's nav: {missing}"


def test_docstrings_hold_no_sphinx_roles() -> None:
    """The API pages are rendered from docstrings as Markdown, where a Sphinx role
    (``:class:`X```) shows literally: docstrings name things in backticks instead."""
    role = re.compile(r":(?:py:)?(?:class|func|meth|attr|exc|data|mod|obj|const|ref):`")
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "wanr2v").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if role.search(line)
    ]
    assert not found, f"Sphinx roles in docstrings: {found}"
