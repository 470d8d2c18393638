"""The sample SEMs ship enough real material: documents, and golden sets that pass
`opensem golden check` (key facts stated by their own answers, not given away by their
questions, not all stated by another item's answer). legal was written for this project;
debian-policy and sqlite are slices of documentation that Debian ships, written by others."""

from __future__ import annotations

import json

import pytest

from conftest import REPO
from opensem.golden import load_golden
from opensem.golden_lint import check

SEMS = ["legal", "debian-policy", "sqlite"]


def golden(sem):
    return json.loads((REPO / f"evals/{sem}/golden_set.json").read_text())["items"]


def test_legal_documents():
    docs = sorted((REPO / "data/legal/raw").iterdir())
    assert 10 <= len(docs) <= 20
    assert {d.suffix for d in docs} == {".md", ".txt"}
    assert all(len(d.read_text().split()) > 150 for d in docs)


@pytest.mark.parametrize("sem, suffix", [("debian-policy", ".txt"), ("sqlite", ".html")])
def test_real_corpora_are_slices_of_50_to_150_kb_with_their_source(sem, suffix):
    docs = sorted((REPO / f"data/{sem}/raw").iterdir())
    assert {d.suffix for d in docs} == {suffix}
    assert 50_000 <= sum(d.stat().st_size for d in docs) <= 150_000
    assert "License" in (REPO / f"data/{sem}/SOURCE.md").read_text() or "public domain" in (REPO / f"data/{sem}/SOURCE.md").read_text()


@pytest.mark.parametrize("sem", SEMS)
def test_golden_set_shape(sem):
    items = golden(sem)
    assert len(items) >= 40
    assert len({i["id"] for i in items}) == len(items)
    docs = {d.name for d in (REPO / f"data/{sem}/raw").iterdir()}
    for item in items:
        assert item["question"].endswith("?") and item["answer"] and 1 <= len(item["key_facts"]) <= 3
        assert item["source"] in docs


@pytest.mark.parametrize("sem", SEMS)
def test_golden_set_passes_the_check(sem):
    path = REPO / f"evals/{sem}/golden_set.json"
    report = check(load_golden(path), path)
    assert report.ok, report.verdict()


def test_questions_are_not_copied_sentences():
    text = " ".join(d.read_text().lower() for d in (REPO / "data/legal/raw").iterdir())
    for item in golden("legal"):
        assert item["question"].lower().rstrip("?") not in text, item["id"]
