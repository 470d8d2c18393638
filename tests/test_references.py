"""Open book's copy references (judge/references.py) and reading practice (forge.reading): the
sentences a copying reader would quote come from the passages the models read and from nothing
else, and the training rows put the answering excerpt among distractors at varying positions."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import load_config
from opensem.forge.stage import quote_answer
from opensem.generate import question_of
from opensem.golden import GoldenItem
from opensem.io import read_jsonl
from opensem.judge.references import copy_answers
from opensem.retrieval import HEADER, QUESTION, Retriever, found
from opensem.workspace import open_sem

PASSAGES = [
    "Zorblats\nA Zorblat is teal. Zorblats nest in the roofs of old barns. They eat moss.",
    "Quimbles\nA Quimble has seven legs and walks sideways. Quimbles sleep in winter.",
    "Frobnits\nFrobnits live in Oslo, where the winters are long. A Frobnit weighs two kilograms.",
]


def test_copy_references_quote_the_top_ranked_sentences_of_the_passages_the_models_read():
    r = Retriever(PASSAGES, top_k=2)
    question = "How many legs does a Quimble have?"
    read = r.context(question)
    refs = copy_answers(r, [question])
    assert refs["copy_top1"] == ["A Quimble has seven legs and walks sideways."]
    top2 = refs["copy_top2"][0]
    assert top2.startswith(refs["copy_top1"][0]) and top2 != refs["copy_top1"][0]
    second = top2.removeprefix(refs["copy_top1"][0]).strip()
    assert second in read and second.endswith(".")  # a whole sentence of what the models read
    assert "Quimbles\n" not in top2 and not top2.startswith("Quimbles")  # a heading is no sentence to quote


def test_copy_references_come_only_from_the_planted_retrievers_passages(monkeypatch):
    """A retriever planted to show one passage: the references quote it, even where another
    passage would have matched the question's words better."""
    r = Retriever(PASSAGES, top_k=1)
    monkeypatch.setattr(r, "search", lambda question: [PASSAGES[2]])
    refs = copy_answers(r, ["How many legs does a Quimble have?"])
    assert refs["copy_top1"][0] in PASSAGES[2] and "Quimble" not in refs["copy_top2"][0]
    assert set(refs["copy_top2"][0].replace(". ", ".|").split("|")) <= {
        "Frobnits live in Oslo, where the winters are long.", "A Frobnit weighs two kilograms."}


def test_copy_references_never_read_a_golden_answer(bundled_model_dir):
    """The references' answers depend on the questions and the retriever alone; the golden
    answers change only their scores."""
    from opensem.config import resolve
    from opensem.judge.evaluate import _score_references
    from opensem.judge.offline import OfflineJudge

    r = Retriever(PASSAGES, top_k=2)
    cfg = resolve([])
    right = [GoldenItem(id="q1", question="How many legs does a Quimble have?", answer="A Quimble has seven legs.",
                        key_facts=["seven legs"])]
    wrong = [right[0].model_copy(update={"answer": "A Quimble has nine legs.", "key_facts": ["nine legs"]})]
    judge = OfflineJudge()
    metrics_right, rows_right = _score_references(cfg, judge, right, r)
    metrics_wrong, rows_wrong = _score_references(cfg, judge, wrong, r)
    assert [row["answer"] for row in rows_right] == [row["answer"] for row in rows_wrong]
    assert metrics_right["copy_top1_recall"] == 1.0 and metrics_wrong["copy_top1_recall"] == 0.0
    assert {row["reference"] for row in rows_right} == {"copy_top1", "copy_top2"}
    assert _score_references(cfg, judge, right, None) == ({}, [])  # closed book: no references


def test_quoted_answers_are_the_sentence_that_states_the_answer_and_the_next():
    excerpt = PASSAGES[1] + "\nThey hum at dusk."
    assert quote_answer("Seven legs.", excerpt, 1) == "A Quimble has seven legs and walks sideways."
    assert quote_answer("Seven legs.", excerpt, 2) == "A Quimble has seven legs and walks sideways. Quimbles sleep in winter."
    assert quote_answer("Yes. Quimbles sleep in winter.", excerpt, 2) == "Yes. Quimbles sleep in winter. They hum at dusk."
    # join_opener: the opener joins the quote with a comma (two sentences, not three); a function
    # word loses its capital, a name keeps it
    assert quote_answer("Yes. Quimbles sleep in winter.", excerpt, 2, join_opener=True) == "Yes, Quimbles sleep in winter. They hum at dusk."
    assert quote_answer("No. A Quimble has seven legs.", excerpt, 2, join_opener=True) == \
        "No, a Quimble has seven legs and walks sideways. Quimbles sleep in winter."
    from opensem.text.reflow import split_sentences

    assert len(split_sentences(quote_answer("No. A Quimble has seven legs.", excerpt, 2, join_opener=True))) == 2
    assert len(split_sentences(quote_answer("No. A Quimble has seven legs.", excerpt, 2))) == 3
    # the heading line ("Quimbles") is no sentence to quote, though it holds all of this answer's words
    assert quote_answer("Quimbles.", excerpt, 1) == "A Quimble has seven legs and walks sideways."
    assert quote_answer("In winter, quimbles sleep.", excerpt, 1) == "Quimbles sleep in winter."
    # an answer no sentence holds stays the teacher's
    assert quote_answer("Zorblats eat moss in Oslo.", excerpt, 2) == "Zorblats eat moss in Oslo."


