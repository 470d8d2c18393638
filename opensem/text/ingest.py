"""Read a SEM's raw documents into normalised text.

.txt and .md are read as UTF-8; .pdf (pypdf), .html (BeautifulSoup) and .docx (python-docx)
through their libraries. Hard-wrapped text is reflowed into paragraphs and HTML navigation is
dropped (reflow.py), so a sentence is never cut where its source line wrapped. A file that
cannot be used is skipped with its reason - never a crash - and the reasons end up in the
forge manifest.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from opensem.errors import OpenSEMError

SUPPORTED = {".txt", ".md", ".markdown", ".pdf", ".html", ".htm", ".docx"}
MAX_DOCUMENT_BYTES = 64 * 2**20  # larger is a dump or a disk image, not a document: split it


@dataclass(frozen=True)
class Document:
    name: str  # path relative to the raw folder
    text: str


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str  # empty | no_sentences | binary | not_utf8 | unreadable (library's message) | unsupported | too_large | outside_folder


def check_folder(raw_dir: Path) -> None:
    """A folder of documents is there, or one line saying what is there instead."""
    if raw_dir.exists() and not raw_dir.is_dir():
        raise OpenSEMError(f"{raw_dir} is a file, where the SEM's folder of documents belongs: move it away, "
                           "make the folder and put the documents (.txt, .md, .pdf, .html, .docx) in it")
    if not raw_dir.is_dir():
        raise OpenSEMError(f"raw folder {raw_dir} does not exist: create it and put .txt/.md documents in it")


def ingest(raw_dir: Path) -> tuple[list[Document], list[Skipped]]:
    check_folder(raw_dir)
    files = sorted(p for p in raw_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise OpenSEMError(f"raw folder {raw_dir} is empty: put .txt/.md/.pdf/.html/.docx documents in it")
    docs: list[Document] = []
    skipped: list[Skipped] = []
    for path in files:
        name = str(path.relative_to(raw_dir))
        suffix = path.suffix.lower()
        if not path.resolve().is_relative_to(raw_dir.resolve()):
            skipped.append(Skipped(name, "outside_folder"))  # a link out of the SEM's folder is never read
            continue
        if suffix not in SUPPORTED:
            skipped.append(Skipped(name, "unsupported"))
            continue
        if path.stat().st_size > MAX_DOCUMENT_BYTES:
            skipped.append(Skipped(name, "too_large"))
            continue
        try:
            text = _read(path, suffix)
        except _Skip as why:
            skipped.append(Skipped(name, str(why)))
            continue
        except Exception as exc:  # a corrupt PDF/DOCX must not stop the other documents
            message = str(exc).replace(str(path), name)[:120]  # the library's words, without this machine's path
            skipped.append(Skipped(name, f"unreadable ({type(exc).__name__}: {message})"))
            continue
        text = normalise(text, markdown=suffix in (".md", ".markdown"), wrapped=suffix not in (".html", ".htm", ".docx"))
        if not text.strip():
            skipped.append(Skipped(name, "empty"))
            continue
        if not has_sentences(text):  # e.g. an HTML page that was all navigation: nothing to ask about
            skipped.append(Skipped(name, "no_sentences"))
            continue
        docs.append(Document(name, text))
    if not docs:
        reasons = "; ".join(f"{s.name}: {s.reason}" for s in skipped[:10]) + (f"; and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        raise OpenSEMError(f"no usable documents in {raw_dir} ({reasons}): add .txt/.md/.pdf/.html/.docx files with text, "
                           "in UTF-8 or UTF-16")
    return docs, skipped


def has_sentences(text: str) -> bool:
    """True when some line reads as prose: two or more words ending like a sentence, or eight or
    more words. A page of links, menus or labels ("Next | Previous") has none."""
    for line in text.splitlines():
        words = re.findall(r"\w+", line)
        if len(words) >= 8 or (len(words) >= 2 and line.rstrip().endswith((".", "!", "?"))):
            return True
    return False


class _Skip(Exception):
    pass


def _read(path: Path, suffix: str) -> str:
    if suffix in (".txt", ".md", ".markdown", ".html", ".htm"):
        data = path.read_bytes()
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):  # UTF-16 with its byte-order mark (Windows editors): text, not binary
            try:
                return _html_as_text(data.decode("utf-16"), suffix)
            except UnicodeDecodeError:
                raise _Skip("not_utf8") from None
        if b"\x00" in data[:8192]:
            raise _Skip("binary")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise _Skip("not_utf8") from None
        return _html_as_text(text, suffix)
    if suffix == ".pdf":
        from pypdf import PdfReader

        return "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    if suffix == ".docx":
        import docx

        paragraphs = []
        for p in docx.Document(str(path)).paragraphs:
            style = (p.style.name or "").lower() if p.style is not None else ""
            if style.startswith("heading") and p.text.strip():
                level = int(style.split()[-1]) if style.split()[-1].isdigit() else 1
                paragraphs.append(f"{'#' * level} {p.text.strip()}")
            else:
                paragraphs.append(p.text)
        return "\n\n".join(paragraphs)
    raise _Skip("unsupported")


def _html_as_text(text: str, suffix: str) -> str:
    if suffix in (".html", ".htm"):
        from opensem.text.reflow import html_to_text

        return html_to_text(text)
    return text


_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.S)


def normalise(text: str, markdown: bool = False, wrapped: bool = False) -> str:
    """NFC, Unix newlines, no front matter, hard-wrapped lines reflowed into paragraphs (`wrapped`:
    plain text, Markdown, PDF; see reflow.py), no trailing spaces, at most one blank line in a row."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    if markdown:
        text = _FRONT_MATTER.sub("", text, count=1)
    text = text.replace("\u00a0", " ").replace("\t", "    ")
    if wrapped:
        from opensem.text.reflow import reflow

        text = reflow(text)
    lines = [re.sub(r" {2,}", " ", line).rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"
