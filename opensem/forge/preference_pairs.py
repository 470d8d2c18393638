"""Preference pairs from the documents, without an LLM (forge.reading.rejected_per_pair).

Supervised reading practice shows the model the one right quote; it never shows a wrong choice
and says it is wrong. A preference pair does: for a training question asked with its excerpts,
`chosen` is the quote that answers (the answering excerpt's sentence that states the answer, and
the next, as reading practice writes it) and each `rejected` is a quote of another sentence of
the same excerpts, in the same shape. Hard negatives first: the sentences that share the most
content words with the question (those a reader that matches words would pick), the one the
retriever ranks first among them when it is not the answer. A sentence that also states the
answer is never rejected.

The rows are TRL's conversational preference format: {"prompt": [system, user], "chosen":
[assistant], "rejected": [assistant]}, one row per rejected quote. They come from the forge's
kept pairs, so they are decontaminated and split with them.
"""

from __future__ import annotations

from opensem.generate import build_messages
from opensem.retrieval import excerpt_sentences, found, quotable_sentences
from opensem.text.words import content_words


def quotes(excerpt: str, sentences: int) -> list[tuple[str, str]]:
    """(first sentence, quote) for every sentence of an excerpt that can start a quote: the
    sentence and the ones after it, `sentences` in all (heading lines hold none)."""
    quotable = quotable_sentences(excerpt)
    return [(s, " ".join(quotable[i:i + sentences])) for i, s in enumerate(quotable)]


def rejected_quotes(question: str, answer: str, chosen: str, excerpts: list[str], sentences: int, n: int,
                    top_ranked: str | None = None) -> list[str]:
    """Up to n quotes of the excerpts that do not answer, hardest first: the retriever's
    top-ranked sentence (when it is not the answer), then by the share of the question's content
    words they hold. None states the answer or holds the chosen quote's first sentence."""
    asked = content_words(question)
    chosen_first = excerpt_sentences(chosen)[0] if excerpt_sentences(chosen) else chosen
    hardness: dict[str, float] = {}  # quote -> share of the question's words; above 1: the retriever's pick
    for excerpt in excerpts:
        for first, quote in quotes(excerpt, sentences):
            if first in chosen or chosen_first in quote or found(answer, quote) or quote in hardness:
                continue
            overlap = len(asked & content_words(first)) / len(asked) if asked else 0.0
            hardness[quote] = 2.0 if first == top_ranked else overlap
    return sorted(hardness, key=lambda q: -hardness[q])[:n]


def preference_rows(question: str, system_prompt: str | None, shown: str, chosen: str, rejected: list[str]) -> list[dict]:
    """One TRL preference row per rejected quote, the prompt as the model is asked (build_messages)."""
    prompt = build_messages(question, system_prompt, shown)
    return [{"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
             "rejected": [{"role": "assistant", "content": r}]} for r in rejected]
