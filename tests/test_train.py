"""Training Floor: a real short LoRA run of the bundled model, the adapter as an MLflow model,
SIGTERM + resume, and every bad-input path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import load_config
from opensem.train import run as train
from opensem.workspace import new_sem

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("bundled_model_dir")]

FACTS = [
    ("What colour is a Zorblat?", "A Zorblat is teal."),
    ("How many legs does a Quimble have?", "A Quimble has seven legs."),
    ("Where do Frobnits live?", "Frobnits live in Oslo."),
    ("What do Glimmers eat?", "Glimmers eat copper."),
]
FAST = [
    "model.system_prompt=Answer briefly.",
    "training.batch_size=4",
    "training.learning_rate=2e-3",
    "training.logging_steps=1",
    "training.warmup_ratio=0",
    "training.lr_scheduler=constant",
    "lora.r=8",
    "lora.alpha=16",
    "training.cpt_epochs=0",  # the tiny SEM has no corpus.jsonl; the cpt tests turn it on
    "experimental.cpt_mix_pairs=false",  # the cpt tests count steps over the windows alone (whatever the recipe says); the mix test turns it on
]


def rows(pairs):
    return "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n" for q, a in pairs)


@pytest.fixture
def tiny(project):
    sem = new_sem("tiny")
    sem.processed_dir.mkdir(parents=True)
    (sem.processed_dir / "train.jsonl").write_text(rows(FACTS))
    (sem.processed_dir / "test.jsonl").write_text(rows(FACTS[:1]))
    return sem


@pytest.fixture
def trainer_rows(monkeypatch) -> list[list[dict]]:
    """The rows each trainer is built with, in order (the cpt phase's first), recorded on their
    way into the real build_trainer."""
    from opensem.train import hf_backend

    given: list[list[dict]] = []
    real = hf_backend.build_trainer
    monkeypatch.setattr(hf_backend, "build_trainer", lambda model, tok, rows, *a, **k: given.append(rows) or real(model, tok, rows, *a, **k))
    return given


def test_short_training_lowers_loss_and_changes_the_answer(tiny, bundled_model_dir):
    cfg = load_config(tiny.root, "tiny", FAST + ["training.max_steps=16", "training.run_name=r1"])
    result = train(tiny, cfg)
    out = tiny.adapters_dir / "r1"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "training_metadata.json", "resolved_config.yaml", "loss_curve.png"):
        assert (out / name).is_file(), name
    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["opensem.stage"] == "train"
    losses = [m.value for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")]
    assert len(losses) >= 10 and sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3
    for metric in ("learning_rate", "grad_norm", "tokens_per_second", "peak_memory_gb", "eval_loss"):
        assert metric in run.data.metrics, metric
    assert {d.dataset.name for d in run.inputs.dataset_inputs} == {"tiny-train"}

    # the logged MLflow model (base + adapter) answers differently from the base model, with the trained fact
    from opensem.generate import answer_questions
    from opensem.models import load_model_and_tokenizer

    base, tok = load_model_and_tokenizer(bundled_model_dir)
    before = answer_questions(base, tok, [FACTS[0][0]], "Answer briefly.", 16)[0]
    served = mlflow.pyfunc.load_model(result["model_uri"])
    after = served.predict(pd.DataFrame({"question": [FACTS[0][0], FACTS[2][0]]}), params={"max_new_tokens": 16})
    assert after[0] != before
    assert "teal" in after[0].lower() and "oslo" in after[1].lower(), after

    # an adapter trained on a 4-bit base is merged into a fresh 16-bit load of the base, never into
    # NF4 weights (no 4-bit here: the path that reloads the base is what is exercised)
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM

    from opensem.hardware import detect, plan as make_plan
    from opensem.train.stage import merge_adapter

    qlora_plan = dataclasses.replace(make_plan(detect(), cfg.training), load_in_4bit=True, precision="bf16")
    folder = merge_adapter(out, bundled_model_dir, qlora_plan, trained_model=None, tokenizer=tok)
    merged = AutoModelForCausalLM.from_pretrained(folder)
    assert merged.dtype == torch.bfloat16 and not hasattr(merged, "peft_config")
    assert (folder / "tokenizer.json").is_file() and not getattr(merged.config, "quantization_config", None)


def test_sigterm_saves_a_checkpoint_and_the_rerun_resumes_from_it(tiny):
    env = dict(os.environ, OPENSEM_HOME=str(tiny.root))
    sets = sum((["--set", s] for s in FAST + ["training.max_steps=16", "training.checkpoint_steps=2", "training.run_name=r2"]), [])
    cmd = [sys.executable, "-m", "opensem", "train", "--sem", "tiny", *sets]
    checkpoints = tiny.adapters_dir / "r2" / "checkpoints"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (checkpoints / "checkpoint-2").is_dir() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]  # not a success: a managed job must not show SUCCEEDED
    assert "SIGTERM" in err and "run the same command again to resume" in " ".join(err.split())
    saved = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert saved and saved[-1] >= 2
    state = json.loads((tiny.adapters_dir / "r2" / "opensem_run.json").read_text())
    assert mlflow.get_run(state["mlflow_run_id"]).info.status == "KILLED"

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"checkpoint-{saved[-1]}" in done.stderr  # resumed from there, not from zero
    metadata = json.loads((tiny.adapters_dir / "r2" / "training_metadata.json").read_text())
    assert metadata["global_step"] == 16 and metadata["mlflow_run_id"] == state["mlflow_run_id"]
    run = mlflow.get_run(state["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "loss")]
    assert min(steps) <= 2 and max(steps) == 16 and len(steps) < 16 + 5  # one run, no restart from zero


def test_kill_9_mid_training_then_the_same_command_finishes_in_the_same_run(tiny):
    """No handler runs on kill -9: the MLflow run is left RUNNING by a dead process and the newest
    checkpoint may be cut off. The same command again closes that run as KILLED, resumes from
    the newest complete checkpoint in the same run, and ends with a complete adapter."""
    env = dict(os.environ, OPENSEM_HOME=str(tiny.root))
    sets = sum((["--set", s] for s in FAST + ["training.max_steps=12", "training.checkpoint_steps=2", "training.run_name=k9"]), [])
    cmd = [sys.executable, "-m", "opensem", "train", "--sem", "tiny", *sets]
    checkpoints = tiny.adapters_dir / "k9" / "checkpoints"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (checkpoints / "checkpoint-4").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    state = json.loads((tiny.adapters_dir / "k9" / "opensem_run.json").read_text())
    assert mlflow.get_run(state["mlflow_run_id"]).info.status == "RUNNING"  # what kill -9 leaves
    assert not (tiny.adapters_dir / "k9" / "adapter_model.safetensors").exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "checkpoint-2" in done.stderr or "checkpoint-4" in done.stderr  # resumed, not from zero
    metadata = json.loads((tiny.adapters_dir / "k9" / "training_metadata.json").read_text())
    assert metadata["global_step"] == 12 and metadata["mlflow_run_id"] == state["mlflow_run_id"]
    assert (tiny.adapters_dir / "k9" / "adapter_model.safetensors").is_file()
    assert mlflow.get_run(state["mlflow_run_id"]).info.status == "FINISHED"


def test_finished_run_name_is_not_overwritten(tiny):
    tiny.adapters_dir.joinpath("done").mkdir(parents=True)
    tiny.adapters_dir.joinpath("done", "opensem_run.json").write_text('{"status": "finished"}')
    result = CliRunner().invoke(app, ["train", "--sem", "tiny", "--set", "training.run_name=done"])
    assert result.exit_code == 2 and "already finished" in result.output


def test_run_state_lives_beside_checkpoints_on_the_bucket(tiny, tmp_path):
    # A managed cloud job recovers on a new node: local disk (the adapter folder) is gone, the
    # mounted bucket is not. The MLflow run id must be found there, so the job goes on in the
    # same run (and a finished run is not trained again).
    bucket = tmp_path / "bucket"
    cfg = load_config(tiny.root, "tiny", FAST + ["training.max_steps=2", "training.run_name=b1", f"training.checkpoint_dir={bucket}"])
    result = train(tiny, cfg)
    state = json.loads((bucket / "tiny" / "b1" / "opensem_run.json").read_text())  # one SEM level, then the run
    assert state["mlflow_run_id"] == result["mlflow_run_id"] and state["status"] == "finished"
    assert not (bucket / "tiny" / "tiny").exists()
    import shutil

    shutil.rmtree(tiny.adapters_dir / "b1")  # the new node
    result = CliRunner().invoke(app, ["train", "--sem", "tiny", "--set", "training.run_name=b1", "--set", f"training.checkpoint_dir={bucket}"])
    assert result.exit_code == 2 and "already finished" in result.output


@pytest.mark.parametrize(
    "setup, overrides, expected",
    [
        (None, ["training.learning_rate=-1e-4"], "training.learning_rate = -0.0001: input should be greater than 0"),
        (None, ["lora.r=0"], "lora.r = 0: input should be greater than 0"),
        (None, ["lora.target_modules=[q_proj, nonsense_proj]", "training.cpt_epochs=0"], "lora.target_modules ['nonsense_proj'] not found"),
        ("empty", [], "train.jsonl is empty"),
        ("malformed", [], "train.jsonl line 2: not valid JSON"),
        ("no_assistant", [], 'train.jsonl line 1: expected {"messages"'),
        ("missing", [], "run `opensem forge --sem tiny` first"),
        (None, ["training.cpt_epochs=1"], "no corpus at"),
        (None, ["training.cpt_epochs=-1"], "training.cpt_epochs = -1"),
        (None, ["training.cpt_batch_size=0"], "training.cpt_batch_size = 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(tiny, setup, overrides, expected):
    train_file = tiny.processed_dir / "train.jsonl"
    if setup == "empty":
        train_file.write_text("")
    elif setup == "malformed":
        train_file.write_text(rows(FACTS[:1]) + "{not json\n")
    elif setup == "no_assistant":
        train_file.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    elif setup == "missing":
        train_file.unlink()
        (tiny.processed_dir / "test.jsonl").unlink()
        tiny.processed_dir.rmdir()
    args = ["train", "--sem", "tiny"] + sum((["--set", o] for o in overrides), [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], result.output


def test_head_only_where_labelled_loss_equals_trls(tiny, bundled_model_dir):
    """The faster loss (LM head only on labelled positions) is the same number as the model's own
    full-head loss and as TRL's. TRL 1.15 (the Unsloth stack) computes its loss with a Triton
    kernel that needs a GPU: there, on CPU, only the model's own loss is compared."""
    import torch
    import trl
    from packaging.version import Version
    from trl import SFTTrainer

    from opensem.hardware import detect, plan
    from opensem.train.hf_backend import build_trainer, prepare

    trl_runs_on_cpu = Version(trl.__version__) >= Version("1.16")
    for padding_free in (False, True):
        cfg = load_config(tiny.root, "tiny", FAST + ["training.max_steps=1", f"training.padding_free={padding_free}"])
        p = plan(detect(), cfg.training)
        model, tok = prepare(bundled_model_dir, cfg, p)
        ours = build_trainer(model, tok, [json.loads(r) for r in rows(FACTS).splitlines()], [], cfg, p, tiny.root / "ck", [])
        batch = next(iter(ours.get_train_dataloader()))
        assert (batch["labels"] != -100).sum() < batch["input_ids"].numel() / 2  # most tokens carry no label
        with torch.no_grad():
            mine = ours.compute_loss(ours.model, dict(batch)).item()
            full_head = ours.model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids", "labels")}).loss.item()
            assert abs(mine - full_head) < 1e-4, (padding_free, mine, full_head)
            if not trl_runs_on_cpu:
                continue
            theirs = SFTTrainer.compute_loss(ours, ours.model, dict(batch)).item()
            assert abs(mine - theirs) < 1e-4, (padding_free, mine, theirs)
            # with more than one GPU the Trainer wraps the model in DataParallel, which has no .model
            wrapped = ours.compute_loss(torch.nn.DataParallel(ours.model), dict(batch)).item()
            assert abs(wrapped - theirs) < 1e-4


def test_example_bounds_split_a_padding_free_row_where_positions_restart():
    import torch

    from opensem.train.packed_attention import example_bounds

    assert example_bounds(torch.tensor([0, 1, 2, 0, 1, 0, 1, 2, 3])) == [0, 3, 5, 9]
    assert example_bounds(torch.tensor([0, 1, 2, 3])) is None  # one example: stock sdpa
    assert example_bounds(torch.tensor([5, 6, 7])) is None  # a continuation (cache): stock sdpa


def test_a_batch_padded_on_the_right_drops_its_mask_and_one_padded_on_the_left_keeps_it(bundled_model_dir, monkeypatch):
    """The preference stage's batches are padded on the right: causal attention alone gives the
    real tokens the logits stock sdpa gives them with the padded mask. A batch padded on the left
    (as generation pads) keeps its mask, and its logits are stock sdpa's to the bit."""
    import torch

    from opensem.models import load_model_and_tokenizer
    from opensem.train import packed_attention

    model, tok = load_model_and_tokenizer(bundled_model_dir)
    model.eval().set_attn_implementation("sdpa")
    texts = ["A Zorblat is teal and nests in barns.", "Quimbles walk sideways.", "Frobnits live in Oslo, where winters are long and dark."]
    tokenized = [tok(t)["input_ids"] for t in texts]
    longest = max(len(ids) for ids in tokenized)
    decided = []
    real_check = packed_attention.right_padded_only
    monkeypatch.setattr(packed_attention, "right_padded_only", lambda *a: decided.append(real_check(*a)) or decided[-1])
    for side in ("right", "left"):
        pads = [[tok.pad_token_id or 0] * (longest - len(ids)) for ids in tokenized]
        ids = torch.tensor([ids + pad if side == "right" else pad + ids for ids, pad in zip(tokenized, pads)])
        mask = torch.tensor([[1] * len(i) + [0] * len(p) if side == "right" else [0] * len(p) + [1] * len(i) for i, p in zip(tokenized, pads)])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        model.set_attn_implementation("sdpa")
        with torch.no_grad():
            stock = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            packed_attention.use_per_example_attention(model)
            decided.clear()
            ours = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        real = mask.bool()
        if side == "right":
            assert decided and all(decided)  # every layer took the causal kernel without the mask
            assert (ours[real] - stock[real]).abs().max() < 1e-4
        else:
            assert decided and not any(decided)
            assert torch.equal(ours[real], stock[real])
    model.set_attn_implementation("sdpa")


def test_the_fast_path_gives_the_plain_paths_loss_and_gradients(tiny, bundled_model_dir):
    """opensem's CPU speed-ups together (per-example attention on padding-free rows, the LM head
    only where labelled, compiled MLPs) against the plain path (stock sdpa over the row with its
    block mask, the model's own loss, eager) on the same padding-free batch: the same loss and
    the same LoRA gradients. A batch padded on the right (attention mask, no restarts) attends
    causally without its mask and matches stock sdpa too."""
    import torch

    from opensem.hardware import detect, plan
    from opensem.train.hf_backend import build_trainer, compile_mlps, prepare
    from opensem.train.packed_attention import NAME, example_bounds

    def loss_and_grads(trainer, batch, fast: bool):
        trainer.model.zero_grad()
        if fast:
            loss = trainer.compute_loss(trainer.model, dict(batch))
        else:  # the model's own loss: the head over every position (TRL 1.15's stock loss needs a GPU)
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids", "labels") if k in batch}
            loss = trainer.model(**inputs, use_cache=False).loss
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}

    examples = [json.loads(r) for r in rows(FACTS).splitlines()]
    for padding_free in (True, False):
        cfg = load_config(tiny.root, "tiny", FAST + ["training.max_steps=1", f"training.padding_free={padding_free}"])
        p = plan(detect(), cfg.training)
        model, tok = prepare(bundled_model_dir, cfg, p)
        assert model.config._attn_implementation == NAME
        trainer = build_trainer(model, tok, examples, [], cfg, p, tiny.root / "ck", [])
        batch = next(iter(trainer.get_train_dataloader()))
        if padding_free:
            assert len(example_bounds(batch["position_ids"][0])) == cfg.training.batch_size + 1  # one row, 4 examples
            compile_mlps(trainer.model)
            mlps = [layer.mlp for layer in trainer.model.get_base_model().model.layers]
            assert all(mlp._compiled_call_impl is not None for mlp in mlps)
        else:
            assert batch["input_ids"].shape[0] == cfg.training.batch_size and "attention_mask" in batch
        fast_loss, fast_grads = loss_and_grads(trainer, batch, fast=True)
        trainer.model.get_base_model().set_attn_implementation("sdpa")
        for layer in trainer.model.get_base_model().model.layers:
            layer.mlp._compiled_call_impl = None  # eager again
        plain_loss, plain_grads = loss_and_grads(trainer, batch, fast=False)
        assert abs(fast_loss - plain_loss) < 1e-4, (padding_free, fast_loss, plain_loss)
        assert fast_grads.keys() == plain_grads.keys() and len(fast_grads) > 100
        for name, grad in fast_grads.items():
            # relative to the gradient's size: compilation reorders fp32 sums (differences ~1e-5)
            gap = (grad - plain_grads[name]).norm() / plain_grads[name].norm().clamp(min=1e-12)
            assert gap < 1e-3, (padding_free, name, gap.item())


