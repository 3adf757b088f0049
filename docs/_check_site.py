"""Checks of the built site that ``mkdocs build --strict`` does not make.

Usage: ``python docs/_check_site.py SITE_DIR`` (``nox -s docs`` runs it after the
build; ``tests/test_docs.py`` runs it on the site it builds). Exit 1 with one line per
problem, 0 when the site holds:

- no literal Sphinx role (``:class:`X```) in any page: Markdown shows them as typed;
  no reStructuredText ``intro::`` left as text before a code block;
- no name of a file of the maintainers' brief (``protocol.md`` ...): readers have none;
- no private module path (``wanr2v._batch``) in any page's visible text;
- every public name (``__all__`` of ``wanr2v``, ``wanr2v.journal``, ``wanr2v.testing``)
  has an entry in the API reference;
- the models, the batch records and the statistics records list every attrs field,
  each with a type and a meaning (a non-empty description), and no field with a
  default shows as *required*;
- none of the client's or the emulator's plumbing is published;
- every signature is formatted over lines of at most `SIGNATURE_WIDTH` characters
  (mkdocstrings formats them with ruff, part of the ``docs`` extra; without it a
  verb's twenty keywords make one line).

Needs ``wanr2v`` importable (the fields are read with ``attrs.fields``).
"""

from __future__ import annotations

import html
import re
import sys
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import attrs

