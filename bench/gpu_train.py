"""`python -m bench gpu_train [CASE ...]`: the train stage on a CUDA GPU, every GPU setup side by side.

Each case runs `opensem train` in a subprocess, in a throw-away copy of the project with its own
MLflow store, as a user would, and prints per case: backend, base, 4-bit or not, steps, seconds,
tokens/s, peak GPU memory, loss at the first and last logged step. Then the first case's base,
adapter and logged MLflow model answer questions the way baseline and evaluate do, and the
placement they report (`opensem.answered_on`: a GPU should give "cuda bfloat16").

Bases: the bundled SmolLM2-135M (its real weights when models/base has them), and the shapes of
SmolLM2-1.7B and Qwen2.5-7B (the two GPU recipes' bases) built from their published
architecture numbers with random weights, with the bundled tokenizer: they need no download and
give real speed and memory, not quality. The 7B cases run the QLoRA recipe under a 22 GB cap,
what a 24 GB card gets. Needs a CUDA GPU, the GPU extra (`make setup-gpu`) and the SEM's forge
output (`opensem forge --sem legal`); not part of `make bench`'s default set.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, project_copy

SEM = "legal"
BUNDLED = ROOT / "models" / "base" / "SmolLM2-135M-Instruct"

# Published architecture numbers (the models' config.json on the Hugging Face hub).
SHAPES = {
    "smollm2-1.7b": {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
                     "intermediate_size": 8192, "num_hidden_layers": 24, "num_attention_heads": 32,
                     "num_key_value_heads": 32, "vocab_size": 49152, "max_position_embeddings": 8192,
                     "rope_theta": 130000, "rms_norm_eps": 1e-5, "tie_word_embeddings": True},
    "qwen2.5-7b": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584,
                   "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                   "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 32768,
                   "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False},
}
# name: (base, overrides). The 135M cases train with every default (cpt phase and pairs).
CASES = {
    "135m-hf": ("smollm2-135m", ["training.backend=hf"]),
    "135m-unsloth": ("smollm2-135m", ["training.backend=unsloth"]),
    "1.7b-hf": ("smollm2-1.7b", ["recipe=smollm2/1.7b_lora_cuda", "training.backend=hf", "training.max_steps=30"]),
    "1.7b-unsloth": ("smollm2-1.7b", ["recipe=smollm2/1.7b_lora_cuda", "training.backend=unsloth", "training.max_steps=30"]),
    "7b-qlora-hf-22gb": ("qwen2.5-7b", ["recipe=qwen2.5/7b_qlora_cuda", "training.backend=hf", "training.vram_cap_gb=22",
                                        "training.max_steps=10"]),
    "7b-qlora-unsloth-22gb": ("qwen2.5-7b", ["recipe=qwen2.5/7b_qlora_cuda", "training.backend=unsloth",
                                             "training.vram_cap_gb=22", "training.max_steps=10"]),
}
LOG: Path | None = None  # every subprocess's output, with --out FILE: FILE with .log
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def base_folder(shape: str, work: Path, tokenizer_dir: Path) -> tuple[Path, str]:
    """A folder from_pretrained loads, and whether its weights are real or random."""
    if shape == "smollm2-135m" and (tokenizer_dir / "model.safetensors").is_file():
        return tokenizer_dir, "real"
    folder = work / shape
    if not (folder / "config.json").is_file():
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        numbers = json.loads((tokenizer_dir / "config.json").read_text()) if shape == "smollm2-135m" else dict(SHAPES[shape])
        config = AutoConfig.for_model(numbers.pop("model_type"), **{k: v for k, v in numbers.items() if k != "architectures"})
        config.bos_token_id, config.eos_token_id, config.pad_token_id = 1, 2, 2  # the SmolLM2 tokenizer's
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):  # on the GPU: seconds, not minutes, for 7B
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(folder)
        del model
        torch.cuda.empty_cache()
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copy(tokenizer_dir / name, folder / name)
    return folder, "random"


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def project(tmp: Path) -> Path:
    """bench.common's project copy, plus the SEM's forge output (forge needs no GPU: it is not rerun)."""
    processed = ROOT / "data" / SEM / "processed"
    if not (processed / "train.jsonl").is_file():
        _fail(f"no forge output in {processed}: run `opensem forge --sem {SEM}` first")
    root = project_copy(tmp, SEM)
    shutil.copytree(processed, root / "data" / SEM / "processed")
    return root


def _run(root: Path, argv: list[str], label: str, timeout: int) -> subprocess.CompletedProcess:
    """A Python subprocess in the project copy, with its own MLflow store and no hub; its output
    is appended to LOG when one is set."""
    env = {**os.environ, "OPENSEM_HOME": str(root), "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "UNSLOTH_DISABLE_STATISTICS": "1"}
    done = subprocess.run([sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    if LOG:
        with open(LOG, "a", encoding="utf-8") as fh:
            fh.write(f"=== {label} (exit {done.returncode})\n{done.stdout}\n{done.stderr}\n")
    return done


def opensem(root: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return _run(root, ["-m", "opensem", *args], f"opensem {' '.join(args)}", timeout)


def train(root: Path, name: str, base: Path, overrides: list[str]) -> dict:
    sets = sum((["--set", o] for o in [*overrides, f"model.base={base}", f"training.run_name={name}"]), [])
    started = time.perf_counter()
    done = opensem(root, "train", "--sem", SEM, *sets)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return {"case": name, "error": (done.stderr or done.stdout).strip().splitlines()[-3:], "seconds": seconds}
    meta = json.loads((root / "models" / SEM / "adapters" / name / "training_metadata.json").read_text())
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    client = mlflow.MlflowClient()
    history = {key: [m.value for m in sorted(client.get_metric_history(meta["mlflow_run_id"], key), key=lambda m: m.step)]
               for key in ("loss", "cpt_loss", "peak_memory_gb", "cpt_peak_memory_gb", "tokens_per_second")}
    losses = history["cpt_loss"] + history["loss"]
    return {"case": name, "backend": meta["backend"], "load_in_4bit": meta["plan"]["load_in_4bit"],
            "precision": meta["plan"]["precision"], "vram_cap_gb": meta["plan"]["vram_cap_gb"],
            "steps": meta["global_step"] + ((meta.get("cpt") or {}).get("steps") or 0),
            "train_seconds": meta["train_seconds"] + ((meta.get("cpt") or {}).get("seconds") or 0), "process_seconds": seconds,
            "tokens_per_second": max(history["tokens_per_second"], default=None),
            "peak_gb": max(history["peak_memory_gb"] + history["cpt_peak_memory_gb"], default=None),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
            "eval_loss": meta["eval_loss"], "adapter": (root / "models" / SEM / "adapters" / name / "adapter_model.safetensors").is_file()}


# Run in a subprocess (a fresh CUDA context): the answering step of baseline and evaluate, for the
# base, the adapter folder and the adapter's logged MLflow model (what serving loads). The judge
# is left out: it runs on the CPU whatever the machine, and its embedding model is a separate
# package.
ANSWER_CHECK = """
import json, sys
from pathlib import Path
from opensem.config import load_config
from opensem.judge.evaluate import _answer, answered_on
from opensem.workspace import open_sem
root, base, adapter = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
sem = open_sem("legal", root)
cfg = load_config(root, "legal", [f"model.base={base}"])
uri = json.loads((sem.adapters_dir / adapter / "opensem_run.json").read_text())["model_uri"]
questions = ["What does the agreement say about termination?"] * 32
from opensem.models import load_model_and_tokenizer
model, _ = load_model_and_tokenizer(base, cfg.generation.device)
found = {"answered_on": answered_on(cfg), "loaded on": f"{model.device} {model.dtype}"}
del model
for label, stage, name, model_uri in (("base", "baseline", None, None), ("adapter", "evaluate", adapter, None),
                                      ("MLflow model", "evaluate", None, uri)):
    answers, seconds, tokens = _answer(sem, cfg, questions, stage, name, model_uri)
    found[label] = f"{len(answers)} answers, {seconds:.1f} s"