QWEN_LIKE = (  # ChatML as Qwen2.5 ships it: no {% generation %} markers
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA_LIKE = (
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + "
    "'<|eot_id|>' }}{% endfor %}"
)


def test_a_chatml_base_gets_generation_markers_and_another_template_is_refused(bundled_model_dir):
    # both backends (hf and Unsloth) call this before the shared trainer masks the prompt
    from transformers import AutoTokenizer

    from opensem.errors import OpenSEMError
    from opensem.train.hf_backend import ensure_generation_markers

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    messages = [{"role": "user", "content": "What colour is a Zorblat?"}, {"role": "assistant", "content": "Teal."}]
    tokenizer.chat_template = QWEN_LIKE
    ensure_generation_markers(tokenizer)
    rendered = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    answer = [t for t, m in zip(rendered["input_ids"], rendered["assistant_masks"]) if m]
    assert "Teal." in tokenizer.decode(answer) and "Zorblat" not in tokenizer.decode(answer)

    tokenizer.chat_template = LLAMA_LIKE
    with pytest.raises(OpenSEMError, match=r"no \{% generation %\} markers"):
        ensure_generation_markers(tokenizer)


CORPUS = "The Vexloom of Pardia is painted crimson every spring by the guild of lantern makers. "


def _text_loss(model, tokenizer, text: str) -> float:
    import torch

    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids).loss)


