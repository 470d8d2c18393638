"""`opensem forge`: data/<sem>/raw -> data/<sem>/processed/{train,test,corpus}.jsonl.

    ingest -> chunk -> teacher (cached, budgeted, concurrent) -> quality filters, dedup,
    decontamination -> split 90/10 by chunk -> atomic writes + manifest -> MLflow run
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from opensem import coverage
from opensem.config import Config
from opensem.forge.extractive import unfaithful
from opensem.forge.quality import Decontaminator, NearDuplicates, check_pair, content_words, contradicts_source, is_complete_sentence
from opensem.forge.teachers import make_teacher
from opensem.generate import build_messages
from opensem.io import atomic_write_json, atomic_write_jsonl, sha256_file, staged_folder
from opensem.llm import Budget, Completion
from opensem.progress import LogLines
from opensem.retrieval import SENTENCE_END, excerpt_sentences, found
from opensem.retrieval import settings as retrieval_settings
from opensem.text.chunk import Chunk, chunk_document, token_counter
from opensem.text import secrets
from opensem.text.ingest import check_folder, ingest
from opensem.text.words import STOPWORDS
from opensem.workspace import Sem

console = Console(stderr=True)

# the jsonl outputs the manifest holds digests of
FILES = ("train", "test", "corpus", "preference_train", "preference_test")
# below this many training pairs forge warns (the sample SEM, which does beat its base, has ~130)
FEW_PAIRS = 50


@dataclass
class Pair:
    question: str
    answer: str
    chunk: Chunk

    def messages(self, system_prompt: str | None, retriever=None, context: str | None = None) -> dict:
        # the same prompt the model is asked with at evaluation (generate.build_messages): with
        # retrieval on, the passages found for the question, as at evaluation - not the pair's
        # own chunk, which an evaluated question does not come with - unless a reading context
        # is given (reading_rows)
        if context is None and retriever:
            context = retriever.context(self.question)
        return {"messages": build_messages(self.question, system_prompt, context) + [{"role": "assistant", "content": self.answer}]}


def reading_rows(pairs: list[Pair], system_prompt: str | None, retriever, reading, seed: int, preference: list | None = None):
    """The training rows: each pair asked as at evaluation, or with forge.reading on (open book),
    `copies` times with excerpts chosen for reading practice (Retriever.reading_excerpts), each
    copy's draw seeded by the pair and the copy's number. With quoted answers and `preference`
    given, the first copy's preference rows (forge/preference_pairs.py) are added to it."""
    practice = retriever is not None and (reading.answer_in_excerpts or reading.shuffle or reading.copies > 1)
    for copy in range(reading.copies if practice else 1):
        for p in pairs:
            if not practice:
                yield p.messages(system_prompt, retriever)
                continue
            rng = random.Random(f"{seed}/{copy}/{p.question}")
            answer = p.answer
            if reading.answer_in_excerpts:
                excerpts, answering = retriever.reading_excerpts(p.question, p.answer, rng, reading.shuffle, reading.distractor_pool)
                context = retriever.shown_text(p.question, excerpts)
                if answering and reading.quote_sentences:
                    answer = quote_answer(p.answer, answering, reading.quote_sentences, join_opener=reading.join_opener)
                    if preference is not None and copy == 0 and answer != p.answer:
                        preference += _preference(p, answer, excerpts, context, system_prompt, retriever, reading)
            else:  # the retriever's own excerpts, only reordered
                excerpts = retriever.search(p.question)
                if reading.shuffle:
                    rng.shuffle(excerpts)
                context = "\n\n".join(excerpts)
            yield Pair(p.question, answer, p.chunk).messages(system_prompt, retriever, context)


def _preference(p: Pair, chosen: str, excerpts: list[str], shown: str, system_prompt, retriever, reading) -> list[dict]:
    """A pair's preference rows: its quoted answer chosen, quotes of other sentences of the same
    excerpts rejected (a Yes./No. opener of the chosen one goes in front of them too, so the two
    differ only in the sentence chosen)."""
    from opensem.forge.preference_pairs import preference_rows, rejected_quotes

    if not reading.rejected_per_pair:
        return []
    opener = next((o for o in ("Yes. ", "No. ") if chosen.startswith(o)), "")
    top = retriever.top_sentences(p.question, 1, excerpts)
    rejected = rejected_quotes(p.question, p.answer, chosen.removeprefix(opener), excerpts, reading.quote_sentences,
                               reading.rejected_per_pair, top[0] if top else None)
    return preference_rows(p.question, system_prompt, shown, chosen, [opener + r for r in rejected])


