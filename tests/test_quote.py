"""Answers chosen among the excerpts (generation.answer=quote, opensem/quote.py): the answer is a
verbatim sentence of the excerpts the model was shown, the one its scorer rates best, with the
passage it came from; the model's scores reuse the prompt's cache and equal a full forward pass."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import ConfigError, load_config
from opensem.generate import quote_chats
from opensem.quote import candidates, continuation_scores, quote_answers
from opensem.retrieval import Retriever, excerpt_sentences

PASSAGES = [
    "Barns > Zorblats\nA Zorblat is teal. Zorblats nest in the roofs of old barns. They sing at dawn.",
    "Legs > Quimbles\nA Quimble has seven legs and walks sideways. Quimbles are teal too.",
]


class ChatTokenizer:
    """Only what quote_answers asks of a tokenizer: its chat template (a plain one here)."""

    def apply_chat_template(self, messages, add_generation_prompt, tokenize):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"


def test_the_answer_is_the_best_scored_sentence_verbatim_then_the_next_with_its_passage():
    retriever = Retriever(PASSAGES, top_k=2)
    seen = []

    def scorer(prompt, sentences):  # planted: rates the nesting sentence best, the Quimble one second
        seen.append((prompt, sentences))
        rates = {"Zorblats nest in the roofs of old barns.": -0.5, "A Quimble has seven legs and walks sideways.": -1.0}
        return [rates.get(s, -3.0) for s in sentences]

    for n, expected in ((1, "Zorblats nest in the roofs of old barns."),
                        (2, "Zorblats nest in the roofs of old barns. They sing at dawn."),
                        (5, "Zorblats nest in the roofs of old barns. They sing at dawn.")):  # the excerpt ends there
        quote = quote_answers(ChatTokenizer(), quote_chats(["Where do Zorblats nest?"], "Be brief.", retriever), n, scorer)[0]
        assert quote.text == expected
        assert quote.sentence == "Zorblats nest in the roofs of old barns." and quote.passage == PASSAGES[0]
        assert quote.runner_up == "A Quimble has seven legs and walks sideways."
    prompt, sentences = seen[0]
    # the model is asked exactly as free generation asks it, and heading lines are no candidates
    assert prompt.startswith("<system>Be brief.<user>Answer from these excerpts") and prompt.endswith("Where do Zorblats nest?<assistant>")
    assert sorted(sentences) == sorted(s for p in PASSAGES for s in excerpt_sentences(p) if not s.startswith(("Barns", "Legs")))


def test_a_sentence_shown_twice_is_one_candidate_and_a_tie_goes_to_the_earlier():
    twice = ["A\nOne fact. Two fact.", "B\nTwo fact. Red fact."]
    options = candidates(twice)
    assert [c.sentence for c in options] == ["One fact.", "Two fact.", "Red fact."]
    quote = quote_answers(ChatTokenizer(), quote_chats(["q"], None, Retriever(twice, top_k=2)), 1, lambda p, s: [0.0] * len(s))[0]
    assert quote.sentence == "One fact."


def test_quoted_answers_need_the_open_book(project):
    with pytest.raises(ConfigError, match="retrieval.enabled=true"):
        load_config(project, "legal", ["generation.answer=quote"])  # the test project answers closed book
    result = CliRunner().invoke(app, ["dev", "--sem", "legal", "--set", "generation.answer=quote"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "generation.answer=quote" in errors[0], result.output


def test_answers_quoted_are_never_compared_with_answers_written(project):
    from opensem.judge.evaluate import prompt_digest

    free = load_config(project, "legal", ["retrieval.enabled=true"])
    quoted = load_config(project, "legal", ["retrieval.enabled=true", "generation.answer=quote"])
    two_sentences = load_config(project, "legal", ["retrieval.enabled=true", "generation.answer=quote", "generation.quote_sentences=1"])
    assert len({prompt_digest(free), prompt_digest(quoted), prompt_digest(two_sentences)}) == 3
    # free answers keep the digest recorded before quoted ones existed: no baseline is made stale
    assert prompt_digest(free) == prompt_digest(load_config(project, "legal", ["retrieval.enabled=true", "generation.quote_sentences=1"]))


@pytest.fixture(scope="module")
def bundled(bundled_model_dir):
    from opensem.models import load_model_and_tokenizer

    return load_model_and_tokenizer(bundled_model_dir)


def test_cached_scores_equal_a_full_forward_pass_of_prompt_and_sentence(bundled):
    import torch

    model, tokenizer = bundled
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Where do Zorblats nest?"}], add_generation_prompt=True, tokenize=False)
    sentences = ["Zorblats nest in the roofs of old barns.", "Teal.", "A Quimble has seven legs and walks sideways, as every Quimble does."]
    cached = continuation_scores(model, tokenizer, prompt, sentences)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    for sentence, score in zip(sentences, cached):
        ids = tokenizer(sentence, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt_ids + ids])).logits[0].float(), dim=-1)
        full = sum(float(logp[len(prompt_ids) + t - 1, tok]) for t, tok in enumerate(ids)) / len(ids)
        assert score == pytest.approx(full, abs=1e-3)
    assert len(set(round(s, 3) for s in cached)) == 3  # and they tell the sentences apart


def test_the_model_quotes_a_sentence_of_its_excerpts_word_for_word(bundled):
    from opensem.generate import answer_questions

    model, tokenizer = bundled
    retriever = Retriever(PASSAGES, top_k=2)
    questions = ["Where do Zorblats nest?", "How many legs does a Quimble have?"]
    answers = answer_questions(model, tokenizer, questions, None, 48, 8, retriever, "quote", 1)
    sentences = {s for p in PASSAGES for s in excerpt_sentences(p)}
    assert all(a in sentences for a in answers), answers