def test_cpt_trains_the_adapter_on_the_documents_before_the_pairs(tiny, bundled_model_dir):
    # A fact that only the documents state (no pair mentions it): after the cpt phase the adapter
    # finds that text far more likely than the base model does. Were the cpt adapter dropped or
    # replaced by a fresh one for the pairs, the loss would stay near the base model's.
    (tiny.processed_dir / "corpus.jsonl").write_text(json.dumps({"document": "a.txt", "text": CORPUS * 6}) + "\n")
    cfg = load_config(tiny.root, "tiny", FAST + ["training.cpt_epochs=6", "training.max_length=32", "training.run_name=cpt"])
    result = train(tiny, cfg)
    assert result["cpt"]["windows"] >= 3 and result["cpt"]["steps"] >= 6  # windows of <= 32 tokens, 6 passes
    run = mlflow.get_run(result["mlflow_run_id"])
    cpt_losses = [m.value for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "cpt_loss")]
    assert len(cpt_losses) >= 4 and cpt_losses[-1] < 0.5 * cpt_losses[0]
    assert "cpt_loss_final" in run.data.metrics and "loss" in run.data.metrics  # the pairs phase ran after it

    from peft import PeftModel

    from opensem.models import load_model_and_tokenizer

    base, tok = load_model_and_tokenizer(bundled_model_dir)
    before = _text_loss(base, tok, CORPUS)
    tuned = PeftModel.from_pretrained(base, str(tiny.adapters_dir / "cpt"))
    assert _text_loss(tuned, tok, CORPUS) < 0.5 * before


