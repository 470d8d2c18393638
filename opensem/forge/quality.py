"""Keep a pair only if it is worth training on; otherwise say why.

Reasons (counted in the manifest, rows in processed/rejected.jsonl):
    too_short, too_long   question or answer length out of bounds
    refusal               the teacher declined ("I cannot ...")
    language              not in the SEM's language (forge.language)
    not_grounded          the answer's content words are mostly absent from its chunk
    echo                  the answer only restates the question
    needs_context         the question points outside itself ("described above", "this restriction",
                          "the following targets"): a user never asks it that way, and the answer
                          teaches a fact without what it is about
    duplicate             a near-duplicate of a pair already kept (MinHash over word shingles)
    contaminated          a near-copy of a golden question, or of a golden question/answer pair
    polarity              (an LLM teacher's pair) the answer restates a clause of its chunk with a
                          "not" the clause does not have, or without the one it has
                          (contradicts_source); the extractive teacher's own checks are in
                          extractive.unfaithful
Decontamination targets the test items, not the knowledge: the documents the golden set was
written from are supposed to be in the training data, only the exam questions are not.
"""

from __future__ import annotations

import functools
import re

from opensem.text.words import _OPENS_POLAR, ENDS_A_SENTENCE, STOPWORDS, content_words, is_complete_sentence, words  # noqa: F401 (re-exported)

NEGATION = re.compile(r"\b(?:no|not|never|cannot|none|neither|nor)\b|n't\b", re.I)
# Words that point at the surrounding text (outside quotes, where they may be part of a name).
_POINTS_OUTSIDE = re.compile(r"\b(?:above|below|aforementioned|latter|former|the following|this|these|those|do(?:ing)? so|if so"
                             r"|in (?:that|such an?|either|each) case|in such cases)\b", re.I)
_REFUSAL = re.compile(r"\b(as an ai|i cannot|i can't|i'm sorry|i am sorry|i am unable|i'm unable|cannot help with)\b", re.I)


def normalise_question(text: str) -> str:
    return " ".join(words(text))


