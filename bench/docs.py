"""Writing one bench script's section into docs/benchmarks.md, replacing the section of the same title."""

from __future__ import annotations

from bench import servers

DOCS = servers.REPO_ROOT / "docs" / "benchmarks.md"


def write_section(title: str, section: str) -> None:
    """``section`` (which starts with ``title``) in place of the section so titled, or appended when there is none."""
    text = DOCS.read_text(encoding="utf-8")
    if title in text:
        start = text.index(title)
        end = text.find("\n## ", start + len(title))
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOCS.write_text(text, encoding="utf-8")
