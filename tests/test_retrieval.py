"""Open book (retrieval.enabled): the passages a question is asked with, in every place a model is
asked - the forge's training pairs, the baseline and the adapter, the served model - and the
guards that keep a closed-book adapter from being compared with an open-book one."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import load_config
from opensem.generate import build_messages, question_of
from opensem.io import read_jsonl
from opensem.retrieval import HEADER, LEAD, QUESTION, Retriever, found, settings
from opensem.workspace import open_sem

pytestmark = pytest.mark.usefixtures("bundled_model_dir")

PASSAGES = [
    "Zorblats\nA Zorblat is teal. Zorblats nest in the roofs of old barns.",
    "Quimbles\nA Quimble has seven legs and walks sideways.",
    "Frobnits\nFrobnits live in Oslo, where the winters are long.",
]


def test_the_passage_sharing_the_questions_words_ranks_first_and_ties_keep_document_order():
    r = Retriever(PASSAGES, top_k=2)
    assert r.search("How many legs does a Quimble have?")[0] == PASSAGES[1]
    assert r.search("Where do Frobnits live?")[0] == PASSAGES[2]
    assert r.search("What colour is a Zorblat?") == r.search("What colour is a Zorblat?")  # deterministic
    assert r.search("Tell me about nothing in particular") == PASSAGES[:2]  # all scores 0: the first ones
    assert len(r.context("Where do Frobnits live?").split("\n\n")) == 2


MEANING = [
    "Cats\nA cat is a small furry pet that purrs and chases mice.",
    "Automobiles\nAn automobile burns petrol in its engine to move along the road.",
    "Weather\nRain falls from clouds when the air cools.",
]


def test_hybrid_ranking_finds_a_passage_that_shares_no_word_with_the_question():
    question = "What fuel does a car use?"  # no word of it is in any passage
    assert Retriever(MEANING, top_k=1, method="tfidf").search(question) == [MEANING[0]]  # all scores 0: the first
    hybrid = Retriever(MEANING, top_k=1, method="hybrid")
    assert hybrid.search(question) == [MEANING[1]]
    # where the words do match, the fused ranking keeps the TF-IDF winner
    assert Retriever(PASSAGES, top_k=1, method="hybrid").search("How many legs does a Quimble have?") == [PASSAGES[1]]


def test_hybrid_ranking_encodes_each_question_and_sentence_once_and_ranks_as_a_fresh_retriever():
    """The forge ranks the sentences of the same passages for many questions: each distinct text
    goes through MiniLM once, and the rankings are those of a retriever that remembers nothing."""
    remembering, fresh = Retriever(MEANING + PASSAGES, top_k=2, method="hybrid"), Retriever(MEANING + PASSAGES, top_k=2, method="hybrid")
    encoded: list[str] = []
    real = remembering._embedder.encode
    remembering._embedder.encode = lambda texts: encoded.extend(texts) or real(texts)
    asked = ["What fuel does a car use?", "What colour is a Zorblat?", "Where do Frobnits live?", "What fuel does a car use?"]
    for question in asked:
        assert remembering.top_sentences(question, 3, MEANING + PASSAGES) == fresh.top_sentences(question, 3, MEANING + PASSAGES)
        assert remembering.search(question) == fresh.search(question)
        fresh._vectors.clear()
    assert sorted(encoded) == sorted(set(encoded))  # no text encoded twice
    assert set(asked) <= set(encoded) and "A Zorblat is teal." in encoded


def test_an_unknown_ranking_method_is_one_clear_error():
    from opensem.errors import OpenSEMError

    with pytest.raises(OpenSEMError, match="retrieval.method 'bm25' is not one of tfidf, hybrid"):
        Retriever(PASSAGES, top_k=1, method="bm25")


def test_settings_recorded_before_the_method_and_unit_existed_read_as_tfidf_chunks(project):
    from opensem.retrieval import recorded

    old = {"enabled": True, "top_k": 2, "passage_tokens": 256}
    assert recorded(old) == settings(load_config(project, "legal", ["retrieval.enabled=true", "retrieval.method=tfidf"]))
    assert recorded(old) != settings(load_config(project, "legal", ["retrieval.enabled=true", "retrieval.method=hybrid"]))
    assert recorded(None) is None and settings(load_config(project, "legal")) is None
    # sentence units are recorded with their window, so a chunk-unit adapter is never asked with them
    sentences = settings(load_config(project, "legal", ["retrieval.enabled=true", "retrieval.unit=sentence"]))
    assert sentences["unit"] == "sentence" and sentences["window"] == 1 and recorded(old) != sentences


def test_passages_lead_the_user_turn_and_the_question_reads_back_from_it():
    messages = build_messages("Where do Frobnits live?", "Answer briefly.", PASSAGES[2])
    assert messages[0] == {"role": "system", "content": "Answer briefly."}
    assert messages[1] == {"role": "user", "content": f"{HEADER}\n\n{PASSAGES[2]}\n\n{QUESTION}Where do Frobnits live?"}
    assert question_of(messages[1]["content"]) == "Where do Frobnits live?"
    assert build_messages("Q?", None, "ctx") == [{"role": "user", "content": f"{HEADER}\n\nctx\n\n{QUESTION}Q?"}]
    assert build_messages("Q?", "S") == [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}]
    assert question_of("Q?") == "Q?" and question_of("Question: a\n\nQuestion: b") == "Question: a\n\nQuestion: b"


def test_sentence_units_show_the_best_sentence_between_its_neighbours_and_never_twice(tmp_path):
    from opensem.retrieval import sentence_windows

    (tmp_path / "beasts.md").write_text(
        "# Zorblats\n\nA Zorblat is teal. Zorblats nest in the roofs of old barns. They lay three eggs a year. "
        "Their eggs hatch in spring.\n\n# Quimbles\n\nA Quimble has seven legs. It walks sideways.\n")
    words = lambda text: len(text.split())  # noqa: E731
    ranked, shown, spans, origins = sentence_windows(tmp_path, words, 64, 1)
    assert ranked[1] == "Zorblats\nZorblats nest in the roofs of old barns."
    assert shown[1] == "Zorblats\nA Zorblat is teal. Zorblats nest in the roofs of old barns. They lay three eggs a year."
    assert shown[4] == "Quimbles\nA Quimble has seven legs. It walks sideways."  # its section's only neighbour
    assert spans[1] == [0, 1, 0, 2] and spans[4] == [1, 0, 0, 1]
    r = Retriever(ranked, 2, "tfidf", shown, spans)
    # the eggs sentences are neighbours: the second one is inside the first's excerpt, so the next
    # excerpt shown is another section's, not the same sentences again
    found = r.search("When do the eggs of a Zorblat hatch, and how many eggs does it lay?")
    assert found[0].endswith("They lay three eggs a year. Their eggs hatch in spring.") and len(found) == 2
    assert "Their eggs hatch in spring." not in found[1]
    # a window longer than passage_tokens narrows to the sentence alone
    assert sentence_windows(tmp_path, words, 8, 1)[1][1] == "Zorblats\nZorblats nest in the roofs of old barns."
    r.save(tmp_path / "s.json")
    assert Retriever.load(tmp_path / "s.json").search("How many legs does a Quimble have?") == r.search("How many legs does a Quimble have?")
    assert origins[4] == ["beasts.md", "Quimbles"]


def test_sources_name_the_document_and_heading_of_each_excerpt_shown(tmp_path):
    """What a served answer cites: the excerpts the model read, in the order it read them, each
    with its document and heading, whether the passages are chunks or sentence windows, also
    after a save and load (the logged model's passages)."""
    from opensem.retrieval import located_passages, sentence_windows

    (tmp_path / "beasts.md").write_text("# Zorblats\n\nA Zorblat is teal. Zorblats nest in barns.\n")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "quimbles.md").write_text("# Quimbles\n\nA Quimble has seven legs. It walks sideways.\n")
    words = lambda text: len(text.split())  # noqa: E731
    ranked, shown, spans, origins = sentence_windows(tmp_path, words, 64, 1)
    texts, chunk_origins = located_passages(tmp_path, words, 64)
    for r in (Retriever(ranked, 2, "tfidf", shown, spans, origins=origins), Retriever(texts, 2, origins=chunk_origins)):
        question = "How many legs does a Quimble have?"
        cited = r.sources(question)
        assert [c["document"] for c in cited] == ["more/quimbles.md", "beasts.md"]
        assert cited[0]["heading"] == "Quimbles" and cited[0]["text"] == "A Quimble has seven legs. It walks sideways."
        assert [f"{c['heading']}\n{c['text']}" for c in cited] == r.search(question)  # what the model read
        r.save(tmp_path / "p.json")
        assert Retriever.load(tmp_path / "p.json").sources(question) == cited
    unknown = Retriever(texts, 1).sources("legs")  # passages saved before origins: no document, whole excerpt
    assert unknown == [{"document": None, "heading": "", "text": texts[1]}]


