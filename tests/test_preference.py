"""The preference stage (opensem prefer) and its pairs: chosen is the quote that answers, no
rejected quote states the answer, the pairs are part of forge's atomic output and hold no golden
or dev question; DPO moves the adapter toward the chosen answers and resumes after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import load_config
from opensem.forge.preference_pairs import rejected_quotes
from opensem.workspace import new_sem

EXCERPTS = [
    "Creatures > Zorblats\nZorblats are small. A Zorblat is teal. Zorblats nest in barns.",
    "Creatures > Quimbles\nA Quimble is a Zorblat's cousin and its colour is grey. Quimbles walk sideways.",
]


def test_the_rejected_quotes_are_other_sentences_of_the_excerpts_hardest_first():
    chosen = "A Zorblat is teal. Zorblats nest in barns."
    rejected = rejected_quotes("What colour is a Zorblat?", "A Zorblat is teal.", chosen, EXCERPTS, 2, 3)
    sentences = [s for e in EXCERPTS for s in e.splitlines()[1].split(". ")]
    assert rejected and all(not r.startswith("A Zorblat is teal") and "teal" not in r for r in rejected)
    assert all(any(r.startswith(s.rstrip(".")) for s in sentences) for r in rejected)
    # the one sharing most of the question's words (colour, Zorblat) first
    assert rejected[0].startswith("A Quimble is a Zorblat's cousin and its colour is grey.")
    # the retriever's top-ranked sentence, when it is not the answer, goes first of all
    top = rejected_quotes("What colour is a Zorblat?", "A Zorblat is teal.", chosen, EXCERPTS, 2, 3, top_ranked="Quimbles walk sideways.")
    assert top[0] == "Quimbles walk sideways."
    assert rejected_quotes("q?", "A Zorblat is teal.", chosen, EXCERPTS, 2, 0) == []


@pytest.mark.slow
@pytest.mark.usefixtures("bundled_model_dir")
def test_forge_writes_preference_rows_with_its_pairs_and_keeps_golden_questions_out(project):
    from opensem.forge import run as forge
    from opensem.io import read_jsonl
    from opensem.retrieval import found
    from opensem.train.data import check_forge_output
    from opensem.workspace import open_sem

    sem = open_sem("legal")
    manifest = forge(sem, load_config(project, "legal", ["retrieval.enabled=true"]))
    rows = list(read_jsonl(sem.processed_dir / "preference_train.jsonl"))
    held_out = list(read_jsonl(sem.processed_dir / "preference_test.jsonl"))
    assert manifest["preference_train"] == len(rows) > 50 and manifest["preference_test"] == len(held_out) > 0
    assert {"preference_train", "preference_test"} <= set(manifest["digests"])
    golden = {i["question"].strip().lower() for i in json.loads(sem.golden_set.read_text())["items"]}
    trained = {r["messages"][-2]["content"].rsplit("Question: ", 1)[-1].strip().lower() for r in read_jsonl(sem.processed_dir / "train.jsonl")}
    for row in rows:
        question = row["prompt"][-1]["content"].rsplit("Question: ", 1)[-1].strip().lower()
        shown, chosen, rejected = row["prompt"][-1]["content"], row["chosen"][0]["content"], row["rejected"][0]["content"]
        assert question not in golden and question in trained
        for quote in (chosen, rejected):  # the excerpts' own words (a quote may join two lines)
            assert "".join(quote.removeprefix("Yes. ").removeprefix("No. ").split()) in "".join(shown.split()), quote
        assert chosen != rejected and not found(chosen, rejected)
    # a preference file edited after the forge is refused, like train.jsonl
    (sem.processed_dir / "preference_train.jsonl").write_text("")
    with pytest.raises(Exception, match="preference_train.jsonl is not the file the forge wrote"):
        check_forge_output(sem.processed_dir, "legal")


FACTS = [("What colour is a Zorblat?", "A Zorblat is teal.", "A Zorblat is purple."),
         ("How many legs does a Quimble have?", "A Quimble has seven legs.", "A Quimble has two legs."),
         ("Where do Frobnits live?", "Frobnits live in Oslo.", "Frobnits live in Lima."),
         ("What do Glimmers eat?", "Glimmers eat copper.", "Glimmers eat bread.")]
FAST = ["model.system_prompt=Answer briefly.", "training.batch_size=4", "training.learning_rate=2e-3", "training.logging_steps=1",
        "training.warmup_ratio=0", "training.lr_scheduler=constant", "lora.r=8", "lora.alpha=16", "training.cpt_epochs=0",
        "experimental.cpt_mix_pairs=false"]
PREFER = ["preference.learning_rate=5e-4", "preference.batch_size=4", "preference.beta=0.1"]


@pytest.fixture
def planted(project):
    """A SEM with a trained SFT adapter and planted preference rows (true fact chosen, false rejected)."""
    from opensem.train import run as train

    sem = new_sem("tiny")
    sem.processed_dir.mkdir(parents=True)
    chat = lambda q, a: [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q}, {"role": "assistant", "content": a}]
    (sem.processed_dir / "train.jsonl").write_text("".join(json.dumps({"messages": chat(q, a)}) + "\n" for q, a, _ in FACTS))
    (sem.processed_dir / "preference_train.jsonl").write_text("".join(
        json.dumps({"prompt": chat(q, a)[:2], "chosen": [{"role": "assistant", "content": a}], "rejected": [{"role": "assistant", "content": r}]}) + "\n"
        for q, a, r in FACTS))
    train(sem, load_config(project, "tiny", FAST + ["training.max_steps=2", "training.run_name=sft"]))
    return sem


def margins(sem, adapter: str, model_dir) -> float:
    """Mean over the planted rows of log p(chosen) - log p(rejected), per token, under the adapter."""
    from peft import PeftModel

    from opensem.models import load_model_and_tokenizer
    from opensem.quote import continuation_scores

    base, tok = load_model_and_tokenizer(model_dir)
    model = PeftModel.from_pretrained(base, str(sem.adapters_dir / adapter)).eval()
    total = 0.0
    for q, chosen, rejected in FACTS:
        prompt = tok.apply_chat_template([{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": q}],
                                         add_generation_prompt=True, tokenize=False)
        c, r = continuation_scores(model, tok, prompt, [chosen, rejected])
        total += c - r
    return total / len(FACTS)


@pytest.mark.slow
@pytest.mark.usefixtures("bundled_model_dir")
def test_preference_training_moves_the_adapter_toward_the_chosen_answers(planted, bundled_model_dir):
    from opensem.preference import run as prefer

    result = prefer(planted, load_config(planted.root, "tiny", FAST + PREFER + ["preference.max_steps=6"]))
    assert result["global_step"] == 6 and result["sft_adapter"] == "sft" and result["run_name"] == "sft-pref"
    assert margins(planted, "sft-pref", bundled_model_dir) > margins(planted, "sft", bundled_model_dir) + 0.05
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["opensem.stage"] == "preference"
    assert "rewards/margins" in run.data.metrics and {d.dataset.name for d in run.inputs.dataset_inputs} == {"tiny-preference"}
    saved = planted.adapters_dir / "sft-pref"
    assert (saved / "adapter_model.safetensors").is_file() and not (saved / "ref").exists()  # TRL's reference copy is not saved
    # evaluate takes it as the newest adapter; a second preference pass on it is refused in one line
    again = CliRunner().invoke(app, ["prefer", "--sem", "tiny", "--adapter", "sft-pref"])
    assert again.exit_code == 2 and "already preference-trained" in again.output


@pytest.mark.slow
def test_preference_micro_batches_give_the_whole_batchs_steps(planted):
    """training.micro_batch_size in the preference stage: a preference row counts twice (chosen
    and rejected), so micro_batch_size=2 runs a batch of 4 rows as four passes of one whose
    gradients add up to the batch's: the same DPO losses at each step as one pass of four
    (micro_batch_size=8: every row of the batch in one pass)."""
    from opensem.preference import run as prefer

    common = FAST + PREFER + ["preference.max_steps=2", "training.precision=fp32"]
    whole = prefer(planted, load_config(planted.root, "tiny", common + ["preference.run_name=whole", "training.micro_batch_size=8"]))
    micro = prefer(planted, load_config(planted.root, "tiny", common + ["preference.run_name=micro", "training.micro_batch_size=2"]), adapter="sft")
    assert whole["global_step"] == micro["global_step"] == 2
    assert (whole["preference"]["rows_per_pass"], micro["preference"]["rows_per_pass"]) == (4, 1)

    def losses(result):
        return [m.value for m in mlflow.MlflowClient().get_metric_history(result["mlflow_run_id"], "loss")]

    assert len(losses(whole)) == 2 and losses(micro) == pytest.approx(losses(whole), rel=1e-3)


def test_a_preference_row_counts_twice_against_the_micro_batch():
    from opensem.preference.stage import preference_rows_per_pass

    assert [preference_rows_per_pass(4, m) for m in (None, 1, 2, 3, 4, 8, 16)] == [4, 1, 1, 1, 2, 4, 4]


@pytest.mark.slow
@pytest.mark.usefixtures("bundled_model_dir")
def test_kill_9_mid_preference_training_then_the_same_command_finishes_in_the_same_run(planted):
    env = dict(os.environ, OPENSEM_HOME=str(planted.root))
    sets = sum((["--set", s] for s in FAST + PREFER + ["preference.max_steps=6", "training.checkpoint_steps=2"]), [])
    cmd = [sys.executable, "-m", "opensem", "prefer", "--sem", "tiny", *sets]
    checkpoints = planted.adapters_dir / "sft-pref" / "checkpoints"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (checkpoints / "checkpoint-2" / "trainer_state.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    state = json.loads((planted.adapters_dir / "sft-pref" / "opensem_run.json").read_text())
    assert not (planted.adapters_dir / "sft-pref" / "training_metadata.json").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from" in done.stderr and "checkpoint-" in done.stderr
    metadata = json.loads((planted.adapters_dir / "sft-pref" / "training_metadata.json").read_text())
    assert metadata["global_step"] == 6 and metadata["mlflow_run_id"] == state["mlflow_run_id"]
    assert mlflow.get_run(state["mlflow_run_id"]).info.status == "FINISHED"


def test_preference_needs_the_forges_preference_rows(project):
    sem = new_sem("tiny")
    sem.processed_dir.mkdir(parents=True)
    (sem.processed_dir / "train.jsonl").write_text("")
    result = CliRunner().invoke(app, ["prefer", "--sem", "tiny"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "no preference rows" in errors[0], result.output


def test_a_sweep_over_preference_settings_is_scored_on_dev_or_judge_not_held_out_loss(project):
    space = "sweep.space={preference.beta: {type: float, low: 0.05, high: 0.5}}"
    for sets, words in ((["--set", space], "preference.enabled is false"),
                        (["--set", space, "--set", "preference.enabled=true", "--set", "sweep.objective=eval_loss"], "sweep.objective=dev")):
        result = CliRunner().invoke(app, ["sweep", "--sem", "legal", *sets])
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and words in " ".join(result.output.split()), result.output