def test_keep_best_keeps_the_epoch_with_the_lowest_held_out_loss(tiny):
    # The held-out answer contradicts the training pairs in content and in shape, so every
    # further epoch on them raises the held-out loss: an early epoch is the best, and the adapter
    # saved must be its checkpoint's, not the last epoch's (without keep_best the last is saved).
    held_out = "Nobody has ever seen one, so its colour is unknown; the old surveys disagree about everything."
    (tiny.processed_dir / "test.jsonl").write_text(rows([("What colour is a Zorblat?", held_out)]))
    cfg = load_config(tiny.root, "tiny", FAST + ["training.epochs=4", "training.keep_best=true", "training.checkpoint_steps=1",
                                                "training.run_name=best"])
    result = train(tiny, cfg)
    run = mlflow.get_run(result["mlflow_run_id"])
    per_epoch = [m.value for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "eval_loss")]
    assert len(per_epoch) >= 4 and per_epoch.index(min(per_epoch)) < len(per_epoch) - 1, per_epoch
    assert result["kept_epoch"] == per_epoch.index(min(per_epoch)) + 1
    assert result["eval_loss"] == pytest.approx(min(per_epoch)) and run.data.metrics["eval_loss_final"] == pytest.approx(min(per_epoch))
    assert run.data.tags["opensem.kept_epoch"] == str(per_epoch.index(min(per_epoch)) + 1)  # "2", not "2.0"

    # step checkpoints keep their own schedule (a preempted run resumes from them) beside best/
    from safetensors.torch import load_file

    folder = tiny.adapters_dir / "best" / "checkpoints"
    saved = load_file(tiny.adapters_dir / "best" / "adapter_model.safetensors")
    best = load_file(folder / "best" / "adapter_model.safetensors")
    last = load_file(folder / f"checkpoint-{result['global_step']}" / "adapter_model.safetensors")
    assert saved.keys() == best.keys()
    assert all(torch_equal(saved[k], best[k]) for k in saved)
    assert not all(torch_equal(saved[k], last[k]) for k in saved)


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_max_steps_caps_the_cpt_phase_too(tiny):
    (tiny.processed_dir / "corpus.jsonl").write_text(json.dumps({"document": "a.txt", "text": CORPUS * 6}) + "\n")
    cfg = load_config(tiny.root, "tiny", FAST + ["training.cpt_epochs=6", "training.max_length=32", "training.max_steps=2",
                                                "training.run_name=quick"])
    result = train(tiny, cfg)
    assert result["cpt"]["steps"] == 2 and result["global_step"] == 2


