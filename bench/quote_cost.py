"""`python -m bench quote_cost [SEM]`: seconds per question of answers chosen among the excerpts
(`generation.answer=quote`) beside free generation, side by side in one run.

The bundled base model answers the SEM's golden questions open book with the project's own
settings (configs/, the SEM's documents): once generating freely (greedy, generation.batch_size
and max_new_tokens as configured), once scoring every sentence of its excerpts
(opensem/quote.py). Printed: seconds per question, the ratio, the mean number of candidate
sentences, and the share of quoted answers that are sentences of the excerpts (all of them, by
construction: a check that nothing else slips through). Timings are from this machine; compare
the ratio, not the seconds (say which CPU: `lscpu`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(args: list[str] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from opensem.config import load_config
    from opensem.generate import answer_questions
    from opensem.models import load_model_and_tokenizer, resolve_base_model
    from opensem.quote import candidates
    from opensem.retrieval import excerpt_sentences, for_sem
    from opensem.workspace import open_sem

    sem_name = (args or ["legal"])[0]
    sem = open_sem(sem_name, REPO)
    cfg = load_config(REPO, sem_name)
    if not cfg.retrieval.enabled:
        sys.exit("error: quoted answers need the open book; this SEM's config has retrieval.enabled=false")
    questions = [i["question"] for i in json.loads(sem.golden_set.read_text(encoding="utf-8"))["items"]]
    model, tok = load_model_and_tokenizer(resolve_base_model(cfg.model.base, sem.base_models_dir))
    retriever = for_sem(sem, cfg, tok)
    g = cfg.generation

    def timed(mode: str) -> tuple[float, list[str]]:
        start = time.perf_counter()
        answers = answer_questions(model, tok, questions, cfg.model.system_prompt, g.max_new_tokens, g.batch_size, retriever,
                                   mode, g.quote_sentences)
        return (time.perf_counter() - start) / len(questions), answers

    free, _ = timed("free")
    quoted, answers = timed("quote")
    options = [len(candidates(retriever.search(q))) for q in questions]
    shown = [{s for e in retriever.search(q) for s in excerpt_sentences(e)} for q in questions]
    verbatim = sum(any(a.startswith(s) for s in seen) for a, seen in zip(answers, shown)) / len(answers)
    table = Table(title=f"{sem_name}: {len(questions)} golden questions, base model, open book ({cfg.retrieval.top_k} excerpts)")
    for col in ("answers", "seconds per question", "vs free", "candidates per question", "starts with an excerpt sentence"):
        table.add_column(col)
    table.add_row(f"free (greedy, up to {g.max_new_tokens} tokens, batch {g.batch_size})", f"{free:.2f}", "1.00x", "-", "-")
    table.add_row(f"quote ({g.quote_sentences} sentences)", f"{quoted:.2f}", f"{quoted / free:.2f}x",
                  f"{sum(options) / len(options):.1f}", f"{verbatim:.0%}")
    Console().print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
