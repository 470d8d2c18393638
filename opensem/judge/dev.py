"""`opensem dev`: the development set, the questions to choose settings by.

The golden set is the test a SEM's results are reported on and the registry gate decides by.
A setting chosen by looking at it (a learning rate, a recipe, a teacher rule) makes the reported
gain look better than it is. A dev set is a second set of questions about the same documents,
in the same format (evals/<sem>/dev_set.json, see opensem/golden.py), asked about facts the
golden set does not ask about: compare settings on it, then report on the golden set once.

The forge keeps the dev set's questions out of the training data, as it does the golden set's,
so a gain on it is a gain on unseen questions. Scored by key facts alone (no judge model), the
same key-fact accuracy the golden comparison prints first, with the paired 95% interval.
Nothing goes to the registry; `opensem dev` only prints (and writes --out as JSON). A sweep can
be scored on it too: `--set sweep.objective=dev`.
"""

from __future__ import annotations


from rich.console import Console

from opensem.config import Config
from opensem.distributed import world
from opensem.errors import OpenSEMError
from opensem.workspace import Sem

console = Console(stderr=True, quiet=not world().main)  # under torchrun, rank 0 speaks for all


def load_dev_set(sem: Sem):
    """The dev set's items, checked as the golden set is (each answer states its own key facts,
    no question gives its facts away); a missing file says how to make one."""
    from opensem.golden import load_golden_for_scoring
    from opensem.golden_lint import check

    if not sem.dev_set.is_file():
        raise OpenSEMError(f"no dev set at {sem.dev_set}: write one in the golden set's format, about facts the golden "
                           "set does not ask (opensem/judge/dev.py says why)")
    items = load_golden_for_scoring(sem.dev_set)
    failing = check(items, sem.dev_set).failing
    if failing:
        raise OpenSEMError(f"{sem.dev_set}: item {failing[0].id}: {failing[0].errors[0]} "
                           f"({len(failing)} items fail; mend them before choosing anything by this set)")
    golden = {q.question.strip().lower() for q in load_golden_for_scoring(sem.golden_set)} if sem.golden_set.is_file() else set()
    repeated = [i.id for i in items if i.question.strip().lower() in golden]
    if repeated:
        raise OpenSEMError(f"{sem.dev_set}: {', '.join(repeated[:3])} repeat golden questions; a dev set must ask other ones")
    return items


def score(items, answers: list[str]) -> list[float]:
    """Key-fact recall per item (0-1): the share of its key facts the answer states."""
    from opensem.judge.offline import key_fact_recall

    return [key_fact_recall(a, i.key_facts) for i, a in zip(items, answers)]


def accuracy(sem: Sem, cfg: Config, adapter: str) -> float:
    """The adapter's key-fact accuracy on the dev set (what `sweep.objective: dev` maximises)."""
    from opensem.judge.evaluate import _answer

    items = load_dev_set(sem)
    recalls = score(items, _answer(sem, cfg, [i.question for i in items], "evaluate", adapter, None)[0])
    return sum(recalls) / len(recalls)