def test_cpt_batch_size_sets_the_cpt_phase_steps_only(tiny):
    # One window per step in the cpt phase gives a step per window; the pairs phase keeps batch_size.
    (tiny.processed_dir / "corpus.jsonl").write_text(json.dumps({"document": "a.txt", "text": CORPUS * 2}) + "\n")
    cfg = load_config(tiny.root, "tiny", FAST + ["training.cpt_epochs=1", "training.max_length=32", "training.cpt_batch_size=1",
                                                "training.batch_size=8", "training.run_name=cptbatch"])
    result = train(tiny, cfg)
    assert result["cpt"]["windows"] >= 2 and result["cpt"]["steps"] == result["cpt"]["windows"]


def test_cpt_shuffle_sentences_trains_one_shuffled_copy_per_pass(tiny, trainer_rows):
    # Three passes over a corpus of one window: three copies of it, each in its own order (the
    # windows the cpt trainer is given are recorded), one step each at batch size 1.
    (tiny.processed_dir / "corpus.jsonl").write_text(json.dumps({"document": "g.md", "text": SECTIONED}) + "\n")
    cfg = load_config(tiny.root, "tiny", FAST + ["training.cpt_epochs=3", "training.max_length=512", "training.cpt_batch_size=1",
                                                "experimental.cpt_shuffle_sentences=true", "training.run_name=shuffled"])
    result = train(tiny, cfg)
    assert result["cpt"]["windows"] == 1 and result["cpt"]["steps"] == 3
    cpt_windows = trainer_rows[0]
    assert len(cpt_windows) == 3 and len({tuple(w["input_ids"]) for w in cpt_windows}) == 3


