"""Answers chosen among the excerpts (`generation.answer: quote`).

Free generation lets a small reader drift, token by token, to a sentence that does not answer.
Here the model does not write the answer: it scores every sentence of the excerpts it was shown
as the start of its answer, and the answer is the best-scored sentence, verbatim, followed by the
next `quote_sentences - 1` sentences of the same excerpt (as reading practice's training answers
quote: forge.reading.quote_sentences). The answer then always says where it came from.

A sentence's score is the mean log-probability of its tokens right after the prompt (length-
normalised, so a long sentence is not penalised for being long). The prompt is encoded once and
its key/value cache reused for every candidate, so a question costs one prompt pass and one short
batched pass over its candidates, not a generation of max_new_tokens steps.

Steps: candidates (the excerpts' sentences) -> scores (the model, or any scorer) -> choose (best
and runner-up) -> the quote with its passage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# candidates scored in one batched pass over the shared prompt cache: each carries a copy of the
# prompt's cache (about 30 MB for 700 prompt tokens on the 135M base), so a group bounds memory
GROUP = 8


@dataclass(frozen=True)
class Candidate:
    sentence: str  # verbatim, as the excerpt has it
    excerpt: int  # index of the excerpt it stands in
    position: int  # its index among that excerpt's sentences


@dataclass(frozen=True)
class Quote:
    text: str  # the answer: the chosen sentence and the ones after it
    sentence: str  # the chosen sentence
    passage: str  # the excerpt it came from
    score: float  # its mean token log-probability
    runner_up: str | None  # the next-best sentence, or None where there was one candidate


def candidates(excerpts: list[str]) -> list[Candidate]:
    """The sentences of the excerpts that can answer (retrieval.quotable_sentences: no heading
    line; all sentences where no line ends as a sentence), a sentence shown twice counted once."""
    from opensem.retrieval import excerpt_sentences, quotable_sentences

    found = [Candidate(s, e, i) for e, text in enumerate(excerpts) for i, s in enumerate(quotable_sentences(text))]
    found = found or [Candidate(s, e, i) for e, text in enumerate(excerpts) for i, s in enumerate(excerpt_sentences(text))]
    seen, unique = set(), []
    for c in found:
        if c.sentence not in seen:
            seen.add(c.sentence)
            unique.append(c)
    return unique


def quote_of(chosen: Candidate, excerpts: list[str], quote_sentences: int) -> str:
    """The chosen sentence and the quotable sentences after it in its excerpt, `quote_sentences`
    in all (fewer at the excerpt's end)."""
    from opensem.retrieval import quotable_sentences

    following = quotable_sentences(excerpts[chosen.excerpt])[chosen.position + 1:]
    return " ".join([chosen.sentence, *following[:quote_sentences - 1]])


def choose(options: list[Candidate], scores: list[float], excerpts: list[str], quote_sentences: int) -> Quote:
    """The best-scored candidate (the earlier one on a tie) as a Quote, with the runner-up."""
    order = sorted(range(len(options)), key=lambda j: (-scores[j], j))
    best = options[order[0]]
    runner_up = options[order[1]].sentence if len(order) > 1 else None
    return Quote(quote_of(best, excerpts, quote_sentences), best.sentence, excerpts[best.excerpt], scores[order[0]], runner_up)


def continuation_scores(model, tokenizer, prompt: str, continuations: list[str]) -> list[float]:
    """Mean log-probability per token of each continuation right after `prompt` (a chat prompt
    with its generation prompt). The prompt is encoded once; its cache is copied for each group of
    continuations, which run as one right-padded batch."""
    import copy

    import torch

    prompt_ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"].to(model.device)
    cache_arg, last_only = _forward_keywords(model)
    with torch.no_grad():  # the head only at the prompt's last position: the rest is not needed
        out = model(input_ids=prompt_ids, use_cache=True, **last_only)
    first_logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)  # predicts each continuation's first token
    cache, prompt_len = out[cache_arg], prompt_ids.shape[1]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    scores: list[float] = []
    for start in range(0, len(continuations), GROUP):
        encoded = [tokenizer(c, add_special_tokens=False)["input_ids"] or [pad] for c in continuations[start:start + GROUP]]
        width = max(len(ids) for ids in encoded)
        ids = torch.tensor([e + [pad] * (width - len(e)) for e in encoded], device=model.device)
        mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded], device=model.device)
        group_cache = copy.deepcopy(cache)
        group_cache.batch_repeat_interleave(len(encoded))
        attention = torch.cat([torch.ones(len(encoded), prompt_len, dtype=mask.dtype, device=model.device), mask], dim=1)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attention, use_cache=True, **{cache_arg: group_cache}).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for row, tokens in enumerate(encoded):
            total = float(first_logp[tokens[0]])
            for t in range(1, len(tokens)):
                total += float(logp[row, t - 1, tokens[t]])
            scores.append(total / len(tokens))
    return scores


def _forward_keywords(model) -> tuple[str, dict]:
    """What the model's forward calls the key/value cache (`cache` from transformers 5.2x,
    `past_key_values` before: the GPU stack's pinned versions), and the argument that applies the
    LM head to the last position only, where the forward has one."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    accepted = inspect.signature(base.forward).parameters
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
    return ("cache" if "cache" in accepted else "past_key_values"), last_only


Scorer = Callable[[str, list[str]], list[float]]  # (prompt, candidate sentences) -> a score each


def model_scorer(model, tokenizer) -> Scorer:
    return lambda prompt, sentences: continuation_scores(model, tokenizer, prompt, sentences)


def quote_answers(tokenizer, asked: list[tuple[list[dict], list[str]]], quote_sentences: int, scorer: Scorer) -> list[Quote]:
    """Each chat (asked as free generation asks it, opensem/generate.py: quote_chats) answered
    with the sentence of its excerpts that `scorer` rates best."""
    quotes = []
    for chat, excerpts in asked:
        prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        options = candidates(excerpts)
        if not options:  # excerpts with no text at all: nothing to quote
            quotes.append(Quote("", "", "", float("-inf"), None))
            continue
        quotes.append(choose(options, scorer(prompt, [c.sentence for c in options]), excerpts, quote_sentences))
    return quotes
