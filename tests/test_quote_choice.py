"""bench/quote_choice.py: an answer is sorted by the sentence of its excerpts it quotes first,
and the tally sets each kind's accuracy beside copy-top1's on the same questions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.quote_choice import answer_files, kind, tally
from opensem.golden import GoldenItem
from opensem.retrieval import Retriever

REPO = Path(__file__).resolve().parents[1]
RANKED = ["The offer must be definite.", "A contract needs an offer and an acceptance.", "Courts read contracts strictly."]


@pytest.mark.parametrize("answer, expected", [
    ("Yes. The offer must be definite. A vague one is no offer.", "top1"),
    ("No, the offer must be definite, and it is not.", "top1"),
    ("A contract needs an offer and an acceptance.", "other"),
    ("Bananas are yellow. The offer must be definite.", "none"),  # only the first sentence counts
    ("The offer must be good.", "none"),  # most of a sentence's words, not some of them
    ("", "none"),
])
def test_an_answer_is_sorted_by_the_sentence_it_quotes_first(answer, expected):
    assert kind(answer, RANKED) == expected


PASSAGES = [
    "Quimbles\nA Quimble has seven legs and walks sideways. Quimbles sleep in winter.",
    "Frobnits\nFrobnits live in Oslo, where the winters are long. A Frobnit weighs two kilograms.",
]


def test_the_tally_sets_each_kind_beside_copy_top1_on_the_same_questions():
    retriever = Retriever(PASSAGES, top_k=2)
    legs = GoldenItem(id="legs", question="How many legs does a Quimble have?", answer="Seven.", key_facts=["seven legs"])
    sleep = GoldenItem(id="sleep", question="When do Quimbles sleep?", answer="In winter.", key_facts=["winter"])
    top1 = retriever.top_sentences(legs.question, 1)[0]
    assert "seven legs" in top1  # the planted retriever ranks the answering sentence first
    rows = [  # the tuned model quotes the top sentence once and another sentence once; the base model quotes nothing
        {"id": "legs", "before": "I do not know.", "before_recall": 0.0, "after": f"Yes. {top1}", "after_recall": 1.0},
        {"id": "sleep", "before": "Perhaps in summer.", "before_recall": 0.0, "after": "Frobnits live in Oslo, where the winters are long.", "after_recall": 1.0},
    ]
    base, tuned = tally(retriever, [legs, sleep], rows)
    assert (base["model"], tuned["model"]) == ("base", "tuned")
    assert base["none"]["share"] == 1.0 and base["accuracy"] == 0.0
    assert tuned["top1"]["share"] == tuned["other"]["share"] == 0.5 and tuned["none"]["share"] == 0.0
    assert tuned["top1"]["copy_top1"] == 1.0  # copy-top1 states "seven legs" too
    assert retriever.top_sentences(sleep.question, 1) == ["Quimbles sleep in winter."]
    assert tuned["other"]["copy_top1"] == 1.0  # the quoted sentence was not the one copy-top1 answers with
    assert tuned["best_sentence"] == 1.0  # both questions have a sentence that states their key fact


def test_answer_files_are_the_sems_own_seeds_only(tmp_path):
    for name in ("debian-answers.jsonl", "debian-policy-answers.jsonl", "debian-policy-seed43-answers.jsonl",
                 "debian-policy-report.md", "debian-policy-seed43-dev.json"):
        (tmp_path / name).write_text("", encoding="utf-8")
    assert [p.name for p in answer_files(tmp_path, "debian-policy")] == ["debian-policy-answers.jsonl", "debian-policy-seed43-answers.jsonl"]
    assert [p.name for p in answer_files(tmp_path, "debian")] == ["debian-answers.jsonl"]


def test_no_answers_to_read_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run([sys.executable, "-m", "bench", "quote_choice", "--answers", str(tmp_path), "legal"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2
    assert "legal: no answers in" in run.stderr and "bench outcome legal" in run.stderr
    assert "Traceback" not in run.stderr and not run.stdout


@pytest.mark.parametrize("override, named", [("retrieval.top_k=none", "top_k"), ("retrieval.enabled=false", "closed book")])
def test_a_bad_override_is_one_line_and_exit_2(tmp_path, override, named):
    (tmp_path / "legal-answers.jsonl").write_text("", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "bench", "quote_choice", "--answers", str(tmp_path), "legal",
                          "--set", override], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.startswith("error: ") and named in run.stderr and len(run.stderr.strip().splitlines()) == 1