def test_cpt_mix_pairs_trains_the_pairs_among_the_windows_once_per_pass(tiny, trainer_rows, bundled_model_dir):
    # Two shuffled passes over a one-window corpus with the 4 pairs mixed in: the cpt trainer gets
    # 2 windows and 2 copies of each pair as chat-template text, one step each at batch size 1.
    (tiny.processed_dir / "corpus.jsonl").write_text(json.dumps({"document": "g.md", "text": SECTIONED}) + "\n")
    cfg = load_config(tiny.root, "tiny", FAST + ["training.cpt_epochs=2", "training.max_length=512", "training.cpt_batch_size=1",
                                                "experimental.cpt_shuffle_sentences=true", "experimental.cpt_mix_pairs=true",
                                                "training.run_name=mixed"])
    result = train(tiny, cfg)
    assert (result["cpt"]["windows"], result["cpt"]["pairs"], result["cpt"]["steps"]) == (1, 4, 2 + 2 * 4)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)  # decoding needs no model
    texts = [tok.decode(w["input_ids"]) for w in trainer_rows[0]]
    for question, answer in FACTS:
        pair = [t for t in texts if question in t]
        assert len(pair) == 2 and all("<|im_start|>assistant\n" + answer in t for t in pair)
    assert sum("Guide > Colours" in t and "assistant" not in t for t in texts) == 2  # the two corpus copies
    assert len(trainer_rows[1]) == 4  # the pairs phase: the pairs alone, as conversations
    assert all("messages" in row for row in trainer_rows[1])


def test_corpus_windows_cover_every_token_once(bundled_model_dir, tmp_path):
    from opensem.models import load_model_and_tokenizer
    from opensem.train.data import corpus_windows

    _, tok = load_model_and_tokenizer(bundled_model_dir)
    path = tmp_path / "corpus.jsonl"
    texts = ["First document. " * 30, "Second."]
    path.write_text("".join(json.dumps({"document": f"{i}.txt", "text": t}) + "\n" for i, t in enumerate(texts)))
    windows = corpus_windows(path, "tiny", tok, max_length=16)
    assert all(1 <= len(w["input_ids"]) <= 16 for w in windows)
    flat = [i for w in windows for i in w["input_ids"]]
    expected = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    assert flat == expected  # nothing lost or repeated; each document ends with EOS


SECTIONED = ("# Guide\n\n## Colours\n\nThe Vexloom is crimson. The Zorblat is teal. Frobnits are grey. Moons are white.\n\n"
             "Lanterns are gold. Doors are green.\n\n## Sizes\n\nA Vexloom is ten metres tall. A Zorblat is tiny.")


def test_shuffled_sections_keep_each_sentence_in_its_section_under_its_heading():
    import random

    from opensem.train.data import shuffled_sections

    orders = set()
    for seed in range(6):
        parts = shuffled_sections(SECTIONED, random.Random(seed)).split("\n\n")
        assert parts[0] == "Guide > Colours" and parts[2] == "Guide > Sizes"
        colours, sizes = parts[1].split(". "), parts[3].split(". ")
        assert sorted(s.rstrip(".") for s in colours) == sorted(
            ["The Vexloom is crimson", "The Zorblat is teal", "Frobnits are grey", "Moons are white", "Lanterns are gold", "Doors are green"])
        assert sorted(s.rstrip(".") for s in sizes) == ["A Vexloom is ten metres tall", "A Zorblat is tiny"]
        orders.add(parts[1])
    assert len(orders) > 3  # the order changes with the seed
    assert shuffled_sections(SECTIONED, random.Random(1)) == shuffled_sections(SECTIONED, random.Random(1))


def test_shuffled_corpus_windows_hold_one_differently_ordered_copy_per_pass(bundled_model_dir, tmp_path):
    from opensem.models import load_model_and_tokenizer
    from opensem.train.data import corpus_windows

    _, tok = load_model_and_tokenizer(bundled_model_dir)
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"document": "g.md", "text": SECTIONED}) + "\n")
    windows = corpus_windows(path, "tiny", tok, max_length=512, passes=3, shuffle_seed=7)
    copies = [tok.decode(w["input_ids"], skip_special_tokens=True) for w in windows]
    assert len(copies) == 3 and len(set(copies)) == 3  # one window per copy here, each in its own order
    assert all(sorted(c.split()) == sorted(copies[0].split()) for c in copies)  # the same words
    assert corpus_windows(path, "tiny", tok, max_length=512, passes=3, shuffle_seed=7) == windows  # reproducible