def held_out_preference(pairs: list[Pair], system_prompt: str | None, retriever, reading) -> list[dict]:
    """Preference rows for the held-out pairs, asked as at evaluation (the retriever's own
    excerpts), where one of those excerpts states the answer: the preference stage's eval set."""
    rows: list[dict] = []
    if retriever is None or not (reading.answer_in_excerpts and reading.quote_sentences and reading.rejected_per_pair):
        return rows
    for p in pairs:
        excerpts = retriever.search(p.question)
        answering = next((e for e in excerpts if found(p.answer, e)), None)
        chosen = quote_answer(p.answer, answering, reading.quote_sentences, join_opener=reading.join_opener) if answering else p.answer
        if chosen != p.answer:
            rows += _preference(p, chosen, excerpts, retriever.shown_text(p.question, excerpts), system_prompt, retriever, reading)
    return rows


def quote_answer(answer: str, excerpt: str, sentences: int, least_share: float = 0.5, join_opener: bool = False) -> str:
    """The answer as a reader that quotes would give it (forge.reading.quote_sentences): the
    sentence of the excerpt holding most of the answer's content words, verbatim, and with
    sentences=2 the sentence after it; a Yes./No. opener of the answer stays in front. The
    answer itself where no sentence holds `least_share` of its words (a list's count, an answer
    the teacher put together from several sentences). Heading lines are not sentences."""
    wanted = content_words(answer)
    quotable = [s for s in excerpt_sentences(excerpt) if s[-1] in SENTENCE_END]
    if not wanted or not quotable:
        return answer
    shares = [len(wanted & content_words(s)) / len(wanted) for s in quotable]
    best = max(range(len(quotable)), key=lambda k: (shares[k], -k))
    if shares[best] < least_share:
        return answer
    quote = " ".join(quotable[best:best + sentences])
    opener = next((o for o in ("Yes. ", "No. ") if answer.startswith(o) and not quote.startswith(o)), "")
    if opener and join_opener:  # "No, the clean target ...": a function word loses its capital, a name keeps it
        first, _, rest = quote.partition(" ")
        return f"{opener[:-2]}, {first.lower() if first.lower() in STOPWORDS else first} {rest}".rstrip()
    return opener + quote