import wanr2v
import wanr2v.journal
import wanr2v.testing

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|exc|data|mod|obj|const|ref):`?")
BRIEF_FILES = ("protocol.md", "style.md", "field-notes.md")
PRIVATE_PATH = re.compile(r"\bwanr2v(?:\.\w+)*\._[a-z]\w*")
SIGNATURE = re.compile(r'<div class="doc-signature[^"]*">(.*?)</code>', re.S)
SIGNATURE_WIDTH = 100

DOCUMENTED_FIELDS: dict[str, tuple[type, ...]] = {
    "reference/models/index.html": (
        wanr2v.VideoRequest,
        wanr2v.Task,
        wanr2v.TaskResult,
        wanr2v.TaskSummary,
        wanr2v.Usage,
    ),
    "reference/client/index.html": (
        wanr2v.BatchItem,
        wanr2v.BatchSummary,
        wanr2v.ClientStatistics,
    ),
    "reference/limits/index.html": (
        wanr2v.GovernorStatistics,
        wanr2v.RateStatistics,
        wanr2v.SchedulerStatistics,
    ),
}
"""Pages and the attrs classes whose every field they must list with its meaning."""

PLUMBING = (
    "wanr2v.AsyncWanClient.prepare",
    "wanr2v.AsyncWanClient.submit_body",
    "wanr2v.AsyncWanClient.route",
    "wanr2v.AsyncWanClient.eligible_sessions",
    "wanr2v.AsyncWanClient.reconcile",
    "wanr2v.AsyncWanClient.session_for_region",
    "wanr2v.AsyncWanClient.get_upload_policy",
    "wanr2v.Governor.acquire",
    "wanr2v.Governor.http_slot",
    "wanr2v.Governor.task_slot",
    "wanr2v.Governor.throttled",
    "wanr2v.testing.Faults.pick",
    "wanr2v.testing.Emulator.create",
    "wanr2v.testing.Emulator.query",
    "wanr2v.testing.Emulator.cancel",
    "wanr2v.testing.Emulator.list_tasks",
    "wanr2v.testing.Emulator.get_policy",
    "wanr2v.testing.Emulator.upload",
    "wanr2v.testing.Emulator.video",
    "wanr2v.testing.Emulator.count",
    "wanr2v.testing.Emulator.record_host_request",
    "wanr2v.testing.Emulator.new_request_id",
)
"""Anchors that must not exist: internals of a verb, the governor's pacing calls (the
client makes them), the emulator's HTTP handlers."""


class _Page(HTMLParser):
    """Visible text (scripts, styles and attribute values left out) and element ids."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.ids: set[str] = set()
        self._skip = 0

    def handle_starttag(self, tag: str, attrs_: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        for name, value in attrs_:
            if name == "id" and value:
                self.ids.add(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)


def _parse(markup: str) -> _Page:
    page = _Page()
    page.feed(markup)
    return page


def _text(markup: str) -> str:
    return re.sub(r"\s+", " ", "".join(_parse(markup).text))


def _class_section(markup: str, path: str) -> str | None:
    """The HTML of one documented object: from its heading to the next object of its level."""
    start = markup.find(f'id="{path}"')
    if start < 0:
        return None
    level = markup.rfind("<h", 0, start)
    tag = markup[level : level + 3]
    end = markup.find(f"{tag} id=", start)
    return markup[start : end if end > 0 else len(markup)]


ROW = re.compile(r'<tr class="doc-section-item">(?P<row>.*?)</tr>', re.DOTALL)
CELL = re.compile(r"<td>(?P<cell>.*?)</td>", re.DOTALL)


def _rows(section: str) -> Iterator[tuple[str, list[str]]]:
    """Each table row of the object's sections: its name and its other cells' text."""
    for m in ROW.finditer(section):
        cells = [_text(c.group("cell")).strip() for c in CELL.finditer(m.group("row"))]
        if cells:
            yield cells[0], cells[1:]


def _field_problems(markup: str, page: str, cls: type) -> list[str]:
    path = f"wanr2v.{cls.__name__}"
    section = _class_section(markup, path)
    if section is None:
        return [f"{page}: no entry for {path}"]
    rows: dict[str, list[str]] = {}
    for name, cells in _rows(section):
        rows.setdefault(name, cells)
    problems = []
    for field in attrs.fields(cls):
        cells = rows.get(field.name)
        if cells is None:
            problems.append(f"{page}: {path} does not list its field {field.name!r}")
            continue
        # Attributes: type, description.  Parameters: type, description, default.
        if len(cells) < 2 or not cells[0] or not cells[1]:
            problems.append(f"{page}: {path}.{field.name} has no type or no description")
        elif len(cells) >= 3 and field.default is not attrs.NOTHING and cells[2] == "required":
            problems.append(f"{page}: {path}.{field.name} has a default but shows as required")
    return problems


def public_names() -> list[str]:
    """Every public name, as its reference anchor (``wanr2v.X``, ``wanr2v.journal.Y``)."""
    return [
        f"{module.__name__}.{name}"
        for module in (wanr2v, wanr2v.journal, wanr2v.testing)
        for name in module.__all__
        if name != "__version__"
    ]


def _signature_problems(markup: str, page: str) -> list[str]:
    """Signatures with a line wider than `SIGNATURE_WIDTH` (not formatted)."""
    problems = []
    for m in SIGNATURE.finditer(markup):
        lines = html.unescape(re.sub(r"<[^>]+>", "", m.group(1))).splitlines()
        widest = max(lines, key=len, default="")
        if len(widest) > SIGNATURE_WIDTH:
            problems.append(
                f"{page}: a signature line of {len(widest)} characters ({widest[:40]}...): "
                "install ruff (the docs extra) so that mkdocstrings formats signatures"
            )
    return problems


def check(site: Path) -> list[str]:
    """Every problem of the built site, one line each."""
    problems: list[str] = []
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [f"{site}: no HTML pages (build the site first)"]
    reference_ids: set[str] = set()
    for page in pages:
        rel = page.relative_to(site).as_posix()
        if rel == "404.html":
            continue
        markup = page.read_text(encoding="utf-8")
        parsed = _parse(markup)
        text = html.unescape("".join(parsed.text))
        for m in ROLE.finditer(text):
            around = re.sub(r"\s+", " ", text[max(0, m.start() - 40) : m.end() + 40])
            problems.append(f"{rel}: a literal Sphinx role: ...{around}...")
        if "::</p>" in markup:
            problems.append(f"{rel}: a reST literal-block marker '::' shown as text")
        for name in BRIEF_FILES:
            if name in text:
                problems.append(f"{rel}: names {name!r}, a file readers do not have")
        for m in PRIVATE_PATH.finditer(text):
            problems.append(f"{rel}: shows the private path {m.group(0)!r}")
        problems += _signature_problems(markup, rel)
        if rel.startswith("reference/"):
            reference_ids |= parsed.ids
        for cls in DOCUMENTED_FIELDS.get(rel, ()):
            problems += _field_problems(markup, rel, cls)
    missing = [name for name in public_names() if name not in reference_ids]
    if missing:
        problems.append(f"the API reference has no entry for: {', '.join(missing)}")
    published = [anchor for anchor in PLUMBING if anchor in reference_ids]
    if published:
        problems.append(f"the API reference publishes plumbing: {', '.join(published)}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    problems = check(Path(argv[0]))
    for line in problems:
        print(line, file=sys.stderr)
    if not problems:
        print(f"{argv[0]}: the site holds (roles, names, fields, reference, plumbing)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
