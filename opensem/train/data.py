"""Read and check the forge output that training consumes.

Every problem is one line that names the file, the line and how to fix it, raised before any
model is loaded."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

from opensem.errors import OpenSEMError


def check_forge_output(processed_dir: Path, sem_name: str) -> dict | None:
    """The forge's manifest, after checking that the files beside it are the ones it wrote (their
    digests): a forge killed between its writes, a file deleted or edited by hand, or files from
    two forge runs are refused with one line. None where there is no manifest (pairs written by
    hand, without a forge: nothing to check them against)."""
    path = processed_dir / "manifest.json"
    if not path.is_file():
        return None
    rerun = f"re-run `opensem forge --sem {sem_name}`"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        digests = manifest["digests"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise OpenSEMError(f"{path} is damaged ({type(exc).__name__}); {rerun}") from None
    from opensem.io import sha256_file

    for name in ("train", "test", "corpus", "preference_train", "preference_test"):
        wanted, file = digests.get(name), processed_dir / f"{name}.jsonl"
        if wanted is None:
            continue  # a manifest from before this file existed
        if not file.is_file():
            raise OpenSEMError(f"{file} is missing, though the forge wrote it with {path.name}; {rerun}")
        if sha256_file(file) != wanted:
            raise OpenSEMError(f"{file} is not the file the forge wrote with {path.name} (changed since, or from another "
                               f"forge run); {rerun}")
    return manifest


def load_conversations(path: Path, sem_name: str, required: bool = True) -> list[dict]:
    """Rows of {"messages": [...]} with at least one user and one assistant turn."""
    if not path.is_file():
        if not required:
            return []
        raise OpenSEMError(f"no training data at {path}: run `opensem forge --sem {sem_name}` first")
    rows: list[dict] = []
    for number, row in _jsonl(path):
        messages = row.get("messages") if isinstance(row, dict) else None
        roles = [m.get("role") for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
        if "user" not in roles or "assistant" not in roles or not all(isinstance(m.get("content"), str) for m in messages):
            raise OpenSEMError(
                f'{path} line {number}: expected {{"messages": [{{"role": "user", "content": ...}}, '
                f'{{"role": "assistant", "content": ...}}]}}'
            )
        rows.append({"messages": messages})
    if required and not rows:
        raise OpenSEMError(f"{path} is empty: forge kept no pairs; check data/{sem_name}/processed/rejected.jsonl")
    return rows


_POLARITY = re.compile(r"^\s*(?P<word>Yes|No)\b")


def polarity(row: dict) -> str | None:
    """'yes' or 'no' for a pair whose answer opens with that word, else None."""
    found = _POLARITY.match(row["messages"][-1]["content"])
    return found["word"].lower() if found else None


def balance_yes_no(rows: list[dict], seed: int) -> tuple[list[dict], int]:
    """The rows, plus repeats of the answers opening with the rarer of Yes/No until both open
    as many answers (experimental.balance_yes_no). Documents state far more than they deny, so a
    teacher that asks about their statements writes mostly Yes answers, and a small model
    learns to open every answer with Yes, denials included. Nothing is dropped or reworded;
    with one polarity absent there is nothing to repeat. Returns (rows, repeats added)."""
    by_word = {"yes": [r for r in rows if polarity(r) == "yes"], "no": [r for r in rows if polarity(r) == "no"]}
    rare, common = sorted(by_word.values(), key=len)
    if not rare or len(rare) == len(common):
        return rows, 0
    rng = random.Random(seed)
    extra = []
    while len(rare) + len(extra) < len(common):  # whole shuffled rounds of the rare rows, the last one cut short
        round_ = rare[:]
        rng.shuffle(round_)
        extra += round_[:len(common) - len(rare) - len(extra)]
    return rows + extra, len(extra)


def check_corpus(path: Path, sem_name: str) -> None:
    if not path.is_file():
        raise OpenSEMError(f"no corpus at {path}: training.cpt_epochs > 0 needs it (forge writes it); "
                           f"run `opensem forge --sem {sem_name}` again, or --set training.cpt_epochs=0")


def corpus_windows(path: Path, sem_name: str, tokenizer, max_length: int, passes: int = 1,
                   shuffle_seed: int | None = None) -> list[dict]:
    """The forge's copy of the documents (corpus.jsonl) as token windows of at most max_length
    for continued pre-training: each document tokenized whole, ended with EOS, and cut into
    consecutive windows (a short last window is kept; it is the end of a document).

    shuffle_seed set: `passes` copies of the corpus, each with the sentences of every section in
    another order (see shuffled_sections), so a fact is learnt as a statement about its section
    and not as what follows the sentence before it."""
    check_corpus(path, sem_name)
    documents = []
    for number, row in _jsonl(path):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise OpenSEMError(f'{path} line {number}: expected {{"document": ..., "text": ...}}; re-run forge')
        documents.append(row["text"])
    texts = documents if shuffle_seed is None else [
        shuffled_sections(text, random.Random(f"{shuffle_seed}/{n}/{p}")) for p in range(passes) for n, text in enumerate(documents)]
    windows: list[dict] = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        windows += [{"input_ids": ids[i:i + max_length]} for i in range(0, len(ids), max_length)]
    if not windows:
        raise OpenSEMError(f"{path} is empty: forge read no documents; check data/{sem_name}/raw")
    return windows


def pair_windows(rows: list[dict], tokenizer) -> list[dict]:
    """Question/answer pairs as continued pre-training windows: each conversation rendered with
    the chat template and tokenized whole (rows already fit training.max_length)."""
    return [{"input_ids": list(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])}
            for row in rows]


def shuffled_sections(text: str, rng: random.Random) -> str:
    """The document with each section's heading path ("Title > Section") first and its sentences
    after it in a random order. Facts stated by several sentences in sequence lose their order;
    what is kept is which section says what (measured: see experimental.cpt_shuffle_sentences)."""
    from opensem.text.chunk import sections
    from opensem.text.reflow import split_sentences

    parts = []
    for heading, paragraphs in sections(text):
        sentences = [s for paragraph in paragraphs for s in split_sentences(paragraph)]
        rng.shuffle(sentences)
        parts.append((f"{heading}\n\n" if heading else "") + " ".join(sentences))
    return "\n\n".join(parts)


def _jsonl(path: Path):
    """(line number, parsed row) for every non-blank line; a line that is not JSON is one error."""
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise OpenSEMError(f"{path} line {number}: not valid JSON ({exc.msg}); re-run forge or fix the line") from None
