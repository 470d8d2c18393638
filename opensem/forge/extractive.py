"""The offline teacher: question/answer pairs derived from the text itself, no model, no key.

Patterns, strongest first:
    reverse definition  "... is an **option contract**."      -> "What is <subject> called?"
    definition          "A **condition** is a term that ..."  -> "What is a condition?"
    labelled list item  "- **Revocation**: the offeror ..."   -> "In the context of <section>, what is revocation?"
    counted list        "... six essential elements:" + items -> "How many essential elements ...?"
    cloze               a number, a case or a statute in a sentence is replaced by a question word:
                        "... within 6 years of the breach"    -> "... within how many years of the breach?"
Two rules keep the pairs honest: a question never contains the fact its answer states, and an
answer never restates its question (either way the model would learn to echo); an answer opens
with the fact, in the source's own words, so it is grounded in its chunk.
"""

from __future__ import annotations

import re

from opensem.forge.chunk import Chunk
from opensem.llm import Completion

NUMBER_WORDS = "one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|eighteen|twenty"
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z(*\"'])")
_LIST_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+\*\*(?P<term>[^*]+)\*\*\s*(?:[:\-–—]\s*)(?P<desc>.+)$")
_ANY_ITEM = re.compile(r"^\s*(?:[-*]|\d+\.)\s+(?P<body>.+)$")
_DEFINITION = re.compile(
    r"^(?:(?P<art>A|An|The)\s+)?\*\*(?P<term>[^*]{2,60})\*\*(?P<tail>(?:\s+[a-z][a-z-]*){0,2}?)\s+"
    r"(?P<verb>is|are|means|occurs|happens)\s+(?P<pred>(?!not\b).+)$"
)
_REVERSE = re.compile(r"^(?P<subject>[A-Z][^*]{15,}?)\s+(?:is|are)\s+(?:also\s+)?(?:called\s+)?(?:an?\s+|the\s+)?\*\*(?P<term>[^*]{2,60})\*\*\s*\.$")
_COUNT = re.compile(rf"\b(?P<count>{NUMBER_WORDS}|\d+)\s+(?P<what>(?:main\s+|essential\s+|key\s+)?[a-z]+(?:\s+[a-z]+)?)\s*:$", re.I)
_NAME = r"[A-Z][\w.&'-]*"
_CASE = re.compile(
    rf"\*?(?P<case>(?!In\s)(?:Re\s+)?{_NAME}(?:\s+(?:{_NAME}|and|of))*\s+v\.?\s+{_NAME}(?:\s+(?:{_NAME}|\(No\s\d+\)))*?)\*?\s+\((?P<year>1[5-9]\d\d|20\d\d)\)"
)
_STATUTE = re.compile(
    r"\b(?:the\s+)?(?P<act>[A-Z][\w()-]*\s+(?:(?:[A-Z(][\w()-]*|of|and|for)\s+){0,7}Act\s+(?:of\s+)?(?:1[6-9]\d\d|20\d\d))"
)
_FUNCTION_WORDS = {"the", "a", "an", "how", "what", "which", "when", "why", "who"}
_QUANTITY = re.compile(
    rf"\b(?P<num>\d+(?:,\d{{3}})*|{NUMBER_WORDS})\s+(?P<unit>years?|months?|days?|weeks?|dollars|pounds|percent)\b", re.I
)
_EMPHASIS = re.compile(r"\*\*|\*|__|`")