def run(sem: Sem, cfg: Config) -> dict:
    from opensem import tracking

    started = time.time()
    fc = cfg.forge
    check_folder(sem.raw_dir)  # the likeliest mistake of all, said before the teacher is set up
    golden = _golden_for_decontamination(sem)
    base_dir = _base_model_dir(sem, cfg)
    budget = Budget(fc.max_cost_usd)
    teacher = make_teacher(cfg, sem.cache_dir / "teacher", budget, base_dir)  # checks keys before any work
    with _phase(f"reading {sem.raw_dir}"):
        docs, skipped = ingest(sem.raw_dir)
    with _phase(f"looking for credentials in {len(docs)} documents (forge.secrets={fc.secrets})"):
        docs = secrets.checked(docs, fc.secrets, sem.raw_dir)  # before anything is asked or written
    tokenizer = _tokenizer(base_dir)
    size = sum(len(d.text) for d in docs) / 2**20
    with _phase(f"cutting {len(docs)} documents ({size:.1f} MB of text) into chunks"):
        chunks = [c for doc in docs for c in chunk_document(doc, token_counter(tokenizer), fc.chunk_tokens, fc.chunk_overlap)]

    asked = spread_chunks(chunks, fc.max_pairs, fc.teacher.pairs_per_chunk)
    if len(asked) < len(chunks):
        console.print(f"forge: {len(chunks)} chunks would give more than forge.max_pairs={fc.max_pairs} pairs: asking about "
                      f"{len(asked)} of them, evenly spread over the documents", highlight=False)
    with tracking.stage_run(sem, "forge", cfg) as tracked:
        tracked.log_params({"forge.teacher.name": teacher.name, "forge.chunks": len(chunks), "forge.chunks_asked": len(asked)})
        try:
            replies = asyncio.run(_ask_all(teacher, asked, fc.teacher.pairs_per_chunk, fc.teacher.max_concurrency))
        finally:
            teacher.close()

        check_failed_requests(replies, fc.max_failed_chunks, sem.name)  # before anything is written
        kept, rejected = _filter(replies, cfg, golden)
        kept = evenly_spaced(kept, fc.max_pairs)
        train, test = split_by_chunk(kept, fc.test_fraction, fc.seed)
        from opensem.retrieval import for_sem

        with _phase("indexing the documents' passages for retrieval" if cfg.retrieval.enabled else "preparing rows"):
            system, retriever = cfg.model.system_prompt, for_sem(sem, cfg, tokenizer)
        final = sem.processed_dir
        # every output into a staging folder that replaces processed/ whole only when all of it
        # is written and logged: a failed or killed forge leaves the previous set as it was
        with staged_folder(final) as out:
            with _phase(f"writing {len(train) + len(test)} pairs" + (" with their excerpts" if retriever else "")):
                preference: list[dict] = []
                atomic_write_jsonl(out / "train.jsonl", reading_rows(train, system, retriever, fc.reading, fc.seed, preference))
                atomic_write_jsonl(out / "test.jsonl", (p.messages(system, retriever) for p in test))
                atomic_write_jsonl(out / "preference_train.jsonl", preference)
                atomic_write_jsonl(out / "preference_test.jsonl", held_out_preference(test, system, retriever, fc.reading))
            atomic_write_jsonl(out / "rejected.jsonl", rejected)
            # the documents as read (reflowed, markup removed): what training's cpt phase reads
            atomic_write_jsonl(out / "corpus.jsonl", ({"document": d.name, "text": d.text} for d in docs))
            if not train:  # nothing to train on: the previous output stays, the rejections are kept aside
                from opensem.errors import OpenSEMError

                atomic_write_jsonl(kept_aside := sem.cache_dir / "forge_rejected.jsonl", rejected)
                raise OpenSEMError(f"forge kept no training pairs (rejected: {dict(Counter(r['reason'] for r in rejected)) or 'none'}); "
                                   f"see {kept_aside}")
            manifest = _manifest(sem, cfg, out, docs, skipped, chunks, replies, kept, train, test, rejected,
                                 teacher, retriever, budget, started)
            atomic_write_json(out / "manifest.json", manifest)
            _log_outputs(sem, tracked, manifest, out, final, train, test, system, retriever)

    _print_summary(sem, manifest)
    if 0 < len(train) < FEW_PAIRS:
        console.print(f"[yellow]only {len(train)} training pairs: a small model learns few facts from so little; "
                      f"add documents to {sem.raw_dir} or use an LLM teacher (see README)[/yellow]")
    return manifest