def test_saved_passages_load_into_the_same_ranking(tmp_path):
    r = Retriever(MEANING, top_k=1, method="hybrid")
    r.save(tmp_path / "p.json")
    loaded = Retriever.load(tmp_path / "p.json")
    assert (loaded.top_k, loaded.method) == (1, "hybrid")
    assert loaded.search("What fuel does a car use?") == r.search("What fuel does a car use?") == [MEANING[1]]
    # a passages file written before `method` existed ranks by TF-IDF, as it was written
    (tmp_path / "old.json").write_text(json.dumps({"top_k": 1, "passages": MEANING}))
    assert Retriever.load(tmp_path / "old.json").method == "tfidf"


def test_the_lead_sentence_is_the_top_ranked_sentence_of_the_excerpts_shown(tmp_path):
    import random

    question = "How many legs does a Quimble have?"
    plain, lead = Retriever(PASSAGES, top_k=2), Retriever(PASSAGES, top_k=2, lead=True)
    assert LEAD not in plain.context(question)
    excerpts, shown = lead.context(question).rsplit(f"\n\n{LEAD}", 1)
    assert excerpts == plain.context(question)  # the excerpts as without it, the line under them
    assert shown == lead.top_sentences(question, 1)[0] == "A Quimble has seven legs and walks sideways."
    assert question_of(build_messages(question, None, lead.context(question))[0]["content"]) == question
    # reading practice: the lead is ranked among the excerpts the row shows, whatever their order
    for seed in range(4):
        text, answering = lead.reading_context("Where do Frobnits live?", "Frobnits live in Oslo.", random.Random(seed), True, 2)
        assert answering == PASSAGES[2] and text.endswith(f"\n\n{LEAD}Frobnits live in Oslo, where the winters are long.")
    # ranked among the row's own excerpts, not the retriever's: here the only excerpt shown is the
    # answering one, which search() would not show for this question
    one = Retriever(PASSAGES, top_k=1, lead=True)
    text, answering = one.reading_context("Where do Frobnits live?", "A Quimble has seven legs.", random.Random(0), True, 1)
    assert answering == PASSAGES[1] and one.search("Where do Frobnits live?") == [PASSAGES[2]]
    assert text == f"{PASSAGES[1]}\n\n{LEAD}A Quimble has seven legs and walks sideways."
    # saved with the retriever (the served model reads it); files from before it: no lead
    lead.save(tmp_path / "lead.json")
    assert Retriever.load(tmp_path / "lead.json").context(question) == lead.context(question)
    (tmp_path / "old.json").write_text(json.dumps({"top_k": 2, "passages": PASSAGES}))
    assert Retriever.load(tmp_path / "old.json").context(question) == plain.context(question)


