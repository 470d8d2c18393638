"""`python -m bench passage_coverage [SEM ...] [--golden] [--method=M] [--grid=256x2,s1x3,...]`:
how many of a question set's key facts do the open-book passages state?

Per SEM and retrieval setting (`retrieval.passage_tokens` x `retrieval.top_k`; a cell `s1x3` is
`retrieval.unit=sentence` with `retrieval.window` 1 and top_k 3), the share of the
dev set's key facts that the passages found for its questions state (the same key-fact check the
judge scores answers by), and how many tokens those passages put in a prompt. No model answers:
it measures what a reader could at best say, and what it costs to read. Settings are chosen by
the dev sets (the default); `--golden` counts the golden sets instead, as a report once a choice
is made, never to make one. SEMs: those with a dev set (debian-policy and sqlite), or the named
ones. Takes a minute or two on 2 cores (the embedding model encodes every passage once per size).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = [(256, 2), (192, 2), (128, 2), (128, 3), (128, 4), (96, 3), (96, 4), (64, 4), (64, 6),
        ("s0", 1), ("s0", 4), ("s1", 1), ("s1", 2), ("s1", 3), ("s2", 2), ("s2", 3)]
SENTENCE_CAP = 256  # retrieval.passage_tokens' default: the longest sentence window


def measure(sem: str, question_set: str, grid: list[tuple[int | str, int]], method: str) -> list[dict]:
    """One row per (passage_tokens, top_k) of the grid; passage_tokens "s<window>": sentence units."""
    from transformers import AutoTokenizer

    from opensem.text.chunk import token_counter
    from opensem.golden import load_golden_for_scoring
    from opensem.judge.offline import key_fact_recall
    from opensem.models import BUNDLED_ID, resolve_base_model
    from opensem.retrieval import Retriever, passages, sentence_windows

    count = token_counter(AutoTokenizer.from_pretrained(resolve_base_model(BUNDLED_ID, ROOT / "models" / "base")))
    items = load_golden_for_scoring(ROOT / "evals" / sem / f"{question_set}.json")
    rows = []
    raw = ROOT / "data" / sem / "raw"
    for size in {s for s, _ in grid}:
        deepest = max(k for s, k in grid if s == size)
        if isinstance(size, str):
            ranked, shown, spans, _ = sentence_windows(raw, count, SENTENCE_CAP, int(size[1:]))
            units, retriever = ranked, Retriever(ranked, deepest, method, shown, spans)
        else:  # one retriever per size: passages embedded once
            units = passages(raw, count, size)
            retriever = Retriever(units, deepest, method)
        found = [retriever.search(item.question) for item in items]
        for s, k in grid:
            if s != size:
                continue
            contexts = ["\n\n".join(f[:k]) for f in found]
            stated = [key_fact_recall(c, item.key_facts) for c, item in zip(contexts, items)]
            rows.append({"sem": sem, "passage_tokens": s, "top_k": k, "passages": len(units),
                         "stated": sum(stated) / len(stated), "tokens": sum(map(count, contexts)) / len(contexts)})

    def order(r: dict) -> tuple:  # chunk sizes largest first, then sentence windows narrowest first
        size = r["passage_tokens"]
        return (1, int(size[1:])) if isinstance(size, str) else (0, -size), r["top_k"]

    return sorted(rows, key=order)


def _refuse(message: str) -> None:
    """Bad input: one line on stderr, exit code 2 (the project's convention)."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _grid(text: str) -> list[tuple[int | str, int]]:
    grid = []
    for cell in text.split(","):
        m = re.fullmatch(r"(?:(\d+)|s(\d+))x(\d+)", cell.strip())
        if not m or (m[1] and int(m[1]) < 1) or int(m[3]) < 1:
            _refuse(f"--grid {text!r} is not a list like 256x2,128x3,s1x3 (passage tokens, or s and the "
                    "sentence window, x passages)")
        grid.append((int(m[1]) if m[1] else f"s{int(m[2])}", int(m[3])))
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
            size = f"sentence ±{r['passage_tokens'][1:]}" if isinstance(r["passage_tokens"], str) else r["passage_tokens"]
            print(f"| {sem} | {size} x {r['top_k']} | {r['passages']} | {r['stated']:.1%} | {r['tokens']:.0f} |", flush=True)
    return rows