def plain(text: str) -> str:
    return re.sub(r"\s+", " ", _EMPHASIS.sub("", text)).strip()


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _question(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip().rstrip(".;:, ")
    return _cap(text) + "?"


def _topic(heading: str) -> str:
    last = heading.split(" > ")[-1].rstrip("?").strip()
    first = last.split(" ", 1)[0]
    return last[:1].lower() + last[1:] if first.lower() in _FUNCTION_WORDS else last


def _term(text: str) -> str:
    """Lower-case a common noun at the start of a sentence ("Acceptance"), keep names ("UCC")."""
    return text[:1].lower() + text[1:] if text[:2].istitle() or (len(text) > 1 and text[1:2].islower()) else text


def extract_pairs(chunk: Chunk) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    lines = chunk.text.split("\n")
    list_lead: tuple[str, str, str] | None = None  # (count, what, lead sentence) awaiting its items
    items: list[str] = []
    for line in lines + [""]:
        item = _LIST_ITEM.match(line)
        if item:
            term, desc = plain(item["term"]), plain(item["desc"]).rstrip(".")
            items.append(term)
            topic = _topic(chunk.heading)
            q = f"In the context of {topic}, what is {_term(term)}?" if topic else f"What is {_term(term)}?"
            pairs.append((q, f"{_cap(term)}: {desc}."))
            continue
        other = _ANY_ITEM.match(line)
        if other:
            body = other["body"]
            bold = re.match(r"\*\*(?P<t>[^*]+)\*\*", body)
            items.append(plain(bold["t"]) if bold else plain(body).rstrip(".;"))
            for sentence in _SENT.split(body):
                pairs.extend(_sentence_pairs(sentence, chunk.heading))
            continue
        if list_lead and items:
            count, what, lead = list_lead
            subject = plain(lead.rsplit(count, 1)[0]).rstrip(" ,")
            q = _question(f"{subject} how many {what}")
            pairs.append((q, f"{_cap(count)}: {', '.join(items)}."))
        list_lead, items = None, []
        for raw in _SENT.split(line.strip()):
            if not raw:
                continue
            counted = _COUNT.search(raw)
            if counted and raw.rstrip().endswith(":"):
                list_lead = (counted["count"], counted["what"], raw)
                continue
            pairs.extend(_sentence_pairs(raw, chunk.heading))
    return _unique(pairs)


def _sentence_pairs(raw: str, heading: str) -> list[tuple[str, str]]:
    sentence = plain(raw)
    if len(sentence) < 25 or sentence.endswith(("?", ":")):
        return []
    out: list[tuple[str, str]] = []
    rev = _REVERSE.match(raw.strip())
    if rev:
        term = plain(rev["term"])
        subject = plain(rev["subject"])
        article = "An" if term[:1].lower() in "aeiou" else "A"
        out.append((f"What is {subject[:1].lower() + subject[1:]} called?", f"{article} {_term(term)}."))
    d = _DEFINITION.match(raw.strip())
    if d:
        term = _term((plain(d["term"]) + d["tail"]).strip())
        art = (d["art"] or "").lower()
        named = f"{art} {term}".strip() if art in ("a", "an") else term
        verb = d["verb"]
        if verb in ("occurs", "happens"):
            q = f"When does {named} {verb[:-1]}?"
        elif verb == "means":
            q = f"What does {named} mean?"
        else:
            q = f"What {verb} {named}?"
        out.append((q, sentence))
    out.extend(_cloze(sentence, heading))
    return out


def _cloze(sentence: str, heading: str) -> list[tuple[str, str]]:
    """Hide one fact (a quantity, a case, a statute) behind a question word."""
    out = []
    topic = _topic(heading)
    prefix = f"On {topic}: " if topic else ""
    q = _QUANTITY.search(sentence)
    if q:
        unit = q["unit"].lower()
        unit = unit if unit.endswith("s") else unit + "s"
        asked = sentence[: q.start()] + f"how many {unit}" + sentence[q.end():]
        out.append((_question(prefix + asked[:1].lower() + asked[1:] if prefix else asked), f"{_cap(q['num'])} {q['unit']}."))
    c = _CASE.search(sentence)
    if c:
        case = f"{c['case'].strip()} ({c['year']})"
        m = re.match(r"^In\s+" + re.escape(c.group(0)) + r",?\s*(?P<rest>.+)$", sentence)
        if m:
            rest = re.sub(r"^the (court|house of lords) (held|decided) that\s+", "", m["rest"], flags=re.I)
            rest = rest[:1].lower() + rest[1:]
            asked = f"In which case {rest}" if " held " in f" {rest} " else f"In which case was it held that {rest}"
        else:
            asked = (prefix + sentence[: c.start()] + "which case" + sentence[c.end():]).strip()
        out.append((_question(asked), f"{case}."))
    s = _STATUTE.search(sentence)
    if s and not c:
        asked = (prefix + sentence[: s.start()] + "which statute" + sentence[s.end():]).strip()
        out.append((_question(asked), f"The {s['act']}."))
    return out


def _unique(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for q, a in pairs:
        if q.lower() not in seen:
            seen.add(q.lower())
            out.append((q, a))
    return out


class ExtractiveTeacher:
    provider = "extractive"
    name = "extractive"

    async def ask(self, chunk: Chunk, n_pairs: int) -> Completion:
        return Completion(result=extract_pairs(chunk)[:n_pairs])

    async def aclose(self) -> None:
        pass

    def close(self) -> None:
        pass
