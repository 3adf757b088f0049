"""The API reference renders what a reader needs: the site builds in strict mode and
``docs/_check_site.py`` finds nothing wrong in it.

The build needs the ``docs`` extra (mkdocs-material, mkdocstrings[python]); without it
the build test is skipped, and ``nox -s docs`` (which installs the extra) runs the same
build and the same check. The docstring tests below need nothing: they catch a field
left undocumented before any build.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import attrs
import pytest

import wanr2v

ROOT = Path(__file__).resolve().parent.parent
CHECK_SCRIPT = ROOT / "docs" / "_check_site.py"

DOCUMENTED = (
    wanr2v.VideoRequest,
    wanr2v.Task,
    wanr2v.TaskResult,
    wanr2v.TaskSummary,
    wanr2v.Usage,
    wanr2v.BatchItem,
    wanr2v.BatchSummary,
    wanr2v.GovernorStatistics,
    wanr2v.RateStatistics,
    wanr2v.SchedulerStatistics,
    wanr2v.ClientStatistics,
)
"""The records whose every field the reference must explain."""


def _load_check() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_check_site", CHECK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_site = _load_check()

SECTION = re.compile(r"^(?P<indent>[ ]*)(?:Attributes|Args|Arguments|Parameters):[ ]*$")


def documented_fields(doc: str) -> dict[str, str]:
    """``{name: description}`` of the entries of a Google-style docstring's
    "Attributes:" / "Args:" sections (continuation lines joined)."""
    out: dict[str, str] = {}
    lines = doc.expandtabs().splitlines()
    for i, line in enumerate(lines):
        m = SECTION.match(line)
        if not m:
            continue
        base = len(m.group("indent"))
        current = None
        for entry in lines[i + 1 :]:
            if entry.strip() and len(entry) - len(entry.lstrip()) <= base:
                break
            item = re.match(r"^\s*(\w+)(?: \([^)]*\))?:\s*(.*)$", entry)
            if item and len(entry) - len(entry.lstrip()) == base + 4:
                current = item.group(1)
                out[current] = item.group(2).strip()
            elif current and entry.strip():
                out[current] += " " + entry.strip()
    return out


@pytest.mark.parametrize("cls", DOCUMENTED, ids=[c.__name__ for c in DOCUMENTED])
def test_every_field_is_explained_in_the_docstring(cls: type) -> None:
    """Each attrs field has an entry with a description in the class docstring."""
    entries = documented_fields(cls.__doc__ or "")
    missing = [f.name for f in attrs.fields(cls) if not entries.get(f.name)]
    assert not missing, f"{cls.__name__}: fields without a description: {missing}"


def test_documented_fields_reads_sections_as_mkdocstrings_does() -> None:
    """The parser finds entries (continuations joined) and ignores other sections."""
    doc = """Summary.

    Attributes:
        a: first,
            continued.
        b (int): second.

    Raises:
        c: not a field.
    """
    assert documented_fields(doc) == {"a": "first, continued.", "b": "second."}


# --- the check script, on a site made by hand: it can fail ---------------------------


def _row(name: str, *cells: str) -> str:
    tds = "".join(f"<td>{c}</td>" for c in cells)
    return f'<tr class="doc-section-item"><td><code>{name}</code></td>{tds}</tr>'


def test_check_site_reports_each_kind_of_problem(tmp_path: Path) -> None:
    """Roles, brief file names, private paths, missing fields, a default shown as
    required, plumbing anchors, unformatted signatures and unlisted public names are
    all reported."""
    usage_rows = "".join(
        _row(f.name, "<code>T</code>", "meaning") for f in attrs.fields(wanr2v.Usage)
    )
    result_rows = _row("task_id", "<code>str</code>", "the task") + _row("status", "", "no type")
    request_rows = _row("negative_prompt", "<code>str | None</code>", "text", "required")
    page = f"""<html><body>
    <h2 id="wanr2v.VideoRequest">VideoRequest</h2><table>{request_rows}</table>
    <h2 id="wanr2v.TaskResult">TaskResult</h2><table>{result_rows}</table>
    <h2 id="wanr2v.Usage">Usage</h2><table>{usage_rows}</table>
    <h3 id="wanr2v.AsyncWanClient.submit_body">submit_body</h3>
    <p>raise :class: InvalidRequestError; see protocol.md, pricing.</p>
    <p>For one call::</p>
    <h2>wanr2v._batch.BatchItem</h2>
    <script>var hidden = "wanr2v._private.not_visible :class:";</script>
    <div class="doc-signature highlight"><pre><code>call(<span>{", ".join(f"k{i}: int | None = None" for i in range(9))})</span></code></pre></div>
    <div class="doc-signature highlight"><pre><code>fetch(
    task: Task | str,
) -&gt; TaskResult</code></pre></div>
    </body></html>"""
    (tmp_path / "reference" / "models").mkdir(parents=True)
    (tmp_path / "reference" / "models" / "index.html").write_text(page, encoding="utf-8")
    problems = "\n".join(check_site.check(tmp_path))
    assert "a literal Sphinx role" in problems
    assert "'protocol.md'" in problems
    assert "literal-block marker" in problems
    assert "'wanr2v._batch'" in problems and "wanr2v._private" not in problems
    assert "wanr2v.TaskResult does not list its field 'usage'" in problems
    assert "wanr2v.TaskResult.status has no type or no description" in problems
    assert "negative_prompt has a default but shows as required" in problems
    assert "wanr2v.Usage" not in problems  # every field listed, typed and explained
    assert "publishes plumbing: wanr2v.AsyncWanClient.submit_body" in problems
    assert re.search(r"a signature line of \d+ characters \(call\(k0", problems)
    assert "(fetch" not in problems and "(    task" not in problems  # formatted
    assert re.search(r"has no entry for: .*\bwanr2v\.AioHttpClient\b", problems)
    assert check_site.check(tmp_path / "nowhere") == [
        f"{tmp_path / 'nowhere'}: no HTML pages (build the site first)"
    ]


def _griffe_extension() -> ModuleType:
    pytest.importorskip("griffe", reason="the docs extra (mkdocstrings[python]) is not installed")
    spec = importlib.util.spec_from_file_location(
        "_griffe_attrs", ROOT / "docs" / "_griffe_attrs.py"
    )
    assert spec is not None and spec.loader is not None
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    return ext


def test_literal_blocks_become_fenced_code() -> None:
    """The docs' griffe extension turns reST ``intro::`` blocks into fenced blocks:
    an indented block, a block right after the summary line, and a drawing."""
    fence = _griffe_extension().fence_literal_blocks
    assert fence("Summary.\n\nExample::\n\n    x = 1\n    y = 2\n\nAfter.") == (
        "Summary.\n\nFor example:\n\n```python\nx = 1\ny = 2\n```\n\nAfter."
    )
    assert fence("Like this::\n\nrun(x)\n") == "Like this:\n\n```python\nrun(x)\n```"
    assert fence("Tree::\n\n    A ──▶ B") == "Tree:\n\n```text\nA ──▶ B\n```"
    assert fence("No block: a::b stays.\nNext.") == "No block: a::b stays.\nNext."


def test_signatures_show_values_and_public_types() -> None:
    """With the docs' extensions, a default naming a private constant shows its value
    and a private type alias shows what it stands for; public names stay as written."""
    ext = _griffe_extension()
    import griffe

    assert ext.evaluate("24 * 3600.0") == "86400.0" and ext.evaluate("not True") == "False"
    assert ext.evaluate("frozenset({A})") == "frozenset({A})"
    extensions = griffe.load_extensions(
        *(
            f"{ROOT / 'docs' / '_griffe_attrs.py'}:{name}"
            for name in ("AttrsInit", "PublicSignatures")
        )
    )
    pkg = griffe.load("wanr2v", search_paths=[str(ROOT)], extensions=extensions)

    def params(path: str) -> dict[str, griffe.Parameter]:
        function = pkg[path]
        return {p.name: p for p in function.parameters}

    init = params("_client.AsyncWanClient.__init__")
    assert str(init["timeout"].default) == "30.0"  # _config.DEFAULT_TIMEOUT
    assert str(init["max_video_bytes"].default).replace(" ", "") == "1024**3"  # as written
    assert str(init["limits"].annotation) == "Limits | None"
    download = params("_file_verbs.FileVerbs.download")
    assert str(download["task"].annotation) == "Task | TaskResult | TaskSummary | str"
    on_cancel = params("_batch_verbs.BatchVerbs.run_many")["on_cancel"]
    assert str(on_cancel.annotation) == "Literal['detach', 'cancel_pending']"
    quotas = params("testing._config.Quotas.__init__")
    assert str(quotas["create_per_s"].default) == "5"
    assert str(quotas["strict_running"].default) == "False"  # not _rules.QUEUE_WHEN_BUSY
    assert str(params("_client.AsyncWanClient.call")["request"].annotation) == "VideoRequest | None"


# --- the real site -------------------------------------------------------------------


def _has_docs_extra() -> bool:
    needed = ("mkdocs", "material", "mkdocstrings_handlers")
    return all(importlib.util.find_spec(name) for name in needed)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site as ``mkdocs build --strict`` makes it (warnings are errors)."""
    if not _has_docs_extra():
        pytest.skip(
            "the docs extra (mkdocs-material, mkdocstrings[python]) is not installed; "
            "`nox -s docs` builds and checks the site"
        )
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout
    return out


def test_docs_build_strict(site: Path) -> None:
    """``mkdocs build --strict`` succeeds: no broken link, no docstring warning."""
    assert (site / "reference" / "models" / "index.html").is_file()


def test_built_site_holds(site: Path) -> None:
    """No literal role, brief file name or private path; every public name has an
    entry; the records list every field with its type and meaning; no plumbing."""
    problems = check_site.check(site)
    assert not problems, "\n".join(problems)