def test_the_lead_sentence_asks_models_differently_and_has_room_in_a_training_pair(project):
    from opensem.judge.evaluate import prompt_digest

    opened = load_config(project, "legal", ["retrieval.enabled=true"])
    led = load_config(project, "legal", ["retrieval.enabled=true", "retrieval.lead_sentence=true"])
    assert prompt_digest(led) != prompt_digest(opened)  # a baseline asked without it is not reused
    assert "lead_sentence" not in settings(opened) and settings(led)["lead_sentence"] is True
    assert led.pair_max_length == opened.pair_max_length + led.retrieval.passage_tokens


def test_an_open_book_baseline_is_never_compared_with_a_closed_book_adapter(project):
    from opensem.judge.evaluate import prompt_digest

    closed = load_config(project, "legal", ["retrieval.enabled=false"])
    assert prompt_digest(load_config(project, "legal", ["retrieval.enabled=false", "retrieval.top_k=5"])) == prompt_digest(closed)  # off: unchanged
    opened = load_config(project, "legal", ["retrieval.enabled=true"])
    assert prompt_digest(opened) != prompt_digest(closed)
    assert prompt_digest(load_config(project, "legal", ["retrieval.enabled=true", "retrieval.top_k=3"])) != prompt_digest(opened)
    assert opened.pair_max_length == closed.training.max_length + 2 * 256 and closed.pair_max_length == closed.training.max_length


