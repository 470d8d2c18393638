"""`python -m bench export_fidelity [SEM] [--alias ALIAS] [--quant q8_0]`: does the exported GGUF
answer as the registered expert does? The golden set through both, side by side in one run.

The SEM's registered version (`champion` by default; `make demo` registers legal's as
`candidate` when the gate refuses it) is exported to a throw-away folder (`opensem export`,
nothing logged) and asked every golden question twice on the same prompt (system prompt,
open-book excerpts, question, as evaluation asks it), greedily: by the transformers model with
its adapter, and by llama.cpp (llama-cpp-python, from $LLAMA_CPP_PYTHON or .venv-llama: `make
setup-llama`) on the GGUF. Printed: key-fact accuracy of each (the offline judge's check), the
difference, the share of questions whose answers have the same first sentence, and seconds per
question of each engine (this machine's CPU: say which, `lscpu`). The target for q8_0: within 2
points of the transformers model, and the same first sentence on most questions.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# one llama.cpp process answers every prompt (a JSON list in a file), greedily
LLAMA_ANSWERS = """
import json, sys, time, llama_cpp
prompts = json.load(open(sys.argv[2]))
llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=2048, verbose=False, seed=0)
start = time.perf_counter()
texts = [llm(p, max_tokens=int(sys.argv[3]), temperature=0.0, top_k=1)["choices"][0]["text"].strip() for p in prompts]
print(json.dumps({"answers": texts, "seconds": time.perf_counter() - start}))
"""


def first_sentence(text: str) -> str:
    return text.strip().split(". ")[0].rstrip(".").strip().lower()


def main(args: list[str] | None = None) -> None:
    import subprocess

    import mlflow.pyfunc
    from rich.console import Console
    from rich.table import Table

    from opensem.config import load_config
    from opensem.export import export
    from opensem.export.llama_cpp import llama_python
    from opensem.generate import answer_chat, build_messages
    from opensem.golden import load_golden
    from opensem.judge.dev import score
    from opensem.registry import registered_version
    from opensem.workspace import open_sem

    args = list(args or [])
    option = lambda flag, default: args[args.index(flag) + 1] if flag in args else default  # noqa: E731
    alias, quant = option("--alias", "champion"), option("--quant", "q8_0")
    sem_name = next((a for i, a in enumerate(args) if not a.startswith("--") and (i == 0 or not args[i - 1].startswith("--"))), "legal")
    python = llama_python()
    if python is None:
        sys.exit("error: no llama-cpp-python to load the GGUF with: make setup-llama (or set LLAMA_CPP_PYTHON)")
    sem = open_sem(sem_name, REPO)
    cfg = load_config(REPO, sem_name)
    version = registered_version(sem, cfg, alias)
    items = load_golden(sem.golden_set)
    with tempfile.TemporaryDirectory() as tmp:
        done = export(sem, cfg, alias, quant, Path(tmp) / "export", log=False)
        expert = mlflow.pyfunc.load_model(f"models:/{version.name}/{version.version}").unwrap_python_model()
        chats = [build_messages(i.question, expert.system_prompt, expert.retriever.context(i.question) if expert.retriever else None)
                 for i in items]
        start = time.perf_counter()
        reference = [answer_chat(expert.model, expert.tokenizer, chat, expert.max_new_tokens)["text"] for chat in chats]
        reference_seconds = time.perf_counter() - start
        prompts = Path(tmp) / "prompts.json"
        prompts.write_text(json.dumps([expert.tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]))
        gguf = Path(done["folder"]) / done["gguf"]
        ran = subprocess.run([str(python), "-c", LLAMA_ANSWERS, str(gguf), str(prompts), str(expert.max_new_tokens)],
                             capture_output=True, text=True)
        if ran.returncode != 0:
            sys.exit(f"error: llama.cpp failed: {ran.stderr.strip().splitlines()[-1:]}")
        llama = json.loads(ran.stdout.strip().splitlines()[-1])
    ours, theirs = score(items, reference), score(items, llama["answers"])
    same = sum(first_sentence(a) == first_sentence(b) for a, b in zip(reference, llama["answers"])) / len(items)
    table = Table(title=f"{version.name} v{version.version} ({alias}) as {quant} GGUF, {len(items)} golden questions")
    for column in ("engine", "key-fact accuracy", "s / question"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    table.add_row("transformers + adapter", f"{100 * sum(ours) / len(items):.1f}%", f"{reference_seconds / len(items):.2f}")
    table.add_row(f"llama.cpp, {quant} GGUF ({done['bytes'] / 1e6:.0f} MB)", f"{100 * sum(theirs) / len(items):.1f}%",
                  f"{llama['seconds'] / len(items):.2f}")
    Console().print(table)
    print(f"difference {100 * (sum(theirs) - sum(ours)) / len(items):+.1f} points; same first sentence on {100 * same:.0f}% of questions")


if __name__ == "__main__":
    main(sys.argv[1:])
