"""The README and the pages under docs/: every relative link points at a file that exists, and the README stays a
short front door (the rest of the documentation lives in docs/)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README_MAX_LINES = 220
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target) and ![alt](target); the target may sit in <…> and be followed by a "title"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)  # http(s):, mailto:, any other scheme


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)[0] * len(m.group(1))
            continue
        if fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            continue
        out.append((number, CODE_SPAN.sub(lambda s: " " * len(s.group(0)), line)))
    return out


def relative_links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every relative link: no scheme, not a bare #anchor; an anchor is stripped."""
    found = []
    for number, line in prose_lines(text):
        for m in LINK.finditer(line):
            target = m.group(1).strip("<>").strip()
            if not target or target.startswith("#") or EXTERNAL.match(target):
                continue
            path = target.split("#", 1)[0].split("?", 1)[0]
            if path:
                found.append((number, path))
    return found


def missing_links(page: Path) -> list[str]:
    """``file:line: target`` for each relative link of ``page`` whose target does not exist beside it."""
    return [f"{page.relative_to(REPO)}:{number}: {target}"
            for number, target in relative_links(page.read_text(encoding="utf-8"))
            if not (page.parent / target).exists()]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_exists(page: Path):
    missing = missing_links(page)
    assert not missing, "broken relative links:\n" + "\n".join(missing)


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"


def test_the_docs_index_and_the_readme_link_every_page():
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"README.md"}
    for index in (REPO / "README.md", REPO / "docs" / "README.md"):
        linked = {Path(t).name for _, t in relative_links(index.read_text(encoding="utf-8"))}
        assert pages <= linked, f"{index.relative_to(REPO)} does not link {sorted(pages - linked)}"


def test_the_link_check_finds_a_broken_link(tmp_path: Path):
    """The check itself: a page with a broken link, a link in code and an external one reports only the broken."""
    (tmp_path / "there.md").write_text("x\n")
    page = tmp_path / "page.md"
    page.write_text("See [here](there.md#top), [gone](missing/file.md) and ![img](nope.png \"t\").\n"
                    "`[not a link](code.md)` and <https://example.org> and [web](https://example.org/x.md).\n"
                    "```\n[in a fence](fenced.md)\n```\n[anchor](#only)\n", encoding="utf-8")
    assert [t for _, t in relative_links(page.read_text(encoding="utf-8"))] == \
        ["there.md", "missing/file.md", "nope.png"]
    assert [t for _, t in relative_links(page.read_text()) if not (tmp_path / t).exists()] == \
        ["missing/file.md", "nope.png"]
