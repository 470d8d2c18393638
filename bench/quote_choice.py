"""`python -m bench quote_choice [SEM ...] [--answers DIR] [--set KEY=VALUE ...]`: which sentence
of its excerpts does each model quote, and is it the one that answers?

Reads the answers `python -m bench outcome` keeps (DIR, default $TMPDIR/opensem-outcome:
`<sem>-answers.jsonl` and `<sem>-seed<N>-answers.jsonl`, every seed found), finds again the
excerpts each golden question was answered from (the SEM's retriever as configured now, with
the `--set` overrides the outcome ran with: run it from the code that ran the outcome), and
sorts each answer by the first sentence it states after a Yes./No. opener:

    top1   the sentence the retriever ranks first (the sentence copy-top1 answers with)
    other  another sentence of the excerpts
    none   no sentence of the excerpts (a quote holds 80% of a sentence's content words)

Per SEM and model (open-book base, tuned): the share of answers of each kind, their key-fact
accuracy beside copy-top1's on the same questions, and the best single sentence of the excerpts
(what a reader that always quoted the right sentence would state). No model runs; a minute for
the embedding model. It reads golden-set answers, so it explains a result and chooses nothing.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("top1", "other", "none")
QUOTE_SHARE = 0.8  # the share of a sentence's content words an answer must hold to quote it
SEMS = ["legal", "debian-policy", "sqlite"]


def quoted(answer: str, sentences: list[str]) -> int | None:
    """Index of the sentence that the answer's first sentence (after a Yes./No. opener) quotes,
    or None: the sentence whose content words the answer holds the largest share of, at least
    QUOTE_SHARE."""
    from opensem.text.reflow import split_sentences
    from opensem.text.words import _OPENS_POLAR, content_words

    first = content_words((split_sentences(_OPENS_POLAR.sub("", answer.strip())) or [""])[0])
    wanted = [content_words(s) for s in sentences]
    shares = [len(w & first) / len(w) if w else 0.0 for w in wanted]
    best = max(range(len(sentences)), key=shares.__getitem__, default=None)
    return best if best is not None and shares[best] >= QUOTE_SHARE else None


def kind(answer: str, ranked: list[str]) -> str:
    """top1, other or none (module doc) for an answer to excerpts whose sentences are `ranked`,
    best first."""
    at = quoted(answer, ranked)
    return "none" if at is None else "top1" if at == 0 else "other"


def answer_files(folder: Path, sem: str) -> list[Path]:
    """The answer files `bench outcome` kept for the SEM: its default seed's and every --seeds one's."""
    named = re.compile(rf"{re.escape(sem)}(-seed\d+)?-answers\.jsonl")
    return sorted(p for p in folder.glob("*-answers.jsonl") if named.fullmatch(p.name))


def measure(root: Path, sem: str, files: list[Path], overrides: list[str] = ()) -> list[dict]:
    """The SEM's answer files sorted by what they quote (module doc), one row per model."""
    from opensem.config import load_config
    from opensem.errors import OpenSEMError
    from opensem.golden import load_golden_for_scoring
    from opensem.judge.evaluate import open_book_retriever
    from opensem.workspace import open_sem

    project = open_sem(sem, root)
    retriever = open_book_retriever(project, load_config(root, sem, list(overrides)))
    if retriever is None:
        raise OpenSEMError(f"{sem} answers closed book (retrieval.enabled is false): there are no excerpts to quote; "
                           "pass the --set overrides the outcome ran with")
    items = load_golden_for_scoring(project.golden_set)
    rows = [json.loads(line) for path in files for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"sem": sem, "runs": len(files), **r} for r in tally(retriever, items, rows)]


def tally(retriever, items, rows: list[dict]) -> list[dict]:
    """Per model (base: each row's `before`, tuned: its `after`), the answers of each kind with
    the model's key-fact recall on them and copy-top1's on the same questions."""
    from opensem.judge.offline import key_fact_recall
    from opensem.retrieval import excerpt_sentences

    by_id = {i.id: i for i in items}
    seen: dict[str, tuple[list[str], list[float]]] = {}  # question id -> ranked sentences, their key-fact recall
    kinds = {model: {k: [] for k in KINDS} for model in ("base", "tuned")}
    best = []
    for row in rows:
        item = by_id[row["id"]]
        if item.id not in seen:
            excerpts = retriever.search(item.question)  # searched once: top_sentences ranks within them
            count = sum(len(excerpt_sentences(p)) for p in excerpts)
            ranked = retriever.top_sentences(item.question, count, excerpts)
            seen[item.id] = ranked, [key_fact_recall(s, item.key_facts) for s in ranked]
        ranked, recall = seen[item.id]
        best.append(max(recall, default=0.0))
        for model, answer, score in (("base", row["before"], row["before_recall"]), ("tuned", row["after"], row["after_recall"])):
            if answer is not None and score is not None:
                kinds[model][kind(answer, ranked)].append((score, recall[0] if recall else 0.0))
    out = []
    for model, answers in kinds.items():
        total = sum(len(v) for v in answers.values())
        row = {"model": model, "answers": total, "best_sentence": _mean(best),
               "accuracy": _mean(p[0] for v in answers.values() for p in v),
               "copy_top1": _mean(p[1] for v in answers.values() for p in v)}
        for k, pairs in answers.items():
            row[k] = {"share": len(pairs) / total if total else float("nan"),
                      "model": _mean(p[0] for p in pairs), "copy_top1": _mean(p[1] for p in pairs)}
        out.append(row)
    return out


def table(rows: list[dict]) -> str:
    head = ("| SEM (runs) | model | key-fact accuracy; copy-top1 | quotes the top-ranked sentence: share, accuracy (copy-top1's) "
            "| quotes another sentence | quotes none | best single sentence |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        cells = [f"{r[k]['share']:.0%}, {_pct(r[k]['model'])} ({_pct(r[k]['copy_top1'])})" for k in KINDS]
        lines.append(f"| {r['sem']} ({r['runs']}) | {r['model']} | {_pct(r['accuracy'])}; {_pct(r['copy_top1'])} | "
                     + " | ".join(cells) + f" | {_pct(r['best_sentence'])} |")
    return "\n".join(lines)


def main(args: list[str] | None = None) -> list[dict]:
    from opensem.errors import OpenSEMError

    args = list(args or [])
    folder = Path(tempfile.gettempdir()) / "opensem-outcome"
    if "--answers" in args:
        at = args.index("--answers")
        folder = Path(args[at + 1]) if at + 1 < len(args) else folder
        del args[at:at + 2]
    overrides = [a for i, a in enumerate(args) if i and args[i - 1] == "--set"]
    sems = [a for i, a in enumerate(args) if a != "--set" and not (i and args[i - 1] == "--set")]
    rows = []
    for sem in sems or SEMS:
        files = answer_files(folder, sem)
        if not files:
            print(f"{sem}: no answers in {folder} (run `python -m bench outcome {sem}` first)", file=sys.stderr)
            continue
        try:
            rows += measure(ROOT, sem, files, overrides)
        except OpenSEMError as error:  # a bad --set, closed book, no documents: one line, as the CLI says it
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
    if not rows:
        sys.exit(2)
    print(table(rows))
    return rows


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _pct(value: float) -> str:
    return "-" if value != value else f"{value:.0%}"
