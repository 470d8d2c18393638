"""The sample SEM ships enough real material: documents, and a golden set whose key facts
are stated by its own answers and not given away by its questions."""

from __future__ import annotations

import json
import re

from conftest import REPO


def golden():
    return json.loads((REPO / "evals/legal/golden_set.json").read_text())["items"]


def test_documents():
    docs = sorted((REPO / "data/legal/raw").iterdir())
    assert 10 <= len(docs) <= 20
    assert {d.suffix for d in docs} == {".md", ".txt"}
    assert all(len(d.read_text().split()) > 150 for d in docs)


def test_golden_set_shape():
    items = golden()
    assert len(items) >= 40
    assert len({i["id"] for i in items}) == len(items)
    docs = {d.name for d in (REPO / "data/legal/raw").iterdir()}
    for item in items:
        assert item["question"].endswith("?") and item["answer"] and 1 <= len(item["key_facts"]) <= 3
        assert item["source"] in docs


def test_key_facts_are_in_the_answer_and_not_all_in_the_question():
    for item in golden():
        facts = [re.compile(k, re.I) for k in item["key_facts"]]
        assert all(f.search(item["answer"]) for f in facts), item["id"]
        assert not all(f.search(item["question"]) for f in facts), item["id"]


def test_questions_are_not_copied_sentences():
    text = " ".join(d.read_text().lower() for d in (REPO / "data/legal/raw").iterdir())
    for item in golden():
        assert item["question"].lower().rstrip("?") not in text, item["id"]