def test_open_book_forge_writes_pairs_asked_with_the_passages_found_for_their_question(project):
    # without reading practice (the shipped default has it: test_references.py), as at evaluation
    settings_ = ["retrieval.enabled=true", "retrieval.top_k=2", "forge.reading.answer_in_excerpts=false",
                 "forge.reading.shuffle=false", "forge.reading.quote_sentences=0"]
    on = sum((["--set", s] for s in settings_), [])
    forged = CliRunner().invoke(app, ["forge", "--sem", "legal", *on])
    assert forged.exit_code == 0 and "open book" in forged.output
    sem = open_sem("legal")
    cfg = load_config(project, "legal", settings_)
    from transformers import AutoTokenizer

    from opensem.models import resolve_base_model
    from opensem.retrieval import for_sem

    retriever = for_sem(sem, cfg, AutoTokenizer.from_pretrained(resolve_base_model(cfg.model.base, sem.base_models_dir)))
    rows = read_jsonl(sem.processed_dir / "train.jsonl") + read_jsonl(sem.processed_dir / "test.jsonl")
    for row in rows:
        system, user, answer = (m["content"] for m in row["messages"])
        question = question_of(user)
        assert system == cfg.model.system_prompt and user == f"{HEADER}\n\n{retriever.context(question)}\n\n{QUESTION}{question}"
    # the answer (from a sentence of its chunk) is in the passages found for most questions
    manifest = json.loads((sem.processed_dir / "manifest.json").read_text())
    held = [found(a, retriever.context(question_of(q))) for q, a in ((r["messages"][1]["content"], r["messages"][2]["content"]) for r in rows)]
    assert manifest["answer_in_passages"] == round(sum(held) / len(held), 3) and manifest["answer_in_passages"] > 0.6
    assert manifest["retrieval"] == settings(cfg) == {k: v for k, v in cfg.retrieval.model_dump().items() if k not in ("unit", "window", "lead_sentence")}
    assert not found("Frobnits live in Oslo.", rows[0]["messages"][1]["content"])

    # training asked another way than the forge wrote is refused, before any model loads
    result = CliRunner().invoke(app, ["train", "--sem", "legal"])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "retrieval" in errors[0] and "opensem forge --sem legal" in errors[0], result.output