def training_sample(sem: Sem, n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Up to n (question, answer) pairs of the forge's train.jsonl, the same ones on every call."""
    import random

    from opensem.generate import question_of
    from opensem.io import read_jsonl

    path = sem.processed_dir / "train.jsonl"
    if n <= 0 or not path.is_file():
        return []
    rows = [row["messages"] for row in read_jsonl(path)]
    pairs = [(question_of([m for m in r if m["role"] == "user"][-1]["content"]), r[-1]["content"]) for r in rows]
    return random.Random(seed).sample(pairs, min(n, len(pairs)))


def fit(sample: list[tuple[str, str]], base_answers: list[str], tuned_answers: list[str]) -> dict:
    """How well the adapter learnt its own pairs: asked training questions, how close each model's
    answer is to the trained answer (token F1) and how many it reproduces (F1 >= 0.8). A recipe
    whose adapter reproduces few of its pairs has not learnt its data, whatever it does on new
    questions; the base model's numbers are the floor."""
    from opensem.judge.offline import token_f1

    base = [token_f1(a, t) for a, (_, t) in zip(base_answers, sample)]
    tuned = [token_f1(a, t) for a, (_, t) in zip(tuned_answers, sample)]
    n = len(sample)
    return {"n": n, "base_f1": sum(base) / n, "tuned_f1": sum(tuned) / n,
            "base_reproduced": sum(f >= REPRODUCED for f in base), "tuned_reproduced": sum(f >= REPRODUCED for f in tuned)}


REPRODUCED = 0.8  # token F1 at which an answer counts as the trained answer


def taught_ids(sem: Sem, items) -> set[str] | None:
    """The dev items whose key facts one training answer states in full (opensem/coverage.py),
    by the forge output on disk; None where there is none."""
    from opensem.coverage import item_coverage, training_answers

    path = sem.processed_dir / "train.jsonl"
    if not path.is_file():
        return None
    return {row.id for row in item_coverage(items, training_answers(path), []) if row.taught == 1}


def by_coverage(items, taught: set[str], base: list[float], tuned: list[float]) -> dict:
    """Key-fact accuracy on the items a training answer teaches and on the others. Where the
    adapter gains no more on the taught items than on the rest, what it learnt from its pairs
    does not carry over to a question asked in other words."""
    out = {}
    for name, wanted in (("taught", True), ("untaught", False)):
        picked = [(b, t) for i, b, t in zip(items, base, tuned) if (i.id in taught) == wanted]
        n = len(picked)
        out[name] = {"n": n, "base_recall": sum(b for b, _ in picked) / n if n else None,
                     "tuned_recall": sum(t for _, t in picked) / n if n else None}
    return out


def run(sem: Sem, cfg: Config, adapter: str | None = None, fit_sample: int = 30) -> dict:
    """Answer the dev set with the base model and with the adapter (default: the newest), and
    compare their key-fact accuracy item by item. Also asks `fit_sample` training questions
    (0: none), to say how well the adapter learnt its pairs (`fit`), and splits the accuracy by
    whether the forge output on disk teaches an item's facts (`by_coverage`; it should be the
    output the adapter was trained on)."""
    from opensem.adapters import check_adapter, resolve_adapter
    from opensem.judge.evaluate import _answer, answer_format, open_book_retriever
    from opensem.judge.stats import paired_diff_ci

    items = load_dev_set(sem)
    folder = resolve_adapter(sem, adapter)
    check_adapter(folder, cfg)  # the base it was trained on, open book or not as in training; sound weights
    sample = training_sample(sem, fit_sample)
    questions = [i.question for i in items] + [q for q, _ in sample]  # one model load each
    console.print(f"[bold]dev[/bold] {sem.name}: {len(items)} dev questions and {len(sample)} training questions, "
                  f"base vs adapter {folder.name}")
    retriever = open_book_retriever(sem, cfg)
    base_all = _answer(sem, cfg, questions, "baseline", None, None, retriever)[0]
    tuned_all = _answer(sem, cfg, questions, "evaluate", folder.name, None, retriever)[0]
    if not world().main:  # torchrun: this rank answered its share (gathered on every rank); rank 0 scores
        return {}
    base_answers, tuned_answers = base_all[:len(items)], tuned_all[:len(items)]
    base, tuned = score(items, base_answers), score(items, tuned_answers)
    gain, low, high = paired_diff_ci(tuned, base, cfg.registry.confidence, cfg.registry.bootstrap_resamples)
    result = {
        "sem": sem.name, "adapter": folder.name, "n_items": len(items),
        "base_recall": sum(base) / len(base), "tuned_recall": sum(tuned) / len(tuned),
        "gain": gain, "ci_low": low, "ci_high": high,
        "better": sum(t > b for b, t in zip(base, tuned)), "worse": sum(t < b for b, t in zip(base, tuned)),
        "items": [{"id": i.id, "question": i.question, "base": a, "base_recall": b, "tuned": t, "tuned_recall": r}
                  for i, a, b, t, r in zip(items, base_answers, base, tuned_answers, tuned)],
    }
    if retriever is not None:  # open book: the copy references on the dev items (judge/references.py)
        from opensem.judge.references import copy_answers

        for name, answers in copy_answers(retriever, [i.question for i in items]).items():
            recalls = score(items, answers)
            result[f"{name}_recall"] = sum(recalls) / len(recalls)
            result[f"{name}_answer_chars"] = sum(len(a) for a in answers) / len(answers)
    # the shape of the answers (complete sentence, at most two sentences), as evaluate logs it
    result["format"] = {"base": answer_format(base_answers), "tuned": answer_format(tuned_answers)}
    if sample:
        result["fit"] = fit(sample, base_all[len(items):], tuned_all[len(items):])
    taught = taught_ids(sem, items)
    if taught is not None:
        result["by_coverage"] = by_coverage(items, taught, base, tuned)
        for row in result["items"]:
            row["taught"] = row["id"] in taught
    console.print(f"dev key-fact accuracy {result['base_recall']:.0%} -> {result['tuned_recall']:.0%} "
                  f"({100 * gain:+.0f} points, {cfg.registry.confidence:.0%} CI [{100 * low:+.0f}, {100 * high:+.0f}]); "
                  f"{result['better']} items better, {result['worse']} worse"
                  + (f"; copy-top1 {result['copy_top1_recall']:.0%}, copy-top2 {result['copy_top2_recall']:.0%}"
                     if "copy_top1_recall" in result else ""), highlight=False)
    shape = result["format"]
    console.print(f"answers of at most two sentences: base {shape['base']['short_answer_share']:.0%}, "
                  f"adapter {shape['tuned']['short_answer_share']:.0%}", highlight=False)
    if sample:
        f = result["fit"]
        console.print(f"training answers reproduced (token F1 >= {REPRODUCED}): base {f['base_reproduced']} of {f['n']}, "
                      f"adapter {f['tuned_reproduced']} of {f['n']} (mean F1 {f['base_f1']:.2f} -> {f['tuned_f1']:.2f})",
                      highlight=False)
    if taught is not None:
        console.print("; ".join(f"{name} items {c['n']}: " + (f"{c['base_recall']:.0%} -> {c['tuned_recall']:.0%}" if c["n"] else "none")
                                for name, c in result["by_coverage"].items())
                      + " (taught: a training answer states all their key facts)", highlight=False)
    return result