@contextmanager
def _phase(description: str):
    """A spinner with the time elapsed while a step with nothing to count runs (reading, chunking
    or indexing a large document takes minutes); gone when the step ends."""
    lines = LogLines(console, f"forge: {description}", None)  # without a terminal: a line at its start and end
    with Progress(SpinnerColumn(), TextColumn("[bold]forge[/bold] {task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        progress.add_task(description, total=None)
        yield
    lines.finish()


def check_failed_requests(replies: list[tuple[Chunk, Completion]], allowed: int | None, sem_name: str) -> None:
    """Stop the forge, before it writes anything, when more of the teacher's requests failed after
    the SDK's retries than forge.max_failed_chunks allows (None: none may). What came back is in
    the teacher cache: the next run asks only for the chunks that failed."""
    failed = [r for _, r in replies if r.error in ("api_error", "unusable")]
    if len(failed) <= (allowed or 0):
        return
    from opensem.errors import OpenSEMError

    kinds = Counter((r.detail or "unknown").split(":")[0] for r in failed)
    example = failed[0].detail or "unknown"
    raise OpenSEMError(
        f"{len(failed)} of {len(replies)} teacher requests failed after retries ({', '.join(f'{k} {n}' for k, n in kinds.most_common())}; "
        f"first: {example}); the previous forge output is kept. Fix the teacher and run forge again: the "
        f"{len(replies) - len(failed)} replies received are cached and not asked for again "
        f"(or --set forge.max_failed_chunks={len(failed)} to keep what came back)")


def _manifest(sem: Sem, cfg: Config, out, docs, skipped, chunks, replies, kept, train, test, rejected, teacher,
              retriever, budget: Budget, started: float) -> dict:
    """What the forge made and from what: manifest.json, which readers check the files against."""
    fc = cfg.forge
    reasons = Counter(r["reason"] for r in rejected)
    # do the training answers state what the golden and dev sets ask? (opensem/coverage.py)
    with _phase("checking which golden and dev facts the training answers and the documents state"):
        covered = coverage.as_manifest(coverage.measure(sem, [p.answer for p in train], [{"text": d.text} for d in docs]))
    text_kb = sum(len(d.text.encode()) for d in docs) / 1000  # what the teacher read, markup removed
    usage = _usage(replies, getattr(teacher, "http_requests", None))
    return {
        "sem": sem.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "teacher": teacher.name,
        "teacher_response_format": getattr(teacher, "response_format_used", None),  # openai: json_schema or json_object
        "documents": len(docs),
        "skipped_documents": [{"name": s.name, "reason": s.reason} for s in skipped],
        "chunks": len(chunks),
        "chunks_asked": sum(1 for _ in replies),  # fewer than chunks where forge.max_pairs capped them
        "max_pairs": fc.max_pairs,
        "pairs_generated": sum(len(r.result or []) for _, r in replies),
        "pairs_kept": len(kept),
        "text_kb": round(text_kb, 1),
        "pairs_per_kb": round(len(kept) / text_kb, 2) if text_kb else 0.0,
        "complete_sentence_share": round(sum(is_complete_sentence(p.answer) for p in kept) / len(kept), 3) if kept else 0.0,
        "train": len(train),
        "train_rows": len(train) * (fc.reading.copies if retriever is not None else 1),  # forge.reading.copies
        "test": len(test),
        # preference rows (chosen quote, rejected quote) for the preference stage: forge/preference_pairs.py
        "preference_train": _count_lines(out / "preference_train.jsonl"),
        "preference_test": _count_lines(out / "preference_test.jsonl"),
        "rejected": dict(sorted(reasons.items())),
        "coverage": covered,
        # the pairs' prompts carry these passages; training checks it asks the same way
        "retrieval": retrieval_settings(cfg),
        # how often the passages found for a pair's question hold its answer: retrieval's recall
        "answer_in_passages": _answer_in_passages(kept, retriever),
        "budget_exhausted": budget.exhausted,
        **usage,
        "config_digest": cfg.digest(),
        # readers (train) check the files against these: one forge's outputs, or re-run forge
        "digests": {name: sha256_file(out / f"{name}.jsonl") for name in FILES} | {"raw": _raw_digest(sem, docs)},
        "seconds": round(time.time() - started, 2),
    }


def _count_lines(path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _log_outputs(sem: Sem, tracked, manifest: dict, out, final, train, test, system, retriever) -> None:
    """The forge run's metrics, datasets (named by where they will live) and artifacts."""
    from opensem import tracking

    covered = manifest["coverage"]
    tracked.log_metrics(
        {
            "documents": manifest["documents"],
            "documents_skipped": len(manifest["skipped_documents"]),
            "chunks": manifest["chunks"],
            "pairs_generated": manifest["pairs_generated"],
            "pairs_kept": manifest["pairs_kept"],
            "pairs_per_kb": manifest["pairs_per_kb"],
            "complete_sentence_share": manifest["complete_sentence_share"],
            "pairs_train": len(train),
            "pairs_test": len(test),
            "preference_train": manifest["preference_train"],
            "preference_test": manifest["preference_test"],
            **{f"rejected_{k}": v for k, v in manifest["rejected"].items()},
            **{f"{name}_taught_share": c["taught_share"] for name, c in covered.items()},
            **{f"{name}_in_documents_share": c["in_documents_share"] for name, c in covered.items()},
            "tokens_input": manifest["tokens_input"],
            "tokens_output": manifest["tokens_output"],
            "cost_usd": manifest["cost_usd"],
            "teacher_requests": manifest["requests"],
            "cache_hits": manifest["cache_hits"],
            "seconds": manifest["seconds"],
        }
    )
    if train:
        tracking.log_jsonl_dataset(out / "train.jsonl", f"{sem.name}-train", "training", source=final / "train.jsonl")
    if test:
        tracking.log_jsonl_dataset(out / "test.jsonl", f"{sem.name}-test", "testing", source=final / "test.jsonl")
    if manifest["preference_train"]:
        tracking.log_jsonl_dataset(out / "preference_train.jsonl", f"{sem.name}-preference", "preference",
                                   source=final / "preference_train.jsonl")
    tracked.log_artifact(out / "manifest.json", "forge")
    tracked.log_artifact(out / "rejected.jsonl", "forge")
    tracked.log_text("".join(_jsonl(p.messages(system, retriever)) for p in train[:20]), "forge/sample_pairs.jsonl")


def evenly_spaced(items: list, n: int | None) -> list:
    """At most n of the items, evenly spaced over the list and in its order (all when n is None
    or there are no more than n)."""
    if n is None or len(items) <= n:
        return items
    return [items[i * len(items) // n] for i in range(n)]


def spread_chunks(chunks: list[Chunk], max_pairs: int | None, pairs_per_chunk: int | None) -> list[Chunk]:
    """The chunks to ask the teacher about: all, or (forge.max_pairs) enough for about max_pairs
    pairs at pairs_per_chunk (else the LLM teachers' default) each, evenly spread over the corpus."""
    from opensem.forge.teachers import DEFAULT_PAIRS_PER_CHUNK

    if max_pairs is None:
        return chunks
    return evenly_spaced(chunks, -(-max_pairs // (pairs_per_chunk or DEFAULT_PAIRS_PER_CHUNK)))


async def _ask_all(teacher, chunks: list[Chunk], n_pairs: int | None, concurrency: int) -> list[tuple[Chunk, Completion]]:
    gate = asyncio.Semaphore(concurrency)
    progress = Progress(
        TextColumn("[bold]forge[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[pairs]} pairs  ${task.fields[cost]:.4f}"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    totals = {"pairs": 0, "cost": 0.0}
    lines = LogLines(console, f"forge: teacher {teacher.name}", len(chunks), "chunks")

    async def one(chunk: Chunk) -> tuple[Chunk, Completion]:
        async with gate:
            reply = await teacher.ask(chunk, n_pairs)
        totals["pairs"] += len(reply.result or [])
        totals["cost"] += reply.cost_usd
        progress.update(task, advance=1, **totals)
        lines.advance(note=f"{totals['pairs']} pairs, ${totals['cost']:.4f}")
        return chunk, reply

    with progress:
        task = progress.add_task(f"{teacher.name}", total=len(chunks), **totals)
        try:
            replies = list(await asyncio.gather(*(one(c) for c in chunks)))
            lines.finish(f"{totals['pairs']} pairs, ${totals['cost']:.4f}")
            return replies
        finally:
            await teacher.aclose()


def _filter(replies: list[tuple[Chunk, Completion]], cfg: Config, golden: list[dict]) -> tuple[list[Pair], list[dict]]:
    fc = cfg.forge
    decon = Decontaminator(golden, fc.decontam_threshold)
    dedup = NearDuplicates(fc.dedup_threshold)
    extractive = fc.teacher.provider == "extractive"  # its answers are the chunk's own words: checked as such
    kept: list[Pair] = []
    rejected: list[dict] = []
    lines = LogLines(console, "forge: filtering", sum(len(r.result or []) for _, r in replies), "pairs")
    for chunk, reply in replies:
        lines.advance(len(reply.result or []), note=f"{len(kept)} kept")
        if reply.error and not reply.result:
            rejected.append({"reason": reply.error, "chunk": chunk.id, "question": None, "answer": None, "detail": reply.detail})
            continue
        chunk_words = content_words(chunk.heading + " " + chunk.text)
        for question, answer in reply.result or []:
            reason = check_pair(question, answer, chunk.text, fc, chunk_words)
            if reason is None and extractive:
                reason = unfaithful(question, answer, chunk)
            elif reason is None and contradicts_source(answer, chunk.text):
                reason = "polarity"  # an LLM teacher's words: only the polarity of what it restates is checked
            if reason is None and decon.is_contaminated(question, answer):
                reason = "contaminated"
            if reason is None and dedup.seen(question, answer):
                reason = "duplicate"
            if reason:
                rejected.append({"reason": reason, "chunk": chunk.id, "question": question, "answer": answer})
            else:
                kept.append(Pair(question, answer, chunk))
    lines.finish(f"{len(kept)} kept")
    return kept, rejected


def split_by_chunk(pairs: list[Pair], test_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Seeded split that keeps all pairs of one chunk on the same side.

    Chunks go to the held-out side in shuffled order until it holds its share; a chunk that would
    take it past twice its share is passed over, so a few large chunks (a small SEM) cannot make
    the held-out split bigger than the training one. At least one chunk stays on each side."""
    sizes = Counter(p.chunk.id for p in pairs)
    ids = sorted(sizes)
    random.Random(seed).shuffle(ids)
    target = round(len(pairs) * test_fraction)
    if len(ids) >= 2:
        target = max(target, 1)
    test_ids: set[str] = set()
    held = 0
    for cid in ids:
        if held >= target or len(test_ids) == len(ids) - 1:
            break
        if held + sizes[cid] > 2 * target:
            continue
        test_ids.add(cid)
        held += sizes[cid]
    if target and not test_ids and len(ids) >= 2:  # every chunk is too big: hold out the smallest
        test_ids.add(min(ids, key=lambda cid: sizes[cid]))
    return [p for p in pairs if p.chunk.id not in test_ids], [p for p in pairs if p.chunk.id in test_ids]


def _usage(replies: list[tuple[Chunk, Completion]], http_requests: int | None) -> dict:
    """Tokens of every reply used; cost and requests of this run only (cache hits are free)."""
    fresh = [r for _, r in replies if not r.cached]
    cached = [r for _, r in replies if r.cached]
    return {
        "tokens_input": sum(r.input_tokens for _, r in replies),
        "tokens_output": sum(r.output_tokens for _, r in replies),
        "cost_usd": round(sum(r.cost_usd for r in fresh), 6),
        "requests": http_requests if http_requests is not None else sum(r.calls for r in fresh),
        "cache_hits": len(cached),
    }


def _golden_for_decontamination(sem: Sem) -> list[dict]:
    """The golden set's items and the dev set's: training must see neither set's questions."""
    from opensem.golden import load_golden

    if not sem.golden_set.is_file():
        console.print(f"[yellow]no golden set at {sem.golden_set}: its decontamination skipped[/yellow]")
    held_apart = [path for path in (sem.golden_set, sem.dev_set) if path.is_file()]
    return [item.model_dump() for path in held_apart for item in load_golden(path)]


def _base_model_dir(sem: Sem, cfg: Config):
    from opensem.models import resolve_base_model

    return resolve_base_model(cfg.model.base, sem.base_models_dir)


def _tokenizer(model_dir):
    """The base model's tokenizer: chunks and retrieval passages are measured in its tokens."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _answer_in_passages(pairs: list[Pair], retriever) -> float | None:
    from opensem.retrieval import found

    return round(sum(found(p.answer, retriever.context(p.question)) for p in pairs) / len(pairs), 3) if retriever and pairs else None


def _raw_digest(sem: Sem, docs) -> str:
    import hashlib

    h = hashlib.sha256()
    for doc in sorted(docs, key=lambda d: d.name):
        h.update(doc.name.encode() + b"\0" + doc.text.encode() + b"\0")
    return h.hexdigest()


def _jsonl(row: dict) -> str:
    import json

    return json.dumps(row, ensure_ascii=False) + "\n"


def _print_summary(sem: Sem, m: dict) -> None:
    table = Table(title=f"forge: {sem.name}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("documents", f"{m['documents']} used, {len(m['skipped_documents'])} skipped")
    for s in m["skipped_documents"]:
        table.add_row("  skipped", f"{s['name']}: {s['reason']}")
    asked = m.get("chunks_asked", m["chunks"])
    table.add_row("chunks", str(m["chunks"]) + (f" ({asked} asked, evenly spread: forge.max_pairs={m['max_pairs']})" if asked < m["chunks"] else ""))
    table.add_row("teacher", m["teacher"] + (f" (response_format {m['teacher_response_format']})" if m.get("teacher_response_format") else ""))
    table.add_row("pairs", f"{m['pairs_generated']} generated, {m['pairs_kept']} kept -> {m['train']} train / {m['test']} test")
    for reason, n in m["rejected"].items():
        table.add_row(f"  rejected: {reason}", str(n))
    table.add_row("yield", f"{m['pairs_per_kb']} pairs per KB of text ({m['text_kb']} KB); "
                           f"{m['complete_sentence_share']:.0%} of answers are complete sentences")
    for name, c in m["coverage"].items():
        table.add_row(f"{name.replace('_', ' ')} facts", f"{c['taught']} of {c['items']} items stated by a training answer, "
                                                         f"{c['in_documents']} by a sentence of the documents")
    if m.get("answer_in_passages") is not None:
        table.add_row("open book", f"the passages found for a pair's question hold its answer for {m['answer_in_passages']:.0%} of pairs")
    table.add_row("requests", f"{m['requests']} sent, {m['cache_hits']} from cache")
    table.add_row("tokens", f"{m['tokens_input']} in / {m['tokens_output']} out")
    table.add_row("cost", f"${m['cost_usd']:.4f}" + ("  (budget reached: stopped early)" if m["budget_exhausted"] else ""))
    table.add_row("written", str(sem.processed_dir))
    Console().print(table)
