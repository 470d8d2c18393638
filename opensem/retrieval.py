"""Open-book answering: the passages of a SEM's documents that best match a question.

With `retrieval.enabled`, every model OpenSEM compares (the baseline, the tuned adapter, the
served model) and every training pair the forge writes get the same prompt: the question, and in
the user turn the `top_k` passages of the SEM's documents that share the most words with it.
A 135M model does not hold 100 KB of facts in its weights (README, "Real corpora"); it can learn
to find the sentence in front of it that answers and to say it. The baseline reads the same
passages, so the gain the gate judges is what the fine-tune adds, not what retrieval adds.

Ranking is TF-IDF cosine similarity (scikit-learn): a few hundred passages need no embedding
model or vector store, and it is deterministic, so every model reads exactly the same passages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from opensem.errors import OpenSEMError

# the user turn: HEADER, the passages, then QUESTION and the question. In the user turn, not the
# system message: the base model answered 30% of debian-policy's dev key facts so against 18%
# (one run each, the dev set, before any training; the stronger baseline is the one to beat)
HEADER = "Answer from these excerpts of the documents."
QUESTION = "Question: "


class Retriever:
    def __init__(self, passages: list[str], top_k: int):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not passages:
            raise OpenSEMError("retrieval has no passages to search: the SEM's raw folder holds no readable documents")
        self.passages, self.top_k = passages, top_k
        # sublinear tf: a word repeated in one long passage should not outrank a rarer exact match;
        # bigrams let "primary key" or "build target" count as a phrase
        self._vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", ngram_range=(1, 2))
        self._matrix = self._vectorizer.fit_transform(passages)

    def search(self, question: str) -> list[str]:
        """The top_k passages, best first (ties: the earlier passage)."""
        scores = (self._matrix @ self._vectorizer.transform([question]).T).toarray().ravel()
        best = sorted(range(len(scores)), key=lambda j: (-scores[j], j))[:self.top_k]
        return [self.passages[j] for j in best]

    def context(self, question: str) -> str:
        return "\n\n".join(self.search(question))

    def save(self, path: Path) -> None:
        from opensem.io import atomic_write_json

        atomic_write_json(path, {"top_k": self.top_k, "passages": self.passages})

    @classmethod
    def load(cls, path: Path) -> Retriever:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["passages"], int(data["top_k"]))


def found(answer: str, context: str, share: float = 0.8) -> bool:
    """Does the context hold the answer: at least `share` of its content words?"""
    from opensem.forge.quality import content_words

    wanted = content_words(answer)
    return bool(wanted) and len(wanted & content_words(context)) >= share * len(wanted)


def passages(raw_dir: Path, count_tokens: Callable[[str], int], passage_tokens: int) -> list[str]:
    """The documents cut into passages of at most passage_tokens, each led by its heading path."""
    from opensem.forge.chunk import chunk_document
    from opensem.forge.ingest import ingest

    docs, _ = ingest(raw_dir)
    return [f"{c.heading}\n{c.text}" if c.heading else c.text
            for doc in docs for c in chunk_document(doc, count_tokens, passage_tokens, 0)]


def for_sem(sem, cfg, tokenizer) -> Retriever | None:
    """The SEM's retriever when retrieval is on (passages measured in the base model's tokens)."""
    r = cfg.retrieval
    if not r.enabled:
        return None
    if not sem.raw_dir.is_dir():
        raise OpenSEMError(f"retrieval.enabled needs the SEM's documents in {sem.raw_dir}; add them, "
                           "or --set retrieval.enabled=false")
    from opensem.forge.chunk import token_counter

    return Retriever(passages(sem.raw_dir, token_counter(tokenizer), r.passage_tokens), r.top_k)