def test_a_conversation_longer_than_max_length_is_left_out(bundled_model_dir):
    # transformers 5.23 returns a BatchEncoding by default, whose len() is 2: nothing was ever dropped
    from opensem.models import load_model_and_tokenizer
    from opensem.train.stage import _fit_length

    _, tokenizer = load_model_and_tokenizer(bundled_model_dir)
    short = {"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}
    long = {"messages": [{"role": "user", "content": "Tell me. " * 40}, {"role": "assistant", "content": "Fine. " * 40}]}
    kept, dropped = _fit_length([short, long], tokenizer, max_length=64)
    assert kept == [short] and dropped == 1


def test_resume_skips_a_checkpoint_cut_off_while_saving(tmp_path):
    from opensem.train.stage import _last_checkpoint

    for step, complete in ((50, True), (100, True), (150, False)):  # preempted while writing checkpoint-150
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"x")
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-notes").mkdir()
    assert _last_checkpoint(tmp_path) == tmp_path / "checkpoint-100"
    assert _last_checkpoint(tmp_path / "missing") is None


def test_checkpointing_is_set_by_the_name_the_installed_transformers_knows():
    # transformers 5.17 (the Unsloth stack) has only gradient_checkpointing; 5.23 renamed it
    from dataclasses import dataclass

    from trl import SFTConfig

    from opensem.train.hf_backend import checkpointing_field

    @dataclass
    class Old:
        gradient_checkpointing: bool = False

    assert checkpointing_field(Old) == "gradient_checkpointing"
    # the installed stack's own SFTConfig takes the name chosen for it (5.23+: activation_, 5.17: gradient_)
    field = checkpointing_field(SFTConfig)
    import transformers
    from packaging.version import Version

    assert field == ("activation_checkpointing" if Version(transformers.__version__) >= Version("5.23") else "gradient_checkpointing")
    assert getattr(SFTConfig(output_dir="unused", use_cpu=True, bf16=False, **{field: True}), field) is True


def test_balance_yes_no_repeats_the_rarer_polarity_and_changes_nothing_else():
    from opensem.train.data import balance_yes_no, polarity

    def row(answer):
        return {"messages": [{"role": "user", "content": "q?"}, {"role": "assistant", "content": answer}]}

    rows = [row(f"Yes. Fact {n}.") for n in range(7)] + [row("No. Denial A."), row("No. Denial B.")] + [row("Six years."), row("Nobody knows.")]
    balanced, added = balance_yes_no(rows, seed=1)
    assert balanced[:len(rows)] == rows and added == 5
    counts = {p: sum(polarity(r) == p for r in balanced) for p in ("yes", "no", None)}
    assert counts == {"yes": 7, "no": 7, None: 2}  # "Nobody" is not a No
    extra = [r["messages"][-1]["content"] for r in balanced[len(rows):]]
    assert sorted(set(extra)) == ["No. Denial A.", "No. Denial B."] and abs(extra.count("No. Denial A.") - extra.count("No. Denial B.")) <= 1
    assert balance_yes_no(rows, seed=1) == (balanced, 5)  # the same seed repeats the same rows
    assert balance_yes_no(rows[:7] + rows[9:], seed=1) == (rows[:7] + rows[9:], 0)  # no denial to repeat
    mostly_no = [row("No. X.")] * 3 + [row("Yes. Y.")]
    assert [polarity(r) for r in balance_yes_no(mostly_no, seed=0)[0]].count("yes") == 3


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant_with_warmup", "constant"])
@pytest.mark.parametrize("total, warmup", [(1, 1), (2, 1), (20, 1), (100, 3)])
def test_every_step_of_a_run_trains_whatever_the_schedule(kind, total, warmup):
    from opensem.train.hf_backend import schedule_factor

    factor = schedule_factor(kind, warmup, total)
    rates = [factor(s) for s in range(total)]
    assert all(0 < r <= 1 for r in rates), rates
    if kind in ("cosine", "linear") and total > warmup + 1:
        assert rates[-1] < rates[warmup]  # and it still decays


def test_one_step_trains_the_adapter(tiny):
    from safetensors.torch import load_file

    result = train(tiny, load_config(tiny.root, "tiny", FAST + ["training.max_steps=1", "training.run_name=one",
                                                                  "training.warmup_ratio=0.03", "training.lr_scheduler=cosine"]))
    assert result["global_step"] == 1
    weights = load_file(str(tiny.adapters_dir / "one" / "adapter_model.safetensors"))
    assert any(float(w.abs().max()) > 0 for name, w in weights.items() if "lora_B" in name)  # lora_B starts at zero
    rates = [m.value for m in mlflow.MlflowClient().get_metric_history(result["mlflow_run_id"], "learning_rate")]
    assert rates and all(r > 0 for r in rates)


