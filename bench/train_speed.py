"""`opensem train` against TRL's SFTTrainer with its default settings: same data, model, LoRA,
batch size and steps, each in its own process, measured in one run.

Reports real (non-padding) tokens/s, the ratio to TRL's defaults, peak RSS, the loss reached,
and model FLOPs utilisation against this CPU's own matmul ceiling (measured here, in this run).
LoRA training costs about 4 x N FLOPs per token (forward 2N, backward through the frozen
weights 2N; the adapters are negligible), N = 134.5M for SmolLM2-135M.

TRL's defaults include bf16=True even on CPU; on a CPU without native bf16 (AVX2-only, like this
project's CI machines) that is emulated and ~100x slower, so it runs only a few steps and a
second baseline, "TRL defaults, fp32", shows what the other settings are worth on their own.

    python -m bench train_speed            # about 10 minutes on 2 cores
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


def _worker(variant: str, data: str, steps: int, out: str) -> None:
    """Runs in a subprocess: one variant, timed after its first (warm-up) step."""
    import resource
    import time

    from datasets import Dataset
    from transformers import TrainerCallback

    from opensem.config import resolve
    from opensem.hardware import detect, plan
    from opensem.models import BUNDLED_ID, resolve_base_model

    rows = [json.loads(line) for line in open(data)]
    base = resolve_base_model(BUNDLED_ID, REPO / "models" / "base")
    marks: list[tuple[float, int, float]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            loss = next((h["loss"] for h in reversed(state.log_history) if "loss" in h), float("nan"))
            marks.append((time.perf_counter(), int(state.num_input_tokens_seen or 0), loss))

    if variant == "opensem":
        from opensem.train.hf_backend import build_trainer, prepare

        cfg = resolve([("bench", {"training": {"max_steps": steps, "batch_size": BATCH, "logging_steps": 1, "checkpoint_steps": 10**6}})])
        p = plan(detect(), cfg.training)
        model, tok = prepare(base, cfg, p)
        trainer = build_trainer(model, tok, rows, [], cfg, p, Path(out).with_suffix(".ckpt"), [Clock()])
    else:
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        extra = {"bf16": False} if variant == "trl_fp32" else {}
        args = SFTConfig(
            output_dir=str(Path(out).with_suffix(".ckpt")), use_cpu=True, per_device_train_batch_size=BATCH, max_steps=steps,
            report_to=[], save_strategy="no", logging_steps=1, include_num_input_tokens_seen="non_padding", **extra,
        )
        trainer = SFTTrainer(
            model=AutoModelForCausalLM.from_pretrained(base), args=args, train_dataset=Dataset.from_list(rows),
            processing_class=AutoTokenizer.from_pretrained(base), callbacks=[Clock()],
            peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
        )
    trainer.train()
    (t0, n0, _), (t1, n1, loss) = marks[0], marks[-1]
    result = {"tokens_per_s": (n1 - n0) / (t1 - t0), "steps_timed": len(marks) - 1, "loss": loss,
              "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}
    Path(out).write_text(json.dumps(result))


def _ceiling() -> dict:
    import time

    import torch

    found = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
        a @ b
        reps = 20 if dtype == torch.float32 else 2
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        found[name] = 2 * 1024**3 * reps / (time.perf_counter() - start) / 1e9
    return found


def main(steps: int = 12, default_steps: int = 3) -> None:
    from rich.console import Console
    from rich.table import Table

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.jsonl"
        _make_data(data)
        results = {}
        for variant, n in (("trl_defaults", default_steps), ("trl_fp32", steps), ("opensem", steps)):
            out = Path(tmp) / f"{variant}.json"
            subprocess.run([sys.executable, "-m", "bench.train_speed", "--worker", variant, str(data), str(n), str(out)],
                           check=True, cwd=REPO, env=dict(os.environ, TQDM_DISABLE="1"))
            results[variant] = json.loads(out.read_text())
    ceiling = _ceiling()
    base = results["trl_defaults"]["tokens_per_s"]
    table = Table(title=f"train speed: SmolLM2-135M, LoRA r16 all-linear, batch {BATCH}, CPU")
    for col in ("settings", "tokens/s", "vs TRL defaults", "peak RSS GB", "loss", "MFU fp32", "steps timed"):
        table.add_column(col)
    for variant, label in (("trl_defaults", "TRL defaults"), ("trl_fp32", "TRL defaults, fp32"), ("opensem", "opensem train")):
        r = results[variant]
        mfu = r["tokens_per_s"] * 4 * PARAMS / (ceiling["fp32"] * 1e9)
        table.add_row(label, f"{r['tokens_per_s']:.1f}", f"{r['tokens_per_s'] / base:.2f}x", f"{r['peak_rss_gb']:.2f}",
                      f"{r['loss']:.3f}", f"{mfu:.0%}", str(r["steps_timed"]))
    Console().print(table)
    Console().print(f"matmul ceiling measured now: fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.1f} GFLOP/s; "
                    f"opensem vs TRL defaults fp32: {results['opensem']['tokens_per_s'] / results['trl_fp32']['tokens_per_s']:.2f}x")


def _make_data(path: Path) -> None:
    """The sample SEM's golden answers as short chat examples (~60 tokens each), 256 of them."""
    items = json.loads((REPO / "evals" / "legal" / "golden_set.json").read_text())["items"]
    system = "You are a concise contract-law assistant. Answer the question directly, stating the key fact first."
    rows = [{"messages": [{"role": "system", "content": system}, {"role": "user", "content": i["question"]},
                          {"role": "assistant", "content": i["answer"]}]} for i in items]
    path.write_text("".join(json.dumps(rows[k % len(rows)]) + "\n" for k in range(256)))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(*sys.argv[2:3], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        main()
