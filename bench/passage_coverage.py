"""`python -m bench passage_coverage [SEM ...] [--golden] [--method=M] [--grid=256x2,128x2,...]`:
how many of a question set's key facts do the open-book passages state?

Per SEM and retrieval setting (`retrieval.passage_tokens` x `retrieval.top_k`), the share of the
dev set's key facts that the passages found for its questions state (the same key-fact check the
judge scores answers by), and how many tokens those passages put in a prompt. No model answers:
it measures what a reader could at best say, and what it costs to read. Settings are chosen by
the dev sets (the default); `--golden` counts the golden sets instead, as a report once a choice
is made, never to make one. SEMs: those with a dev set (debian-policy and sqlite), or the named
ones. Takes a minute or two on 2 cores (the embedding model encodes every passage once per size).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = [(256, 2), (192, 2), (128, 2), (128, 3), (128, 4), (96, 3), (96, 4), (64, 4), (64, 6)]


def measure(sem: str, question_set: str, grid: list[tuple[int, int]], method: str) -> list[dict]:
    """One row per (passage_tokens, top_k) of the grid."""
    from transformers import AutoTokenizer

    from opensem.forge.chunk import token_counter
    from opensem.golden import load_golden_for_scoring
    from opensem.judge.offline import key_fact_recall
    from opensem.models import BUNDLED_ID, resolve_base_model
    from opensem.retrieval import Retriever, passages

    count = token_counter(AutoTokenizer.from_pretrained(resolve_base_model(BUNDLED_ID, ROOT / "models" / "base")))
    items = load_golden_for_scoring(ROOT / "evals" / sem / f"{question_set}.json")
    rows = []
    for size in sorted({s for s, _ in grid}, reverse=True):
        units = passages(ROOT / "data" / sem / "raw", count, size)
        deepest = max(k for s, k in grid if s == size)
        retriever = Retriever(units, deepest, method)  # one retriever per size: passages embedded once
        found = [retriever.search(item.question) for item in items]
        for s, k in grid:
            if s != size:
                continue
            contexts = ["\n\n".join(f[:k]) for f in found]
            stated = [key_fact_recall(c, item.key_facts) for c, item in zip(contexts, items)]
            rows.append({"sem": sem, "passage_tokens": s, "top_k": k, "passages": len(units),
                         "stated": sum(stated) / len(stated), "tokens": sum(map(count, contexts)) / len(contexts)})
    return sorted(rows, key=lambda r: (-r["passage_tokens"], r["top_k"]))


def _refuse(message: str) -> None:
    """Bad input: one line on stderr, exit code 2 (the project's convention)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _grid(text: str) -> list[tuple[int, int]]:
    try:
        grid = [tuple(int(n) for n in cell.split("x")) for cell in text.split(",")]
    except ValueError:
        grid = []
    if not grid or any(len(g) != 2 or min(g) < 1 for g in grid):
        _refuse(f"--grid {text!r} is not a list like 256x2,128x3 (passage tokens x passages)")
    return grid


def main(args: list[str] | None = None) -> list[dict]:
    args = list(args or [])
    options = {a.split("=", 1)[0]: (a.split("=", 1) + [""])[1] for a in args if a.startswith("--")}
    unknown = set(options) - {"--golden", "--grid", "--method"}
    if unknown:
        _refuse(f"unknown option {sorted(unknown)[0]}; see python -m bench passage_coverage --help")
    question_set = "golden_set" if "--golden" in options else "dev_set"
    grid = _grid(options["--grid"]) if options.get("--grid") else GRID
    method = options.get("--method") or "hybrid"
    sems = [a for a in args if not a.startswith("--")] or ["debian-policy", "sqlite"]
    for sem in sems:
        if not (ROOT / "evals" / sem / f"{question_set}.json").is_file():
            _refuse(f"{sem} has no evals/{sem}/{question_set}.json")
    print(f"| SEM | passage tokens x passages | passages in the SEM | {question_set} key facts the passages state | prompt tokens of passages, mean |")
    print("| --- | --- | --- | --- | --- |")
    rows = []
    for sem in sems:
        for r in measure(sem, question_set, grid, method):
            rows.append(r)
            print(f"| {sem} | {r['passage_tokens']} x {r['top_k']} | {r['passages']} | {r['stated']:.1%} | {r['tokens']:.0f} |", flush=True)
    return rows
