"""Links in README.md and docs/*.md point at files that exist (relative to the page, as a renderer
resolves them); a moved file or a page in another folder would otherwise leave a dead link."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)


def test_every_relative_link_resolves() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    dead, checked = [], 0
    for page in pages:
        for n, line in enumerate(page.read_text().splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target) or target.startswith("#"):
                    continue  # a web address or an anchor on the same page
                checked += 1
                if not (page.parent / target.split("#")[0]).exists():
                    dead.append(f"{page.relative_to(ROOT)}:{n}: {target}")
    assert checked > 20  # the pages do link to each other and to the results
    assert not dead, dead
