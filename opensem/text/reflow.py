"""Documents as people write them -> one paragraph per line, headings as Markdown `#` lines.

The forge reads a document paragraph by paragraph and sentence by sentence, so a line break in
the middle of a sentence (hard-wrapped text, HTML source) must not reach it: answers would stop
where the source line wrapped. What this module knows about layout:

plain text and Markdown (`reflow`)
    - a heading underlined with a row of = - * ~ ^ # + (Markdown's setext style, or
      reStructuredText's, whose levels follow the order the underline characters first appear)
      becomes a `#` heading
    - the lines of a paragraph are joined; a word hyphenated at a line end is joined whole
    - a list item (`* `, `- `, `+ `, `1. `, `(a) `) starts a new line, its wrapped lines joined to it
    - a short line followed by an indented block is a definition: "term: body"
    - fenced code, tables (`|` lines) and indented blocks after a line ending in ":" keep their lines
HTML (`html_to_text`)
    - scripts, styles, forms and navigation (nav/header/footer/aside, and elements whose class or
      id says menu, nav, toc, search, sidebar, breadcrumb, banner, footer, header or tagline) are
      dropped; the page <title> becomes the top heading and <h1>-<h6> become `#` headings
    - each block element (p, li, dd, td, ...) becomes one line; <pre> keeps its lines
Hand-written because no maintained library reflows hard-wrapped plain text with these cues
(they all target Markdown rendering or HTML extraction, not plain-text layout).
"""

from __future__ import annotations

import functools
import re

_UNDERLINE = re.compile(r"^([=\-*~^#+])\1{2,}\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[*+\-\u2022]|\d{1,3}[.)]|\([a-zA-Z0-9]{1,3}\))\s+\S")
_FENCE = re.compile(r"^\s*(```|~~~)")
_MD_HEADING = re.compile(r"^#{1,6}\s+\S")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _join(lines: list[str]) -> str:
    """Lines of one paragraph -> one line; `two-` + `digit` -> `two-digit`."""
    out = ""
    for line in (part.strip() for part in lines):
        if not line:
            continue
        if out.endswith("-") and len(out) > 1 and out[-2].isalpha() and line[:1].isalpha():
            out += line
        else:
            out = f"{out} {line}" if out else line
    return out


def _is_term(line: str, nxt: str | None) -> bool:
    """A short line with no closing punctuation whose next line is indented under it: a
    definition's term ('"required"' over its indented description)."""
    return (nxt is not None and _indent(nxt) > _indent(line) and len(line.split()) <= 8
            and not line.rstrip().endswith((".", ",", ";", ":")))


def _units(block: list[str]) -> list[str]:
    """One blank-line-separated block -> its lines: list items and definitions apart, the rest joined."""
    units: list[tuple[list[str], bool]] = []  # (lines, is a definition)
    for k, line in enumerate(block):
        nxt = block[k + 1] if k + 1 < len(block) else None
        term = _is_term(line, nxt)
        inside = bool(units) and _indent(line) > _indent(units[-1][0][0])  # wrapped under the unit above
        if not units or _LIST_ITEM.match(line) or (term and not inside):
            units.append(([line], term))
        else:
            units[-1][0].append(line)
    joined = []
    for lines, definition in units:
        if definition and len(lines) > 1:
            joined.append(f"{lines[0].strip()}: {_join(lines[1:])}")
        else:
            joined.append(_join(lines))
    return [u for u in joined if u]


def _is_literal(block: list[str], previous: str) -> bool:
    if all(line.lstrip().startswith("|") for line in block):
        return True  # a table
    return previous.rstrip().endswith(":") and all(_indent(line) >= 3 for line in block) and not _LIST_ITEM.match(block[0])


def reflow(text: str) -> str:
    """Hard-wrapped plain text or Markdown -> `#` headings and one paragraph (or item) per line,
    paragraphs separated by blank lines."""
    lines = text.split("\n")
    levels: list[str] = []  # underline characters in the order they first appear
    out: list[str] = []
    block: list[str] = []
    previous = ""
    in_fence = False

    def flush() -> None:
        nonlocal block, previous
        if block:
            if _is_literal(block, previous):
                out.append("\n".join(line.rstrip() for line in block))
            else:
                out.extend(_units(block))
            previous = out[-1] if out else ""
            out.append("")
            block = []

    k = 0
    while k < len(lines):
        line = lines[k]
        if _FENCE.match(line):
            if not in_fence:
                flush()
            in_fence = not in_fence
            out.append(line)
            if not in_fence:
                out.append("")
            k += 1
            continue
        if in_fence:
            out.append(line)
            k += 1
            continue
        nxt = lines[k + 1] if k + 1 < len(lines) else ""
        under = _UNDERLINE.match(nxt)
        if line.strip() and not block and under and len(nxt.strip()) >= 0.6 * len(line.strip()) and not _UNDERLINE.match(line):
            char = under.group(1)
            if char not in levels:
                levels.append(char)
            out += ["#" * min(levels.index(char) + 1, 6) + " " + line.strip(), ""]
            previous = ""
            k += 2
            continue
        if not line.strip():
            flush()
        elif _MD_HEADING.match(line) and not block:
            out += [line.strip(), ""]
            previous = ""
        else:
            block.append(line)
        k += 1
    flush()
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


BOILERPLATE = re.compile(r"menu|nav|toc|search|sidebar|breadcrumb|banner|footer|header|tagline", re.I)
_BLOCKS = ["p", "li", "dd", "dt", "td", "th", "tr", "blockquote", "div", "section", "article", "table", "ul", "ol", "dl",
           "figcaption", "caption", "br"]
_PRE_NEWLINE = "\ue000"  # stands in for the newlines of <pre> while the rest is collapsed (not whitespace)


def html_to_text(html: str) -> str:
    """An HTML page -> its readable text: `#` headings, one block per line, navigation dropped."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(["script", "style", "nav", "header", "footer", "aside", "form", "noscript", "svg", "head", "button",
                     "select", "input"]):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed or tag.attrs is None:
            continue
        names = " ".join(tag.get("class") or []) + " " + str(tag.get("id") or "")
        if BOILERPLATE.search(names):
            tag.decompose()
    body = soup.body or soup
    below = 1 if title else 0  # the page title is the top heading; the page's own go under it
    for level in range(1, 7):
        for h in body.find_all(f"h{level}"):
            h.replace_with(f"\n\n{'#' * min(level + below, 6)} {' '.join(h.get_text(' ').split())}\n\n")
    for pre in body.find_all("pre"):
        pre.replace_with("\n\n" + pre.get_text().strip("\n").replace("\n", _PRE_NEWLINE) + "\n\n")
    for block in body.find_all(_BLOCKS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body.get_text())]
    text = "\n\n".join(p.replace(_PRE_NEWLINE, "\n") for p in paragraphs if p)
    return (f"# {title}\n\n{text}" if title else text) + "\n"


@functools.lru_cache(maxsize=1)
def _segmenter():
    import pysbd

    return pysbd.Segmenter(language="en", clean=False)


def split_sentences(text: str) -> list[str]:
    """The sentences of a paragraph, by pysbd: chosen by measurement (`python -m bench
    sentence_split`: on 47 hand-split sentences of the sample corpora it got every boundary right,
    where the regex it replaces missed 2 of 28 and blingfire, syntok, sentencex and punkt did worse)."""
    text = text.strip()
    return [s.strip() for s in _segmenter().segment(text) if s.strip()] if text else []
