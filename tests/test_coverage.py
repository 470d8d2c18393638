"""Fact coverage (opensem/coverage.py): which golden and dev items' key facts the training answers
and the documents state, in the forge's manifest and from `opensem golden coverage`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.coverage import item_coverage, summarise
from opensem.golden import GoldenItem
from opensem.workspace import new_sem

GOLDEN = {"items": [
    {"id": "g1", "question": "What colour is a Zorblat?", "answer": "A Zorblat is teal.", "key_facts": ["teal"]},
    {"id": "g2", "question": "Where do Frobnits live?", "answer": "Frobnits live in Oslo, near the fjord.", "key_facts": ["oslo", "fjord"]},
]}
DEV = {"items": [
    {"id": "d1", "question": "What do Zorblats eat?", "answer": "Zorblats eat copper.", "key_facts": ["copper"]},
    {"id": "d2", "question": "How old can a Frobnit get?", "answer": "A Frobnit can live ninety years.", "key_facts": [r"\b(ninety|90)\b"]},
]}
DOCUMENT = "A Zorblat is teal. Frobnits live in Oslo. The fjord is cold. Zorblats eat copper and live ninety years."


def _items(data):
    return [GoldenItem.model_validate(i) for i in data["items"]]


def test_an_item_counts_only_when_one_text_states_all_its_facts():
    answers = ["A Zorblat is teal.", "Frobnits live in Oslo."]  # g2's fjord is in no answer
    sentences = ["A Zorblat is teal.", "Frobnits live in Oslo.", "The fjord is cold."]  # ... nor in one sentence
    rows = item_coverage(_items(GOLDEN), answers, sentences)
    assert [(r.id, r.taught, r.in_documents) for r in rows] == [("g1", 1.0, 1.0), ("g2", 0.5, 0.5)]
    rows = item_coverage(_items(GOLDEN), answers, ["Frobnits live in Oslo by the FJORD."])  # case-insensitive, as the judge
    assert rows[1].in_documents == 1.0 and rows[0].in_documents == 0.0
    assert summarise(rows) == {"items": 2, "taught": 1, "in_documents": 1, "missed": 1, "taught_share": 0.5, "in_documents_share": 0.5}
    assert summarise(item_coverage(_items(GOLDEN), [], []))["taught"] == 0  # no training answer at all


@pytest.fixture
def zoo(project):
    sem = new_sem("zoo")
    sem.golden_set.write_text(json.dumps(GOLDEN))
    sem.dev_set.write_text(json.dumps(DEV))
    return sem


def _forged(sem, answers: list[str]) -> None:
    sem.processed_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": a}]} for a in answers]
    (sem.processed_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (sem.processed_dir / "corpus.jsonl").write_text(json.dumps({"document": "zoo.md", "text": DOCUMENT}) + "\n")


def test_golden_coverage_command_counts_lists_dev_items_and_writes_json(zoo, tmp_path):
    not_forged = CliRunner().invoke(app, ["golden", "coverage", "--sem", "zoo"])
    assert not_forged.exit_code == 2 and "opensem forge --sem zoo" in not_forged.output

    _forged(zoo, ["A Zorblat is teal.", "Zorblats eat copper."])
    out = tmp_path / "coverage.json"
    result = CliRunner().invoke(app, ["golden", "coverage", "--sem", "zoo", "--list", "--out", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert written["golden_set"]["summary"]["taught"] == 1 and written["golden_set"]["summary"]["in_documents"] == 1
    assert written["dev_set"]["summary"] == {"items": 2, "taught": 1, "in_documents": 2, "missed": 1,
                                              "taught_share": 0.5, "in_documents_share": 1.0}
    assert "d2: How old can a Frobnit get?" in result.output  # in the documents, not taught: named
    assert "d1:" not in result.output and "g2:" not in result.output  # taught; and golden items are only counted


def test_the_forge_manifest_reports_coverage(project):
    from opensem.workspace import open_sem

    result = CliRunner().invoke(app, ["forge", "--sem", "legal"])
    assert result.exit_code == 0, result.output
    sem = open_sem("legal")
    manifest = json.loads((sem.processed_dir / "manifest.json").read_text())
    golden = manifest["coverage"]["golden_set"]
    assert manifest["coverage"]["dev_set"]["items"] == len(json.loads(sem.dev_set.read_text())["items"])  # legal's dev set too
    again = CliRunner().invoke(app, ["golden", "coverage", "--sem", "legal", "--out", str(project / "c.json")])
    assert again.exit_code == 0, again.output
    assert json.loads((project / "c.json").read_text())["golden_set"]["summary"] == golden  # the command reads the same files
    assert 0 < golden["taught"] < golden["items"] and 0 < golden["in_documents"] <= golden["items"]
    import mlflow

    run = mlflow.search_runs(experiment_names=["opensem-legal"], output_format="list")[0]
    assert run.data.metrics["golden_set_taught_share"] == golden["taught_share"]
