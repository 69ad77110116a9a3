"""README.md is a front door: short, with a table of contents that works, and links into docs/
that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
MAX_README_LINES = 300
PROSE_COLUMNS = 100
CONTENTS = "## Contents"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def pages() -> list[Path]:
    return [README, *sorted((REPO_ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """`text` without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(page: Path) -> set[str]:
    """The anchors GitHub gives the page's headings: lower case, punctuation dropped, spaces as dashes."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", prose_keeping_headings(page), flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        numbered, count = slug, 1
        while numbered in found:
            numbered, count = f"{slug}-{count}", count + 1
        found.add(numbered)
    return found


def prose_keeping_headings(page: Path) -> str:
    return re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text(encoding="utf-8")))
            if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_the_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_the_table_of_contents_lists_every_section_and_its_anchors_resolve() -> None:
    text = README.read_text(encoding="utf-8")
    assert CONTENTS in text, "README.md needs a table of contents"
    contents = text.split(CONTENTS, 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- \[([^\]]+)\]\(#([^)]+)\)$", contents, flags=re.MULTILINE)
    assert listed, contents
    missing = [anchor for _, anchor in listed if anchor not in anchors(README)]
    assert not missing, f"table of contents entries without a heading: {missing}"
    sections = re.findall(r"^## (.+)$", prose_keeping_headings(README), flags=re.MULTILINE)
    assert [title for title, _ in listed] == [title for title in sections if f"## {title}" != CONTENTS]


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        if not destination.exists():
            broken.append(f"{target}: no such file")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{page.relative_to(REPO_ROOT)}: {broken}"


@pytest.mark.parametrize("page", pages(), ids=lambda page: str(page.relative_to(REPO_ROOT)))
def test_prose_is_wrapped_at_100_columns(page: Path) -> None:
    """Paragraphs and list items wrap at PROSE_COLUMNS; code blocks, tables and the generated section
    of docs/results.md may be wider."""
    text = re.sub(r"<!-- results:start -->.*?<!-- results:end -->", "", page.read_text(encoding="utf-8"),
                  flags=re.DOTALL)
    text = re.sub(r"^ *```.*?^ *```", "", text, flags=re.MULTILINE | re.DOTALL)
    wide = [line for line in text.splitlines() if len(line) > PROSE_COLUMNS and not line.lstrip().startswith("|")]
    assert not wide, f"{page.relative_to(REPO_ROOT)}: prose lines over {PROSE_COLUMNS} columns: {wide}"


def test_the_docs_map_lists_every_page() -> None:
    listed = {target for target in relative_links(README) if target.startswith("docs/")}
    assert {f"docs/{page.name}" for page in pages()[1:]} <= listed


TEST_REFERENCE = re.compile(r"^(tests/[\w/]+\.py)?(?:::(test_\w+))?(?:\[[^\]]+\])?$")


def test_every_test_the_security_table_names_exists() -> None:
    """docs/security.md's attack table: each row names a test, and each `path::name` (`::name` after a
    path in the same cell) is a test function in that file."""
    rows = [line for line in (REPO_ROOT / "docs" / "security.md").read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and not line.startswith(("| attack ", "|---"))]
    assert len(rows) > 20
    missing = []
    for row in rows:
        path, named = None, 0
        for token in re.findall(r"`([^`]+)`", row.rsplit(" | ", 1)[1]):
            match = TEST_REFERENCE.match(token)
            if match is None or not (match.group(1) or match.group(2)):
                continue
            path = match.group(1) or path
            if match.group(2):
                assert path is not None, f"{token} names no file: {row[:80]}"
                named += 1
                if not re.search(rf"^def {match.group(2)}\(", (REPO_ROOT / path).read_text(), flags=re.MULTILINE):
                    missing.append(f"{path}::{match.group(2)}")
        assert named, f"a row names no test: {row[:80]}"
    assert not missing