@pytest.mark.parametrize("quote", [0, 2])
def test_reading_practice_puts_the_answer_among_distractors_at_varying_positions(project, quote):
    on = ["retrieval.enabled=true", "retrieval.top_k=2", "retrieval.method=tfidf", "forge.reading.answer_in_excerpts=true",
          "forge.reading.shuffle=true", "forge.reading.copies=2", "forge.reading.distractor_pool=3",
          f"forge.reading.quote_sentences={quote}"]
    forged = CliRunner().invoke(app, ["forge", "--sem", "legal", *sum((["--set", o] for o in on), [])])
    assert forged.exit_code == 0, forged.output
    sem = open_sem("legal")
    manifest = json.loads((sem.processed_dir / "manifest.json").read_text())
    train, test = read_jsonl(sem.processed_dir / "train.jsonl"), read_jsonl(sem.processed_dir / "test.jsonl")
    assert len(train) == 2 * manifest["train"] == manifest["train_rows"] and len(test) == manifest["test"]

    positions, distractors, excerpts_per_row, quoted = [], 0, set(), 0
    for row in train:
        _, user, answer = (m["content"] for m in row["messages"])
        excerpts = user.removeprefix(f"{HEADER}\n\n").split(f"\n\n{QUESTION}")[0].split("\n\n")
        quoted += any(answer.removeprefix("Yes. ").removeprefix("No. ") in e for e in excerpts)
        holding = [k for k, e in enumerate(excerpts) if found(answer, e)]
        assert holding, f"no excerpt states the answer {answer!r}"  # answer_in_excerpts
        positions.append(holding[0])
        distractors += sum(not found(answer, e) for e in excerpts)
        excerpts_per_row.add(len(excerpts))
    assert set(positions) == {0, 1} and min(positions.count(0), positions.count(1)) > len(train) // 5
    assert distractors > len(train) // 2
    # quote_sentences=2: answers are the excerpt's own words (a few stay the teacher's: list counts);
    # the teacher's answers rephrase ("Offer: one party proposes definite terms.")
    assert quoted > 0.8 * len(train) if quote else quoted < 0.6 * len(train)
    # the two copies of a pair are drawn apart: not every pair's copies read the same excerpts
    half = len(train) // 2
    assert sum(a != b for a, b in zip(train[:half], train[half:])) > half // 4

    # held-out rows are asked as at evaluation: the retriever's own excerpts, best first
    from transformers import AutoTokenizer

    from opensem.models import resolve_base_model
    from opensem.retrieval import for_sem

    cfg = load_config(project, "legal", on)
    retriever = for_sem(sem, cfg, AutoTokenizer.from_pretrained(resolve_base_model(cfg.model.base, sem.base_models_dir)))
    for row in test:
        question = question_of(row["messages"][1]["content"])
        assert row["messages"][1]["content"] == f"{HEADER}\n\n{retriever.context(question)}\n\n{QUESTION}{question}"


@pytest.mark.parametrize("reading, rows", [({}, 1), ({"forge.reading.copies": 3}, 3)])
def test_reading_settings_do_not_change_how_models_are_asked(project, reading, rows):
    """forge.reading shapes training rows only: the prompt digest that ties baselines to
    evaluations, and the retrieval settings an adapter is checked against, stay the same."""
    from opensem.judge.evaluate import prompt_digest
    from opensem.retrieval import settings

    plain = load_config(project, "legal", ["retrieval.enabled=true"])
    shaped = load_config(project, "legal", ["retrieval.enabled=true", *(f"{k}={v}" for k, v in reading.items())])
    assert prompt_digest(shaped) == prompt_digest(plain) and settings(shaped) == settings(plain)
    assert shaped.forge.reading.copies == rows