@pytest.mark.slow
def test_the_served_open_book_adapter_answers_from_the_passages_it_was_logged_with(project, bundled_model_dir):
    from opensem.generate import answer_questions
    from opensem.models import load_model_and_tokenizer
    from opensem.train import run as train

    overrides = ["retrieval.enabled=true", "retrieval.top_k=1", "retrieval.passage_tokens=64", "training.cpt_epochs=0",
                 "training.max_steps=4", "training.run_name=ob", "model.system_prompt=Answer briefly."]
    sem = open_sem("legal")
    sections = ("## {}\n\n{}".format(*p.split("\n", 1)) for p in PASSAGES)  # one passage each
    (sem.raw_dir / "zz-creatures.md").write_text("# Creatures\n\n" + "\n\n".join(sections) + "\n")
    args = sum((["--set", o] for o in overrides if not o.startswith("training.")), [])
    assert CliRunner().invoke(app, ["forge", "--sem", "legal", *args]).exit_code == 0
    cfg = load_config(project, "legal", overrides)
    result = train(sem, cfg)
    saved = sem.adapters_dir / "ob" / "retrieval_passages.json"
    assert any("Frobnits live in Oslo" in p for p in json.loads(saved.read_text())["passages"])

    # the logged model answers open book, as evaluation does with the SEM's folder
    (sem.raw_dir / "zz-creatures.md").unlink()  # it must not need the documents any more
    questions = ["Where do Frobnits live?", "How many legs does a Quimble have?"]
    served = list(mlflow.pyfunc.load_model(result["model_uri"]).predict(pd.DataFrame({"question": questions}),
                                                                         params={"max_new_tokens": 24}))
    from peft import PeftModel

    base, tok = load_model_and_tokenizer(bundled_model_dir)
    tuned = PeftModel.from_pretrained(base, str(sem.adapters_dir / "ob"))
    open_book = answer_questions(tuned, tok, questions, "Answer briefly.", 24, 8, Retriever.load(saved))
    closed_book = answer_questions(tuned, tok, questions, "Answer briefly.", 24, 8)
    assert served == open_book and served != closed_book
    assert "oslo" in served[0].lower()

    # evaluated closed book, the open-book adapter is refused before anything is answered, as
    # the adapter folder and as the logged model (which would answer open book all the same)
    for target in (["--adapter", "ob"], ["--model", result["model_uri"]]):
        refused = CliRunner().invoke(app, ["evaluate", "--sem", "legal", *target])
        errors = [line for line in refused.output.splitlines() if line.startswith("error:")]
        assert refused.exit_code == 2 and len(errors) == 1 and "--set retrieval.enabled=True" in errors[0], refused.output


def test_turning_retrieval_on_reruns_forge_train_and_evaluate_in_the_pipeline(project):
    from opensem.pipeline import _key

    off = load_config(project, "legal", ["retrieval.enabled=false"])
    for sections in (("model", "forge", "retrieval"), ("model", "lora", "training", "retrieval"), ("model", "generation", "retrieval", "judge")):
        unchanged = _key(load_config(project, "legal", ["retrieval.enabled=false", "retrieval.top_k=4"]), sections, "x")
        assert unchanged == _key(off, sections, "x") == _key(off, tuple(s for s in sections if s != "retrieval"), "x")
        assert _key(load_config(project, "legal", ["retrieval.enabled=true"]), sections, "x") != _key(off, sections, "x")


def test_doctor_and_every_stage_say_whether_models_answer_open_book(project):
    def row(output: str) -> str:  # the doctor table's "asked" row, its wrapped cell joined
        lines = [line for line in output.splitlines() if "│" in line]
        start = next(i for i, line in enumerate(lines) if "asked" in line)
        cells = [lines[start]] + [line for line in lines[start + 1:start + 3] if line.split("│")[1].strip() == ""]
        return " ".join(" ".join(c.split("│")[3].split()) for c in cells)

    closed = CliRunner().invoke(app, ["doctor", "--sem", "legal"])
    assert closed.exit_code == 0 and row(closed.output).startswith("closed book"), closed.output
    opened = CliRunner().invoke(app, ["doctor", "--sem", "legal", "--set", "retrieval.enabled=true"])
    assert row(opened.output).startswith("open book: 2 passages of 256"), opened.output
    forged = CliRunner().invoke(app, ["forge", "--sem", "legal"])
    assert forged.exit_code == 0 and "legal · forge: closed book" in forged.output
