"""Copy references: what an open-book expert must read better than.

With retrieval on, every model answers with excerpts of the documents in front of it. A reader
that only copies would answer with the sentence the retriever ranks first:

    copy_top1  the top-ranked sentence of the excerpts the models read, verbatim
    copy_top2  the two top-ranked sentences, verbatim, best first

Both come from the documents and the retriever alone (Retriever.top_sentences), never from a
golden answer, and are scored by the judge that scores the models. They are not validity
controls (judge/controls.py: answers whose right score is known) but references: a fine-tune
that states fewer key facts than copy_top1 reads worse than quoting its own retriever, and the
registry gate refuses it (registry.beat_copy_top1).
"""

from __future__ import annotations

REFERENCES = {"copy_top1": 1, "copy_top2": 2}  # name -> sentences quoted
LABELS = {"copy_top1": "copy-top1 (top-ranked sentence)", "copy_top2": "copy-top2 (two top-ranked sentences)"}
TABLE = "eval/references.json"


def copy_answers(retriever, questions: list[str]) -> dict[str, list[str]]:
    """Each reference's answer to every question, from the retriever's own ranking."""
    most = max(REFERENCES.values())
    top = [retriever.top_sentences(q, most) for q in questions]
    return {name: [" ".join(sentences[:n]) for sentences in top] for name, n in REFERENCES.items()}


def score(judge, items, answers: dict[str, list[str]], pass_score: int) -> tuple[dict, list[dict]]:
    """Metrics (<name>_recall, _mean, _pass_rate, _answer_chars) and one row per item and
    reference, judged as the models' answers are."""
    metrics: dict = {}
    rows: list[dict] = []
    for name, texts in answers.items():
        verdicts = judge.judge(items, texts)
        scored = [v for v in verdicts if v]
        metrics[f"{name}_recall"] = _mean([v.key_fact_recall for v in scored])
        metrics[f"{name}_mean"] = _mean([v.score for v in scored])
        metrics[f"{name}_pass_rate"] = _mean([v.score >= pass_score for v in scored])
        metrics[f"{name}_answer_chars"] = _mean([len(t) for t in texts])
        rows += [{"reference": name, "id": i.id, "answer": a, "score": v.score if v else None,
                  "key_fact_recall": v.key_fact_recall if v else None, "reason": v.reason if v else "judge failed"}
                 for i, a, v in zip(items, texts, verdicts)]
    return metrics, rows


def cell(metrics: dict, name: str) -> str:
    """"49% (mean 2.61)": a reference's key-fact accuracy and judge score, '-' when absent."""
    if f"{name}_recall" not in metrics:
        return "-"
    return f"{metrics[f'{name}_recall']:.0%} (mean {metrics[f'{name}_mean']:.2f})"


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")
