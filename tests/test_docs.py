"""The documentation holds together: README.md, ARCHITECTURE.md and docs/*.md.

* Every relative Markdown link ``[text](path)`` or ``[text](path#anchor)`` names a file (or
  folder) that exists, relative to the file holding it, and every ``#anchor``, in the same
  file or another, is the slug of one of the target's headings (GitHub's rules).
* The README stays short enough to read to the end (under 300 lines).
* The README's test command is the one CI runs: ``.ci/run`` holds its lines verbatim.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = [README, ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks; inline code spans blanked, or kept
    (a heading's code text is part of its anchor)."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((number, re.sub(r"`[^`]*`", "``", line) if blank_code else line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lowercase, punctuation other than
    ``-`` and ``_`` dropped, each space a ``-``."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    return "".join(ch for ch in text if ch.isalnum() or ch in "-_ ").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings, repeated ones numbered as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8"), blank_code=False):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Every relative link of ``path`` whose file or anchor does not exist, as text."""
    bad = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for match in LINK.finditer(line):
            target = match.group(1)
            if SCHEME.match(target):
                continue  # http:, https:, mailto: ...
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / unquote(file_part)).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{number}: {target}"
            if not dest.exists():
                bad.append(f"{where} (no such file)")
            elif anchor and (dest.is_dir() or dest.suffix != ".md"):
                bad.append(f"{where} (an anchor into a file that is no Markdown page)")
            elif anchor and unquote(anchor) not in anchors(dest):
                bad.append(f"{where} (no heading with that anchor in {dest.name})")
    return bad


def test_the_pages_exist():
    assert (ROOT / "docs").is_dir() and len(DOCS) > 2


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(path):
    assert broken_links(path) == []


def test_the_checker_finds_broken_links_and_anchors(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## The `up` command: one run\n", encoding="utf-8")
    page.write_text(
        "# Page\n\n## A section\n\n"
        "[fine](other.md) [fine](other.md#the-up-command-one-run) [fine](#a-section)\n"
        "[fine](https://example.com/x#y) `[code](nowhere.md)`\n"
        "```bash\n[code](nowhere.md)\n```\n"
        "[gone](missing.md) [no anchor](other.md#nothing) [no anchor here](#nothing)\n",
        encoding="utf-8")
    bad = broken_links(page, root=tmp_path)
    assert [b.split(": ", 1)[1].split(" (")[0] for b in bad] == [
        "missing.md", "other.md#nothing", "#nothing"]


def test_slugs_follow_githubs_rules():
    assert slug("Replay with nothing running: `replay run`") == "replay-with-nothing-running-replay-run"
    assert slug("Worked example: archive → replay → compare events") == \
        "worked-example-archive--replay--compare-events"
    assert slug("Streaming ST-GCN (continual inference)") == "streaming-st-gcn-continual-inference"
    assert slug("Set up: the two commands") == "set-up-the-two-commands"


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines: move the detail under docs/"


def readme_test_block() -> list[str]:
    """The lines of the README's ```bash / ```sh block that holds its test command."""
    blocks, block, lang = [], None, None
    for line in README.read_text(encoding="utf-8").splitlines():
        match = FENCE.match(line)
        if match and block is None:
            lang, block = line.strip()[3:].strip(), []
        elif match:
            if lang in ("bash", "sh", "shell", "console"):
                blocks.append(block)
            block = None
        elif block is not None:
            block.append(line.strip())
    found = [b for b in blocks if any(line.startswith("python -m pytest") for line in b)]
    assert len(found) == 1, "README.md should hold one shell block with its test command"
    return [line for line in found[0] if line and not line.startswith("#")]


def test_ci_runs_the_readme_test_command_verbatim():
    block = readme_test_block()
    command = next(line for line in block if line.startswith("python -m pytest"))
    assert "--durations=25" in command  # CI prints the 25 slowest tests
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    missing = [line for line in block if line not in ci]
    assert missing == [], f".ci/run lacks the README's set-up and test lines {missing}"
