"""Batched vs one-at-a-time greedy generation on the sample SEM's golden questions.

Generated tokens/s of `answer_questions` with generation.batch_size-style left-padded batches,
against the same function with batch size 1; target ratio >= 4x on 2 CPU cores. The answers of
both are compared too (greedy decoding must not depend on batching).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SINGLE = 8  # questions answered one at a time (a rate needs no more)
MAX_NEW = 64


def main(batch_sizes=(8, 16, 32)) -> None:
    from rich.console import Console
    from rich.table import Table

    from opensem.generate import answer_questions
    from opensem.models import BUNDLED_ID, load_model_and_tokenizer, resolve_base_model

    items = json.loads((REPO / "evals" / "legal" / "golden_set.json").read_text())["items"]
    questions = [i["question"] for i in items][:32]
    system = "You are a concise contract-law assistant. Answer the question directly, stating the key fact first."
    model, tok = load_model_and_tokenizer(resolve_base_model(BUNDLED_ID, REPO / "models" / "base"))

    def rate(qs, batch):
        start = time.perf_counter()
        answers = answer_questions(model, tok, qs, system, MAX_NEW, batch)
        seconds = time.perf_counter() - start
        tokens = sum(len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)  # +1: the end token
        return tokens / seconds, answers

    single, single_answers = rate(questions[:SINGLE], 1)
    table = Table(title=f"generation: SmolLM2-135M, greedy, up to {MAX_NEW} new tokens, {len(questions)} golden questions")
    for col in ("batch size", "tokens/s", "vs one at a time", "same answers"):
        table.add_column(col)
    table.add_row("1", f"{single:.1f}", "1.00x", "-")
    for b in batch_sizes:
        r, answers = rate(questions, b)
        table.add_row(str(b), f"{r:.1f}", f"{r / single:.2f}x", str(answers[:SINGLE] == single_answers))
    Console().print(table)
