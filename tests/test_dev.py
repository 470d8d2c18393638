"""The dev set (evals/<sem>/dev_set.json): checked like the golden set, kept out of training by the
forge, and `opensem dev` compares the base model with an adapter on it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.workspace import new_sem, open_sem

GOLDEN = {"items": [
    {"id": "g1", "question": "What colour is a Zorblat?", "answer": "A Zorblat is teal.", "key_facts": ["teal"]},
    {"id": "g2", "question": "Where do Frobnits live?", "answer": "Frobnits live in Oslo.", "key_facts": ["oslo"]},
]}
DEV = {"items": [
    {"id": "d1", "question": "What do Zorblats eat?", "answer": "Zorblats eat copper.", "key_facts": ["copper"]},
    {"id": "d2", "question": "How old can a Frobnit get?", "answer": "A Frobnit can live ninety years.", "key_facts": [r"\b(ninety|90)\b"]},
]}


@pytest.fixture
def zoo(project):
    sem = new_sem("zoo")
    sem.golden_set.write_text(json.dumps(GOLDEN))
    return sem


def _dev(*args: str):
    return CliRunner().invoke(app, ["dev", "--sem", "zoo", *args])


def test_dev_refuses_a_missing_failing_or_copied_dev_set(zoo):
    missing = _dev()
    assert missing.exit_code == 2 and "no dev set at" in missing.output and "dev_set.json" in missing.output

    loose = {"items": [DEV["items"][0], {**DEV["items"][1], "answer": "Very old."}]}  # its answer misses its own fact
    zoo.dev_set.write_text(json.dumps(loose))
    failing = _dev()
    assert failing.exit_code == 2 and "item d2: own-answer" in " ".join(failing.output.split())

    copied = {"items": [DEV["items"][0], {**GOLDEN["items"][1], "id": "d9"}]}
    zoo.dev_set.write_text(json.dumps(copied))
    repeated = _dev()
    assert repeated.exit_code == 2 and "d9 repeat golden questions" in " ".join(repeated.output.split())

    zoo.dev_set.write_text(json.dumps(DEV))
    no_adapter = _dev()  # a good dev set, but nothing trained yet
    assert no_adapter.exit_code == 2 and "no trained adapter" in no_adapter.output


def test_the_forge_keeps_dev_questions_out_of_training(zoo):
    from opensem.forge.stage import _golden_for_decontamination
    from opensem.forge.quality import Decontaminator

    zoo.dev_set.write_text(json.dumps(DEV))
    held_apart = _golden_for_decontamination(open_sem("zoo"))
    assert {i["id"] for i in held_apart} == {"g1", "g2", "d1", "d2"}
    decon = Decontaminator(held_apart, 0.6)
    assert decon.is_contaminated("What do Zorblats eat?", "Copper.")  # a dev question
    assert not decon.is_contaminated("Which metal is mined in Oslo?", "Copper is.")

    zoo.dev_set.unlink()
    assert {i["id"] for i in _golden_for_decontamination(open_sem("zoo"))} == {"g1", "g2"}


def test_editing_the_dev_set_forges_again(zoo, monkeypatch):
    """The forge's output depends on which questions it held apart, so the pipeline's forge key
    includes the dev set."""
    from opensem import forge, pipeline

    calls = []
    monkeypatch.setattr(forge, "run", lambda sem, cfg: calls.append(sem.name) or (_ for _ in ()).throw(SystemExit))
    (zoo.raw_dir / "z.md").write_text("# Zoo\n\nZorblats are teal.\n")
    from opensem.config import load_config

    cfg = load_config(zoo.root, "zoo", [])
    keys = []
    monkeypatch.setattr(pipeline, "_key", lambda cfg, sections, *inputs: keys.append(inputs) or "k")
    for dev in (None, DEV, {"items": DEV["items"][:1]}):
        if dev is None:
            zoo.dev_set.unlink(missing_ok=True)
        else:
            zoo.dev_set.write_text(json.dumps(dev))
        with pytest.raises(SystemExit):
            pipeline.run(zoo, cfg)
    assert len(calls) == 3
    assert len({inputs for inputs in keys}) == 3  # no dev set, two different dev sets: three forge keys


@pytest.mark.slow
def test_dev_compares_base_and_adapter_on_the_dev_questions(zoo, tmp_path):
    zoo.dev_set.write_text(json.dumps(DEV))
    zoo.processed_dir.mkdir(parents=True)
    facts = [(i["question"], i["answer"]) for i in DEV["items"]] * 2  # trained on the dev facts: the gain must show
    rows = "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n" for q, a in facts)
    (zoo.processed_dir / "train.jsonl").write_text(rows)
    fast = ["model.system_prompt=Answer briefly.", "generation.max_new_tokens=16"]
    train = CliRunner().invoke(app, ["train", "--sem", "zoo", *sum((["--set", s] for s in fast + [
        "training.max_steps=16", "training.cpt_epochs=0", "training.batch_size=2", "training.learning_rate=2e-3",
        "training.lr_scheduler=constant", "training.warmup_ratio=0", "training.run_name=t1"]), [])])
    assert train.exit_code == 0, train.output

    out = tmp_path / "dev.json"
    done = _dev("--out", str(out), *sum((["--set", s] for s in fast), []))
    assert done.exit_code == 0, done.output
    assert "dev key-fact accuracy" in done.output and "points, 95% CI [" in done.output
    result = json.loads(out.read_text())
    assert result["adapter"] == "t1" and result["n_items"] == 2
    assert [i["id"] for i in result["items"]] == ["d1", "d2"]
    assert result["tuned_recall"] > result["base_recall"]
    assert result["gain"] == pytest.approx(result["tuned_recall"] - result["base_recall"])
    assert all(i["base"] != i["tuned"] for i in result["items"])  # two models answered
    # the answers' shape, per model, as evaluate measures it on the golden set
    from opensem.judge.evaluate import answer_format

    for model, key in (("base", "base"), ("tuned", "tuned")):
        assert result["format"][model] == answer_format([i[key] for i in result["items"]])
    assert "answers of at most two sentences: base" in done.output
    # asked its own training questions, the adapter gives its trained answers more closely than the base model
    fit = result["fit"]
    assert fit["n"] == 4 and fit["tuned_f1"] > fit["base_f1"] and fit["tuned_reproduced"] >= fit["base_reproduced"]
    assert "training answers reproduced" in " ".join(done.output.split())
    # both dev answers are training answers here: every item is taught, the split says so
    assert result["by_coverage"]["taught"]["n"] == 2 and result["by_coverage"]["untaught"]["n"] == 0
    assert all(i["taught"] for i in result["items"]) and "taught items 2:" in done.output


def test_fit_compares_answers_with_the_trained_ones(zoo):
    from opensem.judge.dev import fit, training_sample

    assert training_sample(open_sem("zoo"), 5) == []  # nothing forged yet
    zoo.processed_dir.mkdir(parents=True)
    rows = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": f"Q{k}?"},
                          {"role": "assistant", "content": f"Answer number {k} is here."}]} for k in range(10)]
    (zoo.processed_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sample = training_sample(open_sem("zoo"), 4)
    assert len(sample) == 4 and sample == training_sample(open_sem("zoo"), 4)  # the same pairs every call
    assert all(q.startswith("Q") and a.startswith("Answer number") for q, a in sample)
    result = fit(sample, ["I do not know."] * 4, [a for _, a in sample[:3]] + ["Answer number x"])
    assert result["tuned_reproduced"] == 3 and result["base_reproduced"] == 0 and result["base_f1"] == 0.0
    assert 0.75 < result["tuned_f1"] < 1.0


def test_dev_accuracy_splits_by_whether_a_training_answer_teaches_the_facts(zoo):
    from opensem.judge.dev import by_coverage, load_dev_set, taught_ids

    zoo.dev_set.write_text(json.dumps(DEV))
    items = load_dev_set(open_sem("zoo"))
    assert taught_ids(open_sem("zoo"), items) is None  # nothing forged: no split
    zoo.processed_dir.mkdir(parents=True)
    rows = [{"messages": [{"role": "user", "content": "What do they eat?"}, {"role": "assistant", "content": "Zorblats eat copper wire."}]},
            {"messages": [{"role": "user", "content": "How old?"}, {"role": "assistant", "content": "Frobnits get old."}]}]
    (zoo.processed_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    taught = taught_ids(open_sem("zoo"), items)
    assert taught == {"d1"}  # "copper" is taught; no answer says ninety
    split = by_coverage(items, taught, base=[0.0, 1.0], tuned=[1.0, 0.0])
    assert split["taught"] == {"n": 1, "base_recall": 0.0, "tuned_recall": 1.0}
    assert split["untaught"] == {"n": 1, "base_recall": 1.0, "tuned_recall": 0.0}
    assert by_coverage(items, set(), [0.5, 0.5], [1.0, 1.0])["taught"] == {"n": 0, "base_recall": None, "tuned_recall": None}
