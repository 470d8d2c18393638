"""Training data never states the opposite of its source: every extractive pair is checked for the
source's own words and for the polarity of its Yes/No, on planted sentences and on every shipped
corpus; questions are questions; the forge reports its yield (pairs per KB, complete sentences)."""

from __future__ import annotations

import re

import pytest

from opensem.forge.chunk import Chunk, chunk_document
from opensem.forge.extractive import extract_pairs, unfaithful
from opensem.forge.ingest import ingest
from opensem.forge.quality import is_complete_sentence

from conftest import REPO

PLANTED = """Packages in main must comply with the Debian Free Software Guidelines; the archive team checks this.
A package in main must not depend on a package outside main for its compilation; contrib exists for that.
The maintainer is responsible for answering the bugs reported against the package; a team may share it.
An orphaned package is not maintained by any single person in the project; the QA group looks after it.
A column with INTEGER affinity can store a text string that is not a number; it keeps the string as it is.
SQLite does not enforce the length of a VARCHAR column in a table; the number in brackets is ignored."""
NEGATED = {"A package in main", "An orphaned package", "SQLite"}


def chunk(text, heading="Rules"):
    return Chunk("doc#0", "doc.md", heading, text, len(text) // 4)


def test_yes_no_answers_keep_the_polarity_of_their_source_sentence():
    pairs = [(q, a) for q, a in extract_pairs(chunk(PLANTED)) if a.startswith(("Yes. ", "No. "))]
    assert len(pairs) >= 5 and {a[:3] for _, a in pairs} == {"Yes", "No."}
    for question, answer in pairs:
        source = next(s for s in PLANTED.split("\n") if s.rstrip(".") in answer)
        negated = any(source.startswith(n) for n in NEGATED)
        assert answer.startswith("No. " if negated else "Yes. "), (question, answer)
        assert unfaithful(question, answer, chunk(PLANTED)) is None


@pytest.mark.parametrize("question, answer, reason", [
    ("Must packages in main comply with the guidelines?", "No. Packages in main must comply with the Debian Free Software Guidelines.", "polarity"),
    ("Must a package in main depend on a package outside main?", "Yes. A package in main must not depend on a package outside main for its compilation.", "polarity"),
    ("Must packages in main comply with the guidelines?", "Yes. Packages in main must comply with the Debian Free Software Guidelines.", None),
    ("Who answers the bugs?", "The maintainer answers every bug within a week.", "not_verbatim"),
    ("Is however, the maintainer responsible?", "Yes. The maintainer is responsible for answering the bugs reported against the package.", "ungrammatical"),
    ("Why is [6] This an important criterion?", "The maintainer is responsible for answering the bugs reported against the package.", "ungrammatical"),
])
def test_unfaithful_pairs_are_caught(question, answer, reason):
    assert unfaithful(question, answer, chunk(PLANTED)) == reason


_ASKS = re.compile(r"\b(?:what|when|why|which|how|who|where|whom|whose)\b|^(?:[^?]{0,120},\s+)?(?:is|are|can|must|may|should|does|do|will|was|were|has|have|did)\b", re.I)


@pytest.mark.parametrize("sem", ["legal", "debian-policy", "sqlite"])
def test_every_kept_pair_of_a_shipped_corpus_is_faithful_and_asks_a_question(sem):
    docs, _ = ingest(REPO / f"data/{sem}/raw")
    chunks = [c for d in docs for c in chunk_document(d, lambda s: max(1, len(s) // 4), 384, 48)]
    kept = [(q, a) for c in chunks for q, a in extract_pairs(c) if unfaithful(q, a, c) is None]
    kb = sum(len(d.text.encode()) for d in docs) / 1000
    assert len(kept) / kb >= 0.5  # a floor, not the target: real corpora still yield far less than legal's 5 per KB
    for question, answer in kept:
        assert question.endswith("?") and _ASKS.search(question), question
        if answer.startswith("No. "):  # a "No." repeats the source's own negation
            assert re.search(r"\b(?:no|not|never|cannot|none|neither|nor)\b|n't\b", answer[4:], re.I), (question, answer)


def test_complete_sentences_are_told_from_fragments():
    assert is_complete_sentence("Yes. The maintainer is responsible for the package.")
    assert not is_complete_sentence("Six years.")
    assert not is_complete_sentence("A voidable.")
    assert not is_complete_sentence("the maintainer is responsible for the package")
