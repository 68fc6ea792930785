"""Links in the project's Markdown and scenario comments: what they point at, the anchors GitHub
gives a file's headings, and which references do not land on a file (and anchor) in the repository.

Markdown links and images come from markdown-it-py's token stream; only bare mentions of repository
paths in running text or comments (`docs/sources.md#gang-allocation`) need a pattern.
"""

from __future__ import annotations

import itertools
import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from markdown_it import MarkdownIt

REPO = Path(__file__).resolve().parents[1]

_MD = MarkdownIt("commonmark").enable("table")
# A repository path named in text: starts a word (not the tail of a URL or of ../docs/), ends on a
# word character or a slash, so the full stop after it is not part of it.
BARE = re.compile(r"(?<![\w/.-])(docs/(?:[\w.-]*[\w/])?)(?:#([\w-]+))?")
# A relative path named in text, `../…`: resolved from the text's folder like a link.
UP = re.compile(r"(?<![\w/.-])((?:\.\./)+(?:[\w.-]*[\w/])?)")
HTML_ID = re.compile(r"""<a\s[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""")
HEADING_ID = re.compile(r"\s*\{#([\w-]+)\}\s*$")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _heading_text(inline) -> str:
    """A heading as rendered: text and code spans, without Markdown syntax."""
    return "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))


def anchors(markdown: str) -> set[str]:
    """Every `#anchor` a Markdown text defines: heading slugs (numbered when repeated, as GitHub
    does), `{#id}` after a heading, and `<a id>` / `<a name>`."""
    tokens = _MD.parse(markdown)
    found: set[str] = set(HTML_ID.findall(markdown))
    seen: dict[str, int] = {}
    for token, inline in itertools.pairwise(tokens):
        if token.type != "heading_open":
            continue
        text = _heading_text(inline)
        if explicit := HEADING_ID.search(text):
            found.add(explicit.group(1))
            text = text[: explicit.start()]
        base = slug(text)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


@cache
def file_anchors(path: Path) -> frozenset[str]:
    return frozenset(anchors(path.read_text(encoding="utf-8")))


def links(markdown: str) -> list[str]:
    """Link targets and image sources, from the parsed token stream."""
    out = []
    for token in _MD.parse(markdown):
        for child in token.children or []:
            if child.type == "link_open":
                out.append(child.attrGet("href"))
            elif child.type == "image":
                out.append(child.attrGet("src"))
    return out


def _resolve(target: Path, anchor: str | None, source: str, confined: bool) -> str | None:
    """None when the target exists (inside the repository, when ``confined``) and has the
    anchor."""
    if confined and not target.resolve().is_relative_to(REPO):
        return f"{source}: leaves the repository ({target})"
    if not target.exists():
        return f"{source}: no such file in the repository"
    if anchor and target.suffix == ".md" and anchor not in file_anchors(target.resolve()):
        return f"{source}: no anchor #{anchor} in {target.resolve().relative_to(REPO)}"
    return None


def problems(text: str, base: Path, *, markdown: bool = True) -> list[str]:
    """What does not resolve in ``text``: its Markdown links relative to ``base`` (the folder the
    text is in), its bare `docs/…` mentions relative to the repository's root and its bare `../…`
    mentions relative to ``base``. A text inside the repository may not point out of it; one
    outside (an ADR written elsewhere) may."""
    confined = base.resolve().is_relative_to(REPO)
    out = []
    for href in links(text) if markdown else []:
        parts = urlsplit(href)
        if parts.scheme or parts.netloc:
            continue  # a web address: not this repository's to check
        anchor = unquote(parts.fragment) or None
        if not parts.path:
            if anchor not in anchors(text):
                out.append(f"{href}: no such anchor in this file")
            continue
        if parts.path.startswith("/"):
            out.append(f"{href}: an absolute path")
            continue
        out.append(_resolve(base / unquote(parts.path), anchor, href, confined))
    for match in BARE.finditer(text):
        path, anchor = match.groups()
        out.append(_resolve(REPO / path, anchor, match.group(0), True))
    for match in UP.finditer(text):
        out.append(_resolve(base / match.group(1), None, match.group(0), confined))
    return [p for p in out if p]