print(json.dumps(found))
"""


def answer_check(root: Path, base: Path, adapter: str) -> dict:
    done = _run(root, ["-c", ANSWER_CHECK, str(root), str(base), adapter], "answer check", timeout=600)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-3:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def row(r: dict) -> str:
    if "error" in r:
        return f"| {r['case']} | failed after {r['seconds']:.0f} s: {' / '.join(r['error'])} |||||||"
    loss = f"{r['first_loss']:.2f} -> {r['last_loss']:.2f}" if r["first_loss"] is not None else ""
    cap = f", cap {r['vram_cap_gb']:g} GB" if r["vram_cap_gb"] else ""
    return (f"| {r['case']} | {r['weights']} | {r['backend']}, {r['precision']}{', 4-bit' if r['load_in_4bit'] else ''}{cap} "
            f"| {r['steps']} | {r['train_seconds']:.0f} "
            f"({r['process_seconds']:.0f}) | {r['tokens_per_second'] or 0:.0f} | {r['peak_gb'] or 0:.1f} | {loss} |")


def main(args: list[str] | None = None) -> list[dict]:
    """args: case names (default: all; see CASES), `--out FILE` for the results as JSON."""
    import torch

    args = list(args or [])
    out = None
    if "--out" in args:
        at = args.index("--out")
        out = Path(args[at + 1])
        del args[at:at + 2]
        global LOG
        LOG = out.with_suffix(".log")
    unknown = [a for a in args if a not in CASES]
    if unknown:
        _fail(f"no case {unknown[0]!r}; the cases are {', '.join(CASES)}")
    if not torch.cuda.is_available():
        _fail("no CUDA GPU visible: this benchmark measures the GPU training path")
    print(f"GPU: {torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 1024**3:.0f} GB; torch {torch.__version__}")
    results: list[dict] = []
    print("| case | weights | backend, precision | steps | train s (process s) | tokens/s | peak GB | loss first -> last |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root, work = project(Path(tmp)), Path(tmp) / "bases"
        bases = {}
        checked = False
        for name in args or list(CASES):
            shape, overrides = CASES[name]
            if shape not in bases:
                bases[shape] = base_folder(shape, work, BUNDLED)
            folder, weights = bases[shape]
            results.append(train(root, name, folder, overrides) | {"weights": weights, "base": shape})
            print(row(results[-1]), flush=True)
            if not checked and "error" not in results[-1]:  # the first adapter also answers questions
                checked = True
                placed = answer_check(root, folder, name)
                print(f"answering with {name}'s base and adapter: " + "; ".join(f"{k}: {v}" for k, v in placed.items()), flush=True)
                results.append({"case": "answer check", "adapter": name, **placed})
            if out:
                out.write_text(json.dumps(results, indent=1))
    return results