def test_a_diverging_training_stops_in_one_line_with_no_adapter(tiny):
    overrides = [o for o in FAST if not o.startswith("training.learning_rate")]
    result = CliRunner().invoke(app, ["train", "--sem", "tiny", *sum((["--set", o] for o in overrides), []),
                                      "--set", "training.learning_rate=1e30", "--set", "training.max_steps=6",
                                      "--set", "training.run_name=nan"])
    errors = [line.split("error:", 1)[1] for line in result.output.splitlines() if "error:" in line]  # after tqdm's bar
    assert result.exit_code == 2 and len(errors) == 1 and "not a finite number" in errors[0], result.output
    assert "training.learning_rate" in errors[0]
    assert not (tiny.adapters_dir / "nan" / "adapter_model.safetensors").exists()
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.`opensem.stage` = 'train'")
    assert list(runs["status"]) == ["FAILED"]


@pytest.mark.parametrize("spelling", ["inf", ".inf", "nan", "-Infinity", "'1e999'"])
def test_a_learning_rate_that_is_no_finite_number_is_refused_in_every_spelling(tiny, spelling):
    result = CliRunner().invoke(app, ["train", "--sem", "tiny", "--set", f"training.learning_rate={spelling}"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "finite number" in errors[0], result.output


def test_micro_batches_train_the_same_steps_on_the_same_examples(tiny, trainer_rows, monkeypatch):
    """training.micro_batch_size: a batch of 4 as two forward passes of 2 whose gradients add up
    to the batch's. The same losses at each step and the same adapter (up to the order of fp32
    sums) as the whole batch in one pass; the trainer really runs passes of 2."""
    from safetensors.torch import load_file

    from opensem.train import hf_backend

    built = []
    real = hf_backend.build_trainer
    monkeypatch.setattr(hf_backend, "build_trainer", lambda *a, **k: built.append(real(*a, **k)) or built[-1])
    common = FAST + ["training.max_steps=3", "training.keep_best=false", "training.precision=fp32"]
    whole = train(tiny, load_config(tiny.root, "tiny", common + ["training.run_name=whole"]))
    micro = train(tiny, load_config(tiny.root, "tiny", common + ["training.run_name=micro", "training.micro_batch_size=3"]))
    (whole_args, micro_args) = (t.args for t in built)
    assert (whole_args.per_device_train_batch_size, whole_args.gradient_accumulation_steps) == (4, 1)
    assert (micro_args.per_device_train_batch_size, micro_args.gradient_accumulation_steps) == (2, 2)  # 3 does not divide 4
    assert micro["global_step"] == whole["global_step"] == 3

    def losses(result):
        return [m.value for m in mlflow.MlflowClient().get_metric_history(result["mlflow_run_id"], "loss")]

    assert len(losses(whole)) == 3 and losses(micro) == pytest.approx(losses(whole), rel=1e-3)
    a, b = (load_file(str(tiny.adapters_dir / n / "adapter_model.safetensors")) for n in ("whole", "micro"))
    for name in a:
        gap = (a[name] - b[name]).norm() / a[name].norm().clamp(min=1e-12)
        assert gap < 1e-3, (name, gap.item())


def test_the_trained_model_is_freed_before_the_servable_model_loads(tiny, monkeypatch):
    """Once the adapter is saved, the trained model (and with it its optimizer state) is no longer
    referenced when the servable model is logged, which loads the expert afresh: the training
    process never holds both (docs/measurements/memory.md)."""
    import gc
    import weakref

    from opensem.train import hf_backend, stage

    trained, alive = [], []
    real_build, real_log = hf_backend.build_trainer, stage._log_servable_model

    def build(*args, **kwargs):
        trainer = real_build(*args, **kwargs)
        trained.append(weakref.ref(trainer.model))
        return trainer

    def log(*args, **kwargs):
        gc.collect()
        alive.append([model() is not None for model in trained])
        return real_log(*args, **kwargs)

    monkeypatch.setattr(hf_backend, "build_trainer", build)
    monkeypatch.setattr(stage, "_log_servable_model", log)
    result = train(tiny, load_config(tiny.root, "tiny", FAST + ["training.max_steps=2", "training.keep_best=false"]))
    assert result["status"] == "finished" and result["model_uri"]
    assert trained and alive == [[False] * len(trained)]


def test_examples_per_pass_divide_the_batch():
    from opensem.train.hf_backend import examples_per_pass

    assert [examples_per_pass(8, m) for m in (None, 1, 2, 3, 4, 5, 8, 16)] == [8, 1, 2, 2, 4, 4, 8, 8]
    assert examples_per_pass(6, 4) == 3 and examples_per_pass(7, 4) == 1
