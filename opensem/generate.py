"""Answering questions with a model: one prompt format and one decoding setup for everything
that compares models (baseline, evaluate, the served model), so their answers are comparable."""

from __future__ import annotations


def build_messages(question: str, system_prompt: str | None, context: str | None = None) -> list[dict]:
    """The chat a model is asked with; retrieved passages (context) lead the user turn."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    if context:
        from opensem.retrieval import HEADER, QUESTION

        question = f"{HEADER}\n\n{context}\n\n{QUESTION}{question}"
    return messages + [{"role": "user", "content": question}]


def question_of(user_turn: str) -> str:
    """The question of a user turn build_messages wrote, with or without passages."""
    from opensem.retrieval import HEADER, QUESTION

    return user_turn.rsplit(f"\n\n{QUESTION}", 1)[-1] if user_turn.startswith(HEADER) else user_turn


def answer_questions(model, tokenizer, questions: list[str], system_prompt: str | None, max_new_tokens: int = 96, batch_size: int = 8,
                     retriever=None, answer: str = "free", quote_sentences: int = 2) -> list[str]:
    """Greedy answers, batched with left padding (a batch of one gives the same tokens); with a
    retriever (opensem/retrieval.py) each question is asked with its passages. With
    answer="quote" the model chooses a sentence of those passages instead (opensem/quote.py)."""
    if answer == "quote":
        from opensem.quote import model_scorer, quote_answers

        model.eval()
        return [q.text for q in quote_answers(tokenizer, quote_chats(questions, system_prompt, retriever), quote_sentences,
                                              model_scorer(model, tokenizer))]
    chats = (build_messages(q, system_prompt, retriever.context(q) if retriever else None) for q in questions)
    return answer_chats(model, tokenizer, list(chats), max_new_tokens, batch_size)


def quote_chats(questions: list[str], system_prompt: str | None, retriever) -> list[tuple[list[dict], list[str]]]:
    """Each question's chat, asked with its excerpts as free generation asks it, and those
    excerpts: what quoted answers (opensem/quote.py) choose a sentence among."""
    from opensem.errors import OpenSEMError

    if retriever is None:
        raise OpenSEMError("generation.answer=quote chooses among the excerpts of the documents: it needs "
                           "retrieval.enabled=true (or --set generation.answer=free)")
    searched = [(q, retriever.search(q)) for q in questions]
    return [(build_messages(q, system_prompt, retriever.shown_text(q, excerpts)), excerpts) for q, excerpts in searched]


def answer_chats(model, tokenizer, chats: list[list[dict]], max_new_tokens: int = 96, batch_size: int = 8) -> list[str]:
    """Greedy answers to whole chats (each a list of messages ending with the user turn)."""
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    answers: list[str] = []
    model.eval()
    for start in range(0, len(chats), batch_size):
        prompts = [tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) for chat in chats[start:start + batch_size]]
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        for row in out[:, enc["input_ids"].shape[1]:]:
            answers.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers


def answer_chat(model, tokenizer, chat: list[dict], max_new_tokens: int = 96, streamer=None) -> dict:
    """One greedy answer to one chat, the tokens answer_chats gives it, with its token counts and
    whether it ended by itself (stopped) or at max_new_tokens. A transformers streamer, if given,
    receives the text as it is generated (the OpenAI endpoint's streaming, opensem/serve/)."""
    import torch

    prompt = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    enc = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
    model.eval()
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                             eos_token_id=tokenizer.eos_token_id, streamer=streamer)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    stopped = bool(new) and new[-1] == tokenizer.eos_token_id or len(new) < max_new_tokens
    return {"text": tokenizer.decode(new, skip_special_tokens=True).strip(), "prompt_tokens": enc["input_ids"].shape[1],
            "completion_tokens": len(new), "stopped": stopped}
