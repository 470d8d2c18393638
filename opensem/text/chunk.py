"""Split documents into chunks measured in the base model's tokens.

Headings (markdown `#` lines - the ingest turns underlined and HTML headings into them - or, in a
document with none, a short stand-alone line without final punctuation) start a new chunk and
travel with it as context: "Document title > Section". Inside a
section, paragraphs are packed up to `chunk_tokens`; a chunk that closes because it is full
hands its last sentences (up to `overlap` tokens) to the next one, so no fact is cut in half.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator

from opensem.text.ingest import Document
from opensem.text.reflow import split_sentences

_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*$")


@dataclass(frozen=True)
class Chunk:
    id: str  # "<document>#<n>"
    source: str
    heading: str  # "Title > Section" (may be empty)
    text: str
    n_tokens: int
    opens_section: bool = False  # the first chunk of its section: its text starts where the section does


def _heading(block: str, markdown_only: bool = False) -> tuple[int, str] | None:
    if "\n" in block:
        return None
    m = _MD_HEADING.match(block)
    if m:
        return len(m.group(1)), m.group(2).strip()
    if markdown_only:  # the document marks its headings: a short line is just a short line
        return None
    words = block.split()
    if 0 < len(words) <= 10 and block[-1] not in ".:;,?!)" and block[0].isupper() and not block.startswith(("-", "*")):
        return (1 if block.isupper() else 2), block.strip()
    return None


def sections(text: str) -> Iterator[tuple[str, list[str]]]:
    """Yield (heading path, paragraphs) per section."""
    path: dict[int, str] = {}
    paragraphs: list[str] = []
    marked = any(_MD_HEADING.match(line) for line in text.split("\n"))
    for block in (b.strip() for b in text.split("\n\n")):
        if not block:
            continue
        found = _heading(block, markdown_only=marked)
        if found:
            if paragraphs:
                yield " > ".join(path[k] for k in sorted(path)), paragraphs
                paragraphs = []
            level, title = found
            path = {k: v for k, v in path.items() if k < level}
            path[level] = title.title() if title.isupper() else title
        else:
            paragraphs.append(block)
    if paragraphs:
        yield " > ".join(path[k] for k in sorted(path)), paragraphs


def token_counter(tokenizer) -> Callable[[str], int]:
    """Counts a text's tokens as the model will see them inside a prompt (no BOS/EOS added)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def chunk_document(doc: Document, count_tokens: Callable[[str], int], chunk_tokens: int, overlap: int) -> list[Chunk]:
    chunks: list[Chunk] = []

    def emit(heading: str, units: list[str], first: bool) -> None:
        text = "\n".join(units).strip()
        if text:
            chunks.append(Chunk(f"{doc.name}#{len(chunks)}", doc.name, heading, text, count_tokens(text), first))

    for heading, paragraphs in sections(doc.text):
        units: list[tuple[str, int]] = []  # (text, tokens) of the chunk being filled
        first = True
        for paragraph in paragraphs:
            pieces = [paragraph] if count_tokens(paragraph) <= chunk_tokens else split_sentences(paragraph)
            for piece in pieces:
                for part in _hard_split(piece, count_tokens, chunk_tokens):
                    size = count_tokens(part)
                    if units and sum(n for _, n in units) + size > chunk_tokens:
                        emit(heading, [t for t, _ in units], first)
                        units, first = _tail(units, overlap), False
                    units.append((part, size))
        emit(heading, [t for t, _ in units], first)
    return chunks


def _tail(units: list[tuple[str, int]], overlap: int) -> list[tuple[str, int]]:
    """The last sentences of a full chunk, up to `overlap` tokens, to open the next one."""
    sentences = [s for text, _ in units for s in split_sentences(text)]
    kept: list[str] = []
    total = 0
    for sentence in reversed(sentences):
        size = max(1, len(sentence) // 4)  # rough: exact counts are not needed for overlap
        if total + size > overlap:
            break
        kept.insert(0, sentence)
        total += size
    return [(" ".join(kept), total)] if kept else []


def _hard_split(text: str, count_tokens: Callable[[str], int], limit: int) -> list[str]:
    """Last resort for a single sentence longer than a chunk: cut it by words."""
    if count_tokens(text) <= limit:
        return [text]
    words, parts, current = text.split(), [], []
    for word in words:
        if current and count_tokens(" ".join(current + [word])) > limit:
            parts.append(" ".join(current))
            current = []
        current.append(word)
    return parts + ([" ".join(current)] if current else [])
