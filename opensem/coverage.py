"""Fact coverage: does the training data state the facts that a question set asks about?

A fine-tune learns from its pairs what they say. For each item of the golden set and of the dev
set this checks whether all of the item's key facts are stated

    taught        by one answer of the training pairs (processed/train.jsonl)
    in documents  by one sentence of the documents as the forge read them (processed/corpus.jsonl)

with the key facts matched exactly as the judge matches them; no model runs. The taught share is
the ceiling of what the pairs teach directly: a question whose facts no training answer states
can only be answered from what the base model knew or what the continued pre-training on the
documents taught. An item in the documents but not taught is a fact the teacher did not ask
about (or the forge filtered, or the 90/10 split held out).

Choose a teacher by the dev set's share; the golden set's is reported, so that it stays a test
nothing was chosen by. That is why `opensem golden coverage --list` names the dev set's items
and only counts the golden set's.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from opensem.io import read_jsonl
from opensem.workspace import Sem


@dataclass
class ItemCoverage:
    id: str
    question: str
    taught: float  # the largest share of the item's key facts that one training answer states
    in_documents: float  # the same over single sentences of the documents


def item_coverage(items, answers: list[str], sentences: list[str], lines: list[str] = ()) -> list[ItemCoverage]:
    """items: GoldenItem-like (id, question, key_facts). The documents come as their sentences, or
    as their lines (split into sentences here, only those lines where a key fact of the item
    matches at all: a sentence of any other line states none, and splitting every line of a large
    corpus is most of the time)."""
    from functools import lru_cache

    split = lru_cache(maxsize=None)(lambda line: tuple(_sentences_of(line)))
    rows = []
    for item in items:
        facts = [re.compile(f, re.I) for f in item.key_facts]

        def best(texts) -> float:
            return max((sum(1 for f in facts if f.search(t)) / len(facts) for t in texts), default=0.0)

        in_lines = [s for line in lines if any(f.search(line) for f in facts) for s in split(line)]
        rows.append(ItemCoverage(item.id, item.question, best(answers), max(best(sentences), best(in_lines))))
    return rows


def _sentences_of(line: str) -> list[str]:
    from opensem.text.reflow import split_sentences

    return [s for s in split_sentences(line) if s.strip()]


def summarise(rows: list[ItemCoverage]) -> dict:
    """Shares of items with every key fact stated; `missed`: in the documents, not taught."""
    n = len(rows)
    taught = sum(r.taught == 1 for r in rows)
    found = sum(r.in_documents == 1 for r in rows)
    missed = sum(r.in_documents == 1 and r.taught < 1 for r in rows)
    return {"items": n, "taught": taught, "in_documents": found, "missed": missed,
            "taught_share": round(taught / n, 3) if n else 0.0, "in_documents_share": round(found / n, 3) if n else 0.0}


def measure(sem: Sem, train_answers: list[str], corpus_rows: list[dict]) -> dict[str, list[ItemCoverage]]:
    """Coverage of each question set the SEM has (golden, dev), for the given training answers and
    documents. A set that is missing or fails to load is left out: coverage is a report, and
    baseline/evaluate/dev give the clear errors about a broken set."""
    from opensem.errors import OpenSEMError
    from opensem.golden import load_golden

    lines = [line for row in corpus_rows for line in row["text"].split("\n")]
    out = {}
    for name, path in (("golden_set", sem.golden_set), ("dev_set", sem.dev_set)):
        if not path.is_file():
            continue
        try:
            items = load_golden(path)
        except OpenSEMError:
            continue
        out[name] = item_coverage(items, train_answers, [], lines)
    return out


def from_processed(sem: Sem) -> dict[str, list[ItemCoverage]]:
    """Coverage of the forge output on disk (what `opensem golden coverage` reads)."""
    from opensem.errors import OpenSEMError

    train, corpus = sem.processed_dir / "train.jsonl", sem.processed_dir / "corpus.jsonl"
    for path in (train, corpus):
        if not path.is_file():
            raise OpenSEMError(f"no forge output at {path}: run `opensem forge --sem {sem.name}` first")
    return measure(sem, training_answers(train), read_jsonl(corpus))


def training_answers(train_jsonl) -> list[str]:
    """The answers of the forge's training pairs (each row's last message)."""
    return [row["messages"][-1]["content"] for row in read_jsonl(train_jsonl)]


def as_manifest(coverage: dict[str, list[ItemCoverage]]) -> dict:
    return {name: summarise(rows) for name, rows in coverage.items()}


def as_json(coverage: dict[str, list[ItemCoverage]]) -> dict:
    return {name: {"summary": summarise(rows), "items": [asdict(r) for r in rows]} for name, rows in coverage.items()}