def is_english(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(1 for c in letters if ord(c) < 0x250) / len(letters)
    ws = words(text)
    return latin >= 0.9 and (len(ws) < 8 or any(w in STOPWORDS for w in ws))


def points_outside(question: str) -> bool:
    """The question leans on text it does not carry ("the rule described above")."""
    return bool(_POINTS_OUTSIDE.search(re.sub(r"[\"“][^\"”]*[\"”]", "", question)))


# Where a sentence's clauses part: ; and :, a comma before a conjunction, and brackets (an aside).
_CLAUSE_BREAK = re.compile(r"[;:]\s+|,\s+(?=(?:but|and|or|so|unless|except|while|whereas|although)\b)|\s*[()]\s*", re.I)


def _clauses(sentence: str) -> list[str]:
    return [c for c in _CLAUSE_BREAK.split(sentence) if c.strip()]


@functools.lru_cache(maxsize=64)
def _source_clauses(chunk_text: str) -> tuple[tuple[set[str], bool, int], ...]:
    """Every sentence of a chunk and its clauses, as (content words, negated, length): split once
    per chunk, not once per pair the teacher wrote from it."""
    from opensem.text.reflow import split_sentences

    return tuple((words, bool(NEGATION.search(c)), len(c))
                 for paragraph in chunk_text.split("\n") for sentence in split_sentences(paragraph)
                 for c in [sentence, *_clauses(sentence)] if (words := content_words(c)))


def contradicts_source(answer: str, chunk_text: str, min_overlap: float = 0.6, min_words: int = 3) -> bool:
    """True when an answer restates a clause of its chunk with the opposite polarity: "Is X Y?"
    -> "No. X is not Y." from "X is Y." (the inverted pairs issue 12 found), or a "not" the
    source has, left out. Each clause of the answer (less its Yes/No) with min_words content words
    or more (a statement, not a bare term) is compared with the clause or sentence of the chunk
    closest to it, the shortest among equals; only a close restatement (at least min_overlap of
    the words of the longer of the two shared) is judged, so a "No." resting on a different, positive
    statement ("No. The on-disk format is the same.") passes. Clauses, so that "X is Y, but Z is
    not W" does not count as denying "X is Y". A paraphrase that moves the negation into a word
    ("must not" -> "is forbidden") is rejected too: a pair lost, never a false one kept. The
    bounds were set on the shipped corpora's checked extractive pairs (faithful by construction):
    none flagged with min_words 3; with 2, three were (a term matched to a clause that denies
    something else), so a two-word statement ("Consideration must be adequate") is not judged."""
    from opensem.text.reflow import split_sentences

    source = _source_clauses(chunk_text)
    if not source:
        return False
    for sentence in split_sentences(_OPENS_POLAR.sub("", answer.strip())):
        for clause in _clauses(sentence):
            said = content_words(clause)
            if len(said) < min_words:
                continue
            # the closest clause: shared words over the longer side's, so a term inside a long
            # sentence ("the parol evidence rule") is not taken for a restatement of it
            overlap, _, negated = max((len(said & w) / max(len(said), len(w)), -n, neg) for w, neg, n in source)
            if overlap >= min_overlap and bool(NEGATION.search(clause)) != negated:
                return True
    return False


def check_pair(question: str, answer: str, chunk_text: str, fcfg, chunk_words: set[str] | None = None) -> str | None:
    """The reason to reject a pair, or None to keep it."""
    if len(question) < 10 or len(answer) < fcfg.min_answer_chars:
        return "too_short"
    if len(question) > 500 or len(answer) > fcfg.max_answer_chars:
        return "too_long"
    if _REFUSAL.search(answer) or _REFUSAL.search(question):
        return "refusal"
    if fcfg.language == "en" and not (is_english(question) and is_english(answer)):
        return "language"
    if points_outside(question):
        return "needs_context"
    answer_words = content_words(answer)
    source = chunk_words if chunk_words is not None else content_words(chunk_text)
    if answer_words and len(answer_words & source) / len(answer_words) < fcfg.min_grounding:
        return "not_grounded"
    question_words = content_words(question)
    negates = bool(NEGATION.search(answer)) and not NEGATION.search(question)  # "Is X Y?" "No. X is not Y."
    if answer_words and len(answer_words - question_words) == 0 and not negates:
        return "echo"
    return None


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a and b else 0.0


class Decontaminator:
    """Flags pairs that copy a golden item. Golden items only ever enter this check."""

    def __init__(self, golden: list[dict], threshold: float):
        self.threshold = threshold
        self.items = [
            (normalise_question(g["question"]), content_words(g["question"]), normalise_question(g["answer"]), content_words(g["answer"]))
            for g in golden
        ]

    def is_contaminated(self, question: str, answer: str) -> bool:
        q_norm, q_words = normalise_question(question), content_words(question)
        a_norm, a_words = normalise_question(answer), content_words(answer)
        for g_q, g_qw, g_a, g_aw in self.items:
            if q_norm == g_q or _jaccard(q_words, g_qw) >= self.threshold:
                return True  # the exam question itself, or a light paraphrase of it
            if (a_norm == g_a or _jaccard(a_words, g_aw) >= 0.8) and _jaccard(q_words, g_qw) >= self.threshold / 2:
                return True  # a copied question/answer pair, lightly reworded
        return False


class NearDuplicates:
    """MinHash-LSH over word uni- and bi-grams of question + answer."""

    def __init__(self, threshold: float, num_perm: int = 128):
        from datasketch import MinHash, MinHashLSH

        self._MinHash = MinHash
        self.num_perm = num_perm
        self.lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.count = 0

    def seen(self, question: str, answer: str) -> bool:
        """True if a near-duplicate was added before; otherwise remember this one."""
        tokens = words(question) + words(answer)
        shingles = set(tokens) | {f"{a} {b}" for a, b in zip(tokens, tokens[1:])}
        m = self._MinHash(num_perm=self.num_perm)
        m.update_batch([s.encode() for s in shingles])
        if self.lsh.query(m):
            return True
        self.lsh.insert(str(self.count), m)
        self.count += 1
        return False
