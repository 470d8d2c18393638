"""`opensem train` against TRL's SFTTrainer with its default settings, on what the demo trains.

    python -m bench train_speed              # both example sets, about 20 minutes on 2 cores
    python -m bench train_speed open-book    # one set: open-book or pairs

Two example sets: "open-book", the demo's own training rows (legal, forged offline, each question
with its two retrieved excerpts, ~290 tokens of which ~26 are the answer), and "pairs", the
legal golden answers as short chat examples (~60 tokens). Every variant runs in its own process
on the same rows, the same order (seed) and the same learning settings: the recipe's learning
rate, schedule, LoRA, batch size and assistant-only loss. They differ only in what sets speed:

- TRL defaults: TRL's own values for everything else: bf16 autocast (even on a CPU whose bf16 is
  emulated), gradient checkpointing, batches padded to their longest row, logits for every token.
- TRL defaults, fp32: the same with bf16=False; on a CPU without native bf16 the fair baseline.
- opensem, plain: opensem's trainer without its two speed-ups (stock loss over every position,
  stock sdpa attention over the whole padding-free row): the path the fast one must match.
- opensem train: as `opensem train` runs on this machine.

Printed for each: real (non-padding) tokens/s timed after a warm-up step, the ratio to TRL's
defaults, model FLOPs utilisation against this CPU's fp32 and bf16 matmul ceilings (measured in
this run), peak RSS, the ratio of peak RSS to TRL's defaults', the loss after the same steps, and
the seconds of the first step (torch.compile's cost lands there) and of all steps.
LoRA training costs about 4 x N FLOPs per token (forward 2N, backward through the frozen weights
2N; adapters negligible), N = 134.5M for SmolLM2-135M.

Where this CPU's bf16 is emulated (AVX2 only) a bf16 matmul is ~100x slower than fp32, so one
step of TRL's defaults takes tens of minutes: it is skipped, said so, and the ratios are to TRL's
defaults in fp32. Target (issue 37): opensem train >= 3x TRL's defaults in tokens/s on the
open-book rows, loss within 0.05 of TRL's after the same steps, peak RSS <= 1.5x TRL's.

Where a CPU step's time goes (torch.profiler, open-book rows, batch 8, fp32, 2 cores): before the
per-example attention, sdpa's flash kernel over the whole 2,300-token padding-free row with a
block mask took 53% of a step and the matmuls 36%; after it, the matmuls (at the fp32 ceiling)
take 66%, attention 15%, elementwise ops (RMSNorm, rotary, SiLU, adds) the rest. See
docs/measurements/train-speed.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARAMS = 134.5e6
BATCH = 8
VARIANTS = {
    "trl_defaults": "TRL defaults",
    "trl_fp32": "TRL defaults, fp32",
    "opensem_plain": "opensem, plain",
    "opensem": "opensem train",
}
TARGET_SPEEDUP = 3.0
TARGET_LOSS_GAP = 0.05
TARGET_MEMORY = 1.5


def _worker(variant: str, data: str, steps: int, out: str) -> None:
    """Runs in a subprocess: one variant, timed after its first (warm-up) step."""
    import resource
    import time

    from transformers import TrainerCallback

    from opensem.config import resolve
    from opensem.hardware import detect, plan
    from opensem.models import BUNDLED_ID, resolve_base_model

    rows = [json.loads(line) for line in open(data)]
    base = resolve_base_model(BUNDLED_ID, REPO / "models" / "base")
    cfg = resolve([("bench", {"training": {"max_steps": steps, "batch_size": BATCH, "logging_steps": 1,
                                           "checkpoint_steps": 10**6}})])
    marks: list[tuple[float, int, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), float("nan"))
            marks.append((time.perf_counter(), int(state.num_input_tokens_seen or 0), loss))

    checkpoints = Path(out).with_suffix(".ckpt")
    if variant.startswith("opensem"):
        from opensem.train.hf_backend import build_trainer, prepare

        p = plan(detect(), cfg.training)
        model, tok = prepare(base, cfg, p)
        if variant == "opensem_plain":
            model.set_attn_implementation("sdpa")
        trainer = build_trainer(model, tok, rows, [], cfg, p, checkpoints, [Clock()], stock_loss=variant == "opensem_plain")
    else:
        trainer = _trl_trainer(base, rows, cfg, checkpoints, bf16=variant == "trl_defaults", callbacks=[Clock()])
    start = time.perf_counter()
    trainer.train()
    (t0, n0, _), (t1, n1, loss) = marks[0], marks[-1]
    result = {"tokens_per_s": (n1 - n0) / (t1 - t0), "steps_timed": len(marks) - 1, "loss": loss,
              "first_step_s": t0 - start, "total_s": t1 - start,
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    Path(out).write_text(json.dumps(result))


def _trl_trainer(base: str, rows: list[dict], cfg, output_dir: Path, bf16: bool, callbacks):
    """TRL's SFTTrainer with its own defaults for everything that sets speed, and the recipe's
    learning settings (so that the losses compare)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from opensem.train.hf_backend import ensure_generation_markers

    t, lora = cfg.training, cfg.lora
    tokenizer = AutoTokenizer.from_pretrained(base)
    ensure_generation_markers(tokenizer)  # assistant-only loss needs the template's generation markers
    learning = dict(learning_rate=t.learning_rate, lr_scheduler_type=t.lr_scheduler, warmup_steps=t.warmup_ratio,
                    weight_decay=t.weight_decay, seed=t.seed, max_steps=t.max_steps, assistant_only_loss=True)
    args = SFTConfig(output_dir=str(output_dir), use_cpu=True, per_device_train_batch_size=BATCH, report_to=[],
                     save_strategy="no", logging_steps=1, include_num_input_tokens_seen="non_padding",
                     **({} if bf16 else {"bf16": False}), **learning)
    return SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(base), args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, callbacks=callbacks,
        peft_config=LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                               target_modules=lora.target_modules, task_type="CAUSAL_LM"),
    )


