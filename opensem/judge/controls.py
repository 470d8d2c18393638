"""Validity controls: answers we know the right score of, scored by the same judge as the model.

    echo      the question itself, restated                      should score like nothing
    oracle    the item's own golden answer                       should pass
    shuffled  another item's golden answer (a fixed derangement) should not pass
    soup      the distinct content words of the item's source    should not pass
              section, truncated to the answer budget, in a
              seeded random order: the right vocabulary with no statement in it

A judge that passes the shuffled answers or the term soup rewards topic words rather than
facts, and one that gives a restated question as much as the base model's answers cannot tell
an answer from a non-answer; either way its scores are not evidence (see `unreliable`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from opensem.golden import GoldenItem
from opensem.text.words import STOPWORDS, content_words, words

CONTROLS = ("echo", "oracle", "shuffled", "soup")
MAX_CONTROL_PASS_RATE = 0.05  # shuffled or soup answers passing more often than this: unreliable
WORDS_PER_TOKEN = 0.75  # to turn generation.max_new_tokens into a word budget for the soup
SEED = 20261124


@dataclass(frozen=True)
class Section:
    source: str  # the document, relative to the raw folder
    heading: str
    text: str


def read_sections(raw_dir: Path) -> list[Section]:
    """The SEM's documents split at their headings (the forge's own reading of them); none when
    the raw folder is missing or empty, in which case the soup control is skipped."""
    from opensem.errors import OpenSEMError
    from opensem.text.chunk import sections
    from opensem.text.ingest import ingest

    try:
        docs, _ = ingest(raw_dir)
    except OpenSEMError:
        return []
    return [Section(d.name, heading, "\n".join(paragraphs)) for d in docs for heading, paragraphs in sections(d.text)]


def shuffled(items: list[GoldenItem], seed: int = SEED) -> list[str] | None:
    """Each item gets another item's golden answer: a seeded derangement (none for one item)."""
    if len(items) < 2:
        return None
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    answers = [""] * len(items)
    for k, index in enumerate(order):  # each takes the answer of the next one in a shuffled cycle
        answers[index] = items[order[(k + 1) % len(order)]].answer
    return answers


def source_section(item: GoldenItem, all_sections: list[Section]) -> Section | None:
    """The section the golden answer comes from: of the item's source document (all documents when
    it names none, or one that is not there), the one sharing most content words with it."""
    own = [s for s in all_sections if item.source and s.source == item.source] or all_sections
    if not own:
        return None
    target = content_words(item.answer)
    return max(own, key=lambda s: len(target & content_words(s.text)))


def term_soup(item: GoldenItem, section: Section, budget_words: int, seed: int = SEED) -> str:
    distinct = [w for w in dict.fromkeys(words(section.text)) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]
    kept = distinct[:budget_words]
    random.Random(f"{seed}:{item.id}").shuffle(kept)
    return " ".join(kept)


def soups(items: list[GoldenItem], raw_dir: Path, max_new_tokens: int) -> list[str] | None:
    all_sections = read_sections(raw_dir)
    if not all_sections:
        return None
    budget = max(8, int(max_new_tokens * WORDS_PER_TOKEN))
    return [term_soup(i, source_section(i, all_sections), budget) for i in items]


def control_answers(items: list[GoldenItem], raw_dir: Path, max_new_tokens: int) -> dict[str, list[str] | None]:
    return {
        "echo": [i.question for i in items],
        "oracle": [i.answer for i in items],
        "shuffled": shuffled(items),
        "soup": soups(items, raw_dir, max_new_tokens),
    }


def unreliable(metrics: dict, baseline_mean: float) -> list[str]:
    """Why the judge's scores are not evidence, from an evaluation's control metrics (empty: none).

    An echo at the floor (1.0) cannot be over-rewarded, so it never counts against the judge,
    even when a base model that knows nothing scores the floor too."""
    why = []
    for name in ("shuffled", "soup"):
        rate = metrics.get(f"{name}_pass_rate")
        if rate is not None and rate == rate and rate > MAX_CONTROL_PASS_RATE:
            why.append(f"the {name} control passes {rate:.0%} of items (> {MAX_CONTROL_PASS_RATE:.0%})")
    echo = metrics.get("echo_mean")
    if echo is not None and echo == echo and baseline_mean == baseline_mean and echo > 1.0 and echo >= baseline_mean:
        why.append(f"the echo control (question restated) averages {echo:.2f}, as much as the base model's {baseline_mean:.2f}")
    return why
