"""`opensem golden check` on planted golden sets: a key fact inside its own question and two items
sharing all their facts are refused; an unbounded `four` is warned about, and once bounded an
answer naming Balfour no longer passes; exemptions need a known item and a reason; the stages
that score a golden set refuse a failing one before any run."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.errors import OpenSEMError
from opensem.golden import GoldenItem
from opensem.golden_lint import check, short_tokens_unbounded
from opensem.judge.offline import key_fact_recall
from opensem.workspace import new_sem


def item(id, question, answer, facts):
    return GoldenItem(id=id, question=question, answer=answer, key_facts=facts)


GOOD = [
    item("a", "How long is the limit for a deed?", "Twelve years from the breach.", [r"\b(twelve|12) years\b", r"from the breach"]),
    item("b", "Which case is about a husband's allowance?", "Balfour v Balfour (1919).", [r"balfour v\.? balfour", r"\b1919\b"]),
]


def errors(report):
    return {i.id: i.errors for i in report.items if i.errors}


def test_a_clean_set_passes():
    report = check(GOOD, Path("golden_set.json"))
    assert report.ok and not errors(report) and report.n_warnings == 0
    assert "passes: 2 items, 0 with errors" in report.verdict()


def test_a_key_fact_inside_its_own_question_is_refused():
    bad = GOOD + [item("c", "Is an opinion a statement of fact?", "No, an opinion is not a fact.", [r"opinion", r"not a fact"])]
    report = check(bad, Path("g.json"))
    assert not report.ok and errors(report) == {"c": ["in-question: its question matches key fact 'opinion'"]}
    with pytest.raises(OpenSEMError) as exc:
        report.raise_on_errors("legal")
    message = str(exc.value)
    assert "c: in-question" in message and "golden.allow_overlap" in message and "\n" not in message


def test_two_items_sharing_all_facts_are_refused_both_ways():
    bad = [item("x", "How long do I have to sue in contract?", "Six years.", [r"\b(six|6)\b"]),
           item("y", "How many elements make a contract?", "Six elements.", [r"\b(six|6)\b"])]
    report = check(bad, Path("g.json"))
    assert set(errors(report)) == {"x", "y"}
    assert "the answer of y matches all its key facts" in errors(report)["x"][0]
    x = next(i for i in report.items if i.id == "x")
    assert x.full_matches == ["y"] and x.facts_matched_elsewhere == 1


def test_an_exemption_needs_a_reason_and_a_real_item():
    bad = [item("x", "How long do I have to sue in contract?", "Six years.", [r"\b(six|6)\b"]),
           item("y", "How many elements make a contract?", "Six elements.", [r"\b(six|6)\b"])]
    exempt = check(bad, Path("g.json"), {"x": "both answers are a bare count", "y": "same"})
    assert exempt.ok and [i.allowed for i in exempt.items] == ["both answers are a bare count", "same"]
    assert not check(bad, Path("g.json"), {"x": "ok", "y": "  "}).ok
    stale = check(GOOD, Path("g.json"), {"gone": "was removed"})
    assert not stale.ok and "names item 'gone', which is not in the golden set" in stale.config_errors[0]


def test_an_unbounded_four_is_warned_and_the_bounded_one_rejects_balfour():
    loose = item("l", "How long is the UCC limitation period?", "Four years from the breach.", ["four|4"])
    report = check([loose, GOOD[1]], Path("g.json"))
    warnings = next(i.warnings for i in report.items if i.id == "l")
    assert any(w.startswith("short-token: 'four|4' matches 'four' inside longer words") for w in warnings)
    assert any(w.startswith("single-fact") for w in warnings)
    # the loose fact passes an answer about another case entirely; the bounded one does not
    assert key_fact_recall("Balfour v Balfour (1919).", ["four|4"]) == 1.0
    assert key_fact_recall("Balfour v Balfour (1919).", [r"\b(four|4)\b"]) == 0.0
    assert short_tokens_unbounded(r"\b(four|4)\b") == []


@pytest.mark.parametrize("fact, loose", [
    ("18|eighteen", ["18", "eighteen"]),  # "1854", "eighteenth"
    ("less|minus", ["less"]),         # "unless"
    ("land|unique", ["land"]),        # "England"
    (r"\bland\b|unique", []),
    ("no[ .,]", ["no"]),              # "piano."
    ("invitation to treat", []),      # short words inside a phrase are bound by it
    ("frustrat", []),                 # a deliberate stem
])
def test_short_tokens_are_found_by_probing(fact, loose):
    assert short_tokens_unbounded(fact) == loose


def test_a_bare_yes_or_no_is_warned():
    polar = item("p", "Is a contract frustrated by a rise in cost?", "No, it is not.", [r"\b(no|not)\b"])
    report = check([polar, *GOOD], Path("g.json"))
    assert any(w.startswith("polarity-only") for w in report.items[0].warnings)
    paired = item("p", "Is a contract frustrated by a rise in cost?", "No, it is not frustrated by cost.", [r"\b(no|not)\b", r"not frustrat"])
    assert not any(w.startswith("polarity-only") for w in check([paired, *GOOD], Path("g.json")).items[0].warnings)
    # one of two facts a bare "No." states: half credit for a guess, warned on its own
    half = check([paired, *GOOD], Path("g.json")).items[0].warnings
    assert any(w.startswith("bare-polarity") and "(no|not)" in w for w in half)
    bound = item("p", "Is a contract frustrated by a rise in cost?", "No, it is not frustrated by cost.", [r"not frustrat"])
    assert not any(w.startswith(("bare-polarity", "polarity-only")) for w in check([bound, *GOOD], Path("g.json")).items[0].warnings)


def test_own_answer_must_state_its_facts():
    broken = item("o", "How long for a simple contract?", "Six years.", [r"\b(six|6) years\b", r"from the breach"])
    report = check([broken, *GOOD], Path("g.json"))
    assert errors(report) == {"o": ["own-answer: its golden answer does not match key fact 'from the breach'"]}


# -- the command, and the stages that run it -----------------------------------------------------------
def test_the_sample_golden_set_passes(project):
    result = CliRunner().invoke(app, ["golden", "check", "--sem", "legal"])
    assert result.exit_code == 0, result.output
    assert "passes: 46 items, 0 with errors" in result.output


@pytest.fixture
def loose(project):
    sem = new_sem("loose")
    sem.golden_set.write_text(json.dumps({"items": [
        {"id": "x", "question": "How long do I have to sue in contract?", "answer": "Six years.", "key_facts": ["six|6"]},
        {"id": "y", "question": "How many elements make a contract?", "answer": "Six elements.", "key_facts": ["six|6"]},
    ]}))
    return sem


def test_check_exits_2_naming_the_items(loose):
    result = CliRunner().invoke(app, ["golden", "check", "--sem", "loose"])
    assert result.exit_code == 2
    assert "FAILS: 2 items, 2 with errors" in result.output and "cross-answer" in result.output


@pytest.mark.parametrize("command", [["baseline"], ["evaluate", "--model", "models:/x@champion"], ["pipeline"]])
def test_stages_refuse_a_failing_golden_set_before_any_run(loose, command):
    result = CliRunner().invoke(app, [*command, "--sem", "loose"])
    assert result.exit_code == 2, result.output
    assert "2 golden items cannot tell right answers from wrong ones" in result.output
    assert "Traceback" not in result.output
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert not (loose.processed_dir / "train.jsonl").exists()  # pipeline: forge never ran


def test_an_exemption_in_the_sem_config_lets_it_run(loose):
    loose.config_file.write_text("golden:\n  allow_overlap:\n    x: a count\n    y: a count\n")
    result = CliRunner().invoke(app, ["golden", "check", "--sem", "loose"])
    assert result.exit_code == 0, result.output
    assert "overlap allowed: a count" in result.output