def _ceiling() -> dict:
    """fp32 and bf16 matmul GFLOP/s of this CPU (1024 x 1024, all cores)."""
    import time

    import torch

    found = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        a @ b
        start, reps = time.perf_counter(), 0
        while reps < 3 or time.perf_counter() - start < 1.0:
            a @ b
            reps += 1
        found[name] = 2 * 1024**3 * reps / (time.perf_counter() - start) / 1e9
    return found


def main(sets: list[str] | None = None, steps: int = 10) -> None:
    from rich.console import Console

    from opensem.hardware import detect

    console = Console(width=max(Console().width, 150))
    native_bf16 = detect().cpu_bf16
    ceiling = _ceiling()
    console.print(f"matmul ceiling measured now: fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.1f} GFLOP/s "
                  f"({'native' if native_bf16 else 'emulated'} bf16)")
    for name in sets or ["open-book", "pairs"]:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "train.jsonl"
            (_open_book_rows if name == "open-book" else _pair_rows)(data, Path(tmp))
            results = {}
            for variant in VARIANTS:
                if variant == "trl_defaults" and not native_bf16:
                    continue  # emulated bf16: one step takes tens of minutes
                out = Path(tmp) / f"{variant}.json"
                console.print(f"[dim]{name}: {VARIANTS[variant]} ({steps} steps)...[/dim]")
                subprocess.run([sys.executable, "-m", "bench.train_speed", "--worker", variant, str(data), str(steps), str(out)],
                               check=True, cwd=REPO, env=dict(os.environ, TQDM_DISABLE="1"))
                results[variant] = json.loads(out.read_text())
        _print(console, name, results, ceiling, native_bf16)


def _print(console, name: str, results: dict, ceiling: dict, native_bf16: bool) -> None:
    from rich.table import Table

    reference = "trl_defaults" if native_bf16 else "trl_fp32"
    ref = results[reference]
    table = Table(title=f"train speed, {name} rows: SmolLM2-135M, LoRA r16 all-linear, batch {BATCH}, CPU "
                        f"(ratios to {VARIANTS[reference]})")
    for col in ("settings", "tokens/s", "speed ratio", "MFU fp32", "MFU bf16", "peak RSS GB", "RSS ratio", "loss",
                "steps timed", "first step s", "all steps s"):
        table.add_column(col)
    if not native_bf16:
        table.add_row(VARIANTS["trl_defaults"], "not run", "(bf16 emulated here)", *[""] * 8)
    for variant, r in results.items():
        flops = r["tokens_per_s"] * 4 * PARAMS / 1e9
        table.add_row(VARIANTS[variant], f"{r['tokens_per_s']:.1f}", f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x",
                      f"{flops / ceiling['fp32']:.0%}", f"{flops / ceiling['bf16']:.0%}", f"{r['peak_rss_gb']:.2f}",
                      f"{r['peak_rss_gb'] / ref['peak_rss_gb']:.2f}x", f"{r['loss']:.3f}", str(r["steps_timed"]),
                      f"{r['first_step_s']:.0f}", f"{r['total_s']:.0f}")
    console.print(table)
    fast = results["opensem"]
    checks = {
        f"tokens/s >= {TARGET_SPEEDUP:g}x {VARIANTS[reference]}": fast["tokens_per_s"] >= TARGET_SPEEDUP * ref["tokens_per_s"],
        f"loss within {TARGET_LOSS_GAP} of {VARIANTS[reference]}": abs(fast["loss"] - ref["loss"]) <= TARGET_LOSS_GAP,
        f"loss within {TARGET_LOSS_GAP} of opensem, plain": abs(fast["loss"] - results["opensem_plain"]["loss"]) <= TARGET_LOSS_GAP,
        f"peak RSS <= {TARGET_MEMORY:g}x {VARIANTS[reference]}": fast["peak_rss_gb"] <= TARGET_MEMORY * ref["peak_rss_gb"],
    }
    for check, ok in checks.items():
        console.print(f"  {'[green]met[/green]' if ok else '[red]not met[/red]'}: {check}")


def _open_book_rows(path: Path, tmp: Path) -> None:
    """The demo's training rows: legal forged offline, with the default (open-book) settings, in
    a throw-away copy of the project."""
    from bench.common import project_copy

    root = project_copy(tmp, "legal")
    subprocess.run([sys.executable, "-m", "opensem", "forge", "--sem", "legal"], check=True, cwd=root,
                   stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(REPO)))
    path.write_text((root / "data" / "legal" / "processed" / "train.jsonl").read_text())


def _pair_rows(path: Path, tmp: Path) -> None:
    """The sample SEM's golden answers as short chat examples (~60 tokens each), 256 of them."""
    items = json.loads((REPO / "evals" / "legal" / "golden_set.json").read_text())["items"]
    system = "You are a concise contract-law assistant. Answer the question directly, stating the key fact first."
    rows = [{"messages": [{"role": "system", "content": system}, {"role": "user", "content": i["question"]},
                          {"role": "assistant", "content": i["answer"]}]} for i in items]
    path.write_text("".join(json.dumps(rows[k % len(rows)]) + "\n" for k in range(256)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main(sys.argv[1:] or None)
