"""The judge's validity controls: what the shuffled and term-soup answers are, when a judge is
called unreliable, and that the offline judge passes its controls on the sample golden set."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from opensem.text.words import STOPWORDS
from opensem.golden import GoldenItem, load_golden
from opensem.judge.controls import Section, control_answers, read_sections, shuffled, source_section, term_soup, unreliable

from conftest import REPO

ITEMS = [GoldenItem(id=f"q{k}", question=f"Question {k}?", answer=f"Answer number {k}.", key_facts=[f"number {k}"]) for k in range(7)]


def test_shuffled_gives_every_item_another_items_answer_the_same_way_each_time():
    answers = shuffled(ITEMS)
    assert answers == shuffled(ITEMS)
    assert sorted(answers) == sorted(i.answer for i in ITEMS)  # a permutation of the golden answers
    assert all(a != i.answer for i, a in zip(ITEMS, answers))  # in which nobody keeps their own
    assert shuffled(ITEMS[:1]) is None


def test_term_soup_is_the_source_sections_content_words_within_the_budget(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "doc.md").write_text(
        "# Offers\n\nAn offer is a definite promise to be bound on stated terms. A counter-offer rejects the offer.\n\n"
        "# Limitation\n\nA claim for breach must be brought within six years of the breach, or twelve years for a deed.\n")
    sections = read_sections(raw)
    assert [s.heading for s in sections] == ["Offers", "Limitation"]
    item = GoldenItem(id="lim", question="How long do I have to sue?", answer="Six years from the breach.",
                      key_facts=[r"\b(six|6) years\b", "from the breach"], source="doc.md")
    section = source_section(item, sections)
    assert section.heading == "Limitation"
    soup = term_soup(item, section, budget_words=6)
    words = soup.split()
    assert set(words) == {"claim", "breach", "brought", "within", "six", "years"} and len(words) == 6  # the first six, once each
    assert not STOPWORDS & set(words)
    assert soup == term_soup(item, section, budget_words=6)  # seeded
    assert len(term_soup(item, section, budget_words=50).split()) == 8  # all there is
    assert section.source == "doc.md" and isinstance(section, Section)


def test_no_documents_no_soup(tmp_path):
    answers = control_answers(ITEMS, tmp_path / "missing", 96)
    assert answers["soup"] is None and answers["echo"] == [i.question for i in ITEMS]
    assert answers["oracle"] == [i.answer for i in ITEMS]


@pytest.mark.parametrize("metrics, baseline_mean, reasons", [
    ({"shuffled_pass_rate": 0.0, "soup_pass_rate": 0.04, "echo_mean": 1.0}, 1.3, []),
    ({"shuffled_pass_rate": 0.10, "soup_pass_rate": 0.0, "echo_mean": 1.0}, 1.3, ["the shuffled control passes 10% of items"]),
    ({"shuffled_pass_rate": 0.0, "soup_pass_rate": 0.3, "echo_mean": 1.0}, 1.3, ["the soup control passes 30% of items"]),
    ({"shuffled_pass_rate": 0.0, "echo_mean": 1.6}, 1.5, ["the echo control (question restated) averages 1.60, as much as the base model's 1.50"]),
    ({"echo_mean": 1.0}, 1.0, []),  # an echo at the floor was not over-rewarded
    ({"soup_pass_rate": math.nan, "echo_mean": math.nan}, math.nan, []),  # a control that could not run says nothing
])
def test_when_a_judge_is_unreliable(metrics, baseline_mean, reasons):
    found = unreliable(metrics, baseline_mean)
    assert len(found) == len(reasons) and all(f.startswith(r) for f, r in zip(found, reasons))


def test_the_offline_judge_passes_its_controls_on_the_sample_golden_set():
    from opensem.judge.offline import OfflineJudge

    items = load_golden(REPO / "evals/legal/golden_set.json")
    answers = control_answers(items, REPO / "data/legal/raw", 96)
    judge = OfflineJudge()
    rates = {}
    for name, given in answers.items():
        verdicts = judge.judge(items, given)
        rates[name] = sum(v.score >= 4 for v in verdicts) / len(items)
        if name == "echo":
            assert all(v.score == 1 for v in verdicts)
    assert rates["oracle"] == 1.0
    assert rates["shuffled"] <= 0.05 and rates["soup"] <= 0.05, rates
    assert all(len(s.split()) <= 72 for s in answers["soup"])
    assert Path(REPO / "data/legal/raw").is_dir()
