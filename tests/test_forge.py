"""Data Forge: ingest, teachers through the real SDKs against a local server, caching and
resume, budget, quality filters, decontamination, output format, MLflow run."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from llm_server import FakeLLMServer
from opensem.cli import app
from opensem.config import load_config
from opensem.errors import OpenSEMError
from opensem.forge import run as forge
from opensem.text.chunk import Chunk
from opensem.forge.extractive import extract_pairs, unfaithful
from opensem.text.ingest import ingest
from opensem.forge.quality import Decontaminator, check_pair, content_words, is_complete_sentence
from opensem.generate import question_of
from opensem.golden import load_golden
from opensem.io import read_jsonl
from opensem.workspace import new_sem, open_sem

pytestmark = pytest.mark.usefixtures("bundled_model_dir")

DOC = """# Widgets

## Sizes

A **widget** is a small gadget used in kitchens. Widgets come in three sizes. The largest widget weighs 400 grams.

## History

The first widget was sold in 1921 in Leeds. Widget makers formed a guild in 1950.
"""


@pytest.fixture
def mini(project):
    """A small SEM with 3 documents (6 chunks) and a 2-item golden set."""
    sem = new_sem("mini")
    (sem.raw_dir / ".gitkeep").unlink()
    for i in range(3):
        (sem.raw_dir / f"doc{i}.md").write_text(DOC.replace("Widget", f"Widget{i}").replace("widget", f"widget{i}"))
    golden = {"items": [
        {"id": "g1", "question": "How much does the largest widget0 weigh?", "answer": "400 grams.", "key_facts": ["400"]},
        {"id": "g2", "question": "Where was the first widget1 sold?", "answer": "In Leeds, in 1921.", "key_facts": ["Leeds"]},
    ]}
    sem.golden_set.write_text(json.dumps(golden))
    return sem


def api(server: FakeLLMServer, provider: str = "openai", *extra: str) -> list[str]:
    return [
        f"forge.teacher.provider={provider}",
        "forge.teacher.model=gpt-4o-mini",
        f"forge.teacher.base_url={server.url}" + ("/v1" if provider == "openai" else ""),
        "forge.teacher.max_retries=3",
        "forge.teacher.timeout_s=2",
        *extra,
    ]


# -- ingest -------------------------------------------------------------------------------------
def test_ingest_skips_bad_files_with_reasons(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "good.md").write_text("---\ntitle: x\n---\n# Title\n\nSome   text.\r\n")
    (raw / "empty.txt").write_text("  \n")
    (raw / "binary.txt").write_bytes(b"\x00\x01\x02binary")
    (raw / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (raw / "image.png").write_bytes(b"\x89PNG")
    (raw / "page.html").write_text("<html><body><h2>Rules</h2><p>Offers <b>end</b>.</p><script>x()</script></body></html>")
    docs, skipped = ingest(raw)
    assert {d.name for d in docs} == {"good.md", "page.html"}
    assert dict((s.name, s.reason) for s in skipped) == {
        "empty.txt": "empty", "binary.txt": "binary", "latin1.txt": "not_utf8", "image.png": "unsupported",
    }
    good = next(d for d in docs if d.name == "good.md").text
    assert good == "# Title\n\nSome text.\n"  # front matter gone, whitespace normalised
    html = next(d for d in docs if d.name == "page.html").text
    assert "## Rules" in html and "x()" not in html


def test_ingest_reads_docx_with_headings_and_skips_a_corrupt_one(tmp_path):
    import docx

    raw = tmp_path / "raw"
    raw.mkdir()
    document = docx.Document()
    document.add_heading("Remedies", level=1)
    document.add_paragraph("Damages are the usual remedy.")
    document.save(raw / "remedies.docx")
    (raw / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    docs, skipped = ingest(raw)
    assert docs[0].text == "# Remedies\n\nDamages are the usual remedy.\n"
    assert [s.name for s in skipped] == ["broken.docx"]
    assert skipped[0].reason == "unreadable (PackageNotFoundError: Package not found at 'broken.docx')"  # the library's words


def test_a_page_that_is_only_navigation_is_skipped_and_said_so(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    links = "".join(f"<li><a href='/p{i}'>Page {i} of the manual</a></li>" for i in range(30))
    (raw / "menu.html").write_text(f"<html><body><ul>{links}</ul><p><a href='/n'>Next</a> | <a href='/p'>Previous</a></p></body></html>")
    (raw / "rules.html").write_text("<html><body><ul>" + links + "</ul><p>A tenant pays the rent monthly.</p></body></html>")
    docs, skipped = ingest(raw)
    assert [d.name for d in docs] == ["rules.html"]
    assert [(s.name, s.reason) for s in skipped] == [("menu.html", "no_sentences")]


def test_empty_or_missing_raw_folder_is_one_line_error(project):
    sem = new_sem("empty")
    result = CliRunner().invoke(app, ["forge", "--sem", "empty"])
    assert result.exit_code == 2 and "is empty" in result.output and "Traceback" not in result.output
    sem.raw_dir.joinpath(".gitkeep").unlink()
    sem.raw_dir.rmdir()
    result = CliRunner().invoke(app, ["forge", "--sem", "empty"])
    assert result.exit_code == 2 and "does not exist" in result.output


# -- the extractive teacher ---------------------------------------------------------------------
def test_extractive_pairs_are_grounded_and_do_not_give_the_answer_away():
    raw = Path(__file__).resolve().parents[1] / "data" / "legal" / "raw"
    cfg = load_config(Path(__file__).resolve().parents[1], "legal", ["forge.min_grounding=0.95"])
    docs, _ = ingest(raw)
    from opensem.text.chunk import chunk_document

    total = 0
    for doc in docs:
        for chunk in chunk_document(doc, lambda t: len(t.split()), 300, 30):
            for q, a in extract_pairs(chunk):
                total += 1
                assert check_pair(q, a, chunk.text, cfg.forge) is None, (q, a)
                a_words, q_words = content_words(a), content_words(q)
                if a.startswith(("Yes. ", "No. ")):
                    # a yes/no answer adds to its question: a negation, or words the question lacks
                    assert a.startswith("No. ") or a_words - q_words, (q, a)
                elif re.match(r"(?:.*, )?(?:how|where) ", q, re.I):
                    assert a_words - q_words, (q, a)  # a passive's question leaves its whole object out
                else:
                    # the question carries at most a part of the answer's content words, not
                    # counting a condition both open with ("Under the mirror image rule, ...");
                    # a bare fact is followed by its sentence: the fact alone is what is hidden
                    head = a.split(". ")[0] + "."
                    hidden = a if is_complete_sentence(head) else head
                    lead = q.split(", ")[0] + ", " if ", " in q and hidden.startswith(q.split(", ")[0] + ", ") else ""
                    a_words, q_words = content_words(hidden.replace(lead, "", 1)), content_words(q.replace(lead, "", 1))
                    assert len(a_words & q_words) <= 0.7 * len(a_words), (q, a)
                # ...and never the fact a cloze answer opens with
                fact = a.split(". ")[0]
                if a.count(". ") and re.search(r"\d|\bv\b|Act", fact):
                    assert fact.lower() not in q.lower(), (q, a)
    assert total >= 50


def test_extractive_question_shapes():
    chunk = Chunk("d#0", "d", "Remedies > Limits", "Under the Limitation Act 1980, a claim must be brought within 6 years of the breach.\n"
                  "A **warranty** is a less important term.\nA promise supported by payment is an **option contract**.", 30)
    pairs = dict(extract_pairs(chunk))
    assert pairs["What is a warranty?"] == "A warranty is a less important term."
    # a bare fact comes first, then the sentence that states it: no answer is a fragment
    assert pairs["What is a promise supported by payment called?"] == "An option contract. A promise supported by payment is an option contract."
    cloze = next(q for q in pairs if "how many years" in q)
    assert "6 years" not in cloze
    assert pairs[cloze] == "6 years. Under the Limitation Act 1980, a claim must be brought within 6 years of the breach."


def test_extractive_user_question_shapes():
    """Yes/no, when, which-rule, reverse-definition and difference questions, and "It" resolved."""
    text = (
        "An invitation to treat is not an offer. Under the mirror image rule, acceptance must match the offer exactly; "
        "a reply with new terms is a counter-offer.\n"
        "Breach of a condition allows the innocent party to terminate the contract.\n"
        "Under the **parol evidence rule**, earlier statements cannot vary a written contract.\n"
        "**Specific performance** is a court order to carry out the contract. It is granted only when damages would be inadequate.\n"
        "**Assignment** is the transfer of a party's rights to someone else.\n\n"
        "**Delegation** is the transfer of a party's duties to someone else.\n\n"
        "A contract is a legally enforceable agreement between two or more parties."
    )
    pairs = dict(extract_pairs(Chunk("d#0", "d", "Remedies", text, 80)))
    assert pairs["Is an invitation to treat an offer?"] == "No. An invitation to treat is not an offer."
    assert pairs["Under the mirror image rule, must acceptance match the offer exactly?"].startswith("Yes. Under the mirror")
    assert pairs["What does breach of a condition allow?"].endswith("to terminate the contract.")
    assert pairs["Which rule says that earlier statements cannot vary a written contract?"] == (
        "The parol evidence rule. Under the parol evidence rule, earlier statements cannot vary a written contract.")
    assert pairs["What is the term for a court order to carry out the contract?"] == (
        "Specific performance. Specific performance is a court order to carry out the contract.")
    assert pairs["When is specific performance granted?"] == "Specific performance is granted only when damages would be inadequate."
    assert pairs["What is the difference between assignment and delegation?"].count("transfer") == 2
    # not kindred: no difference question; a bare "Yes." + the question restated teaches nothing
    assert "What is the difference between specific performance and assignment?" not in pairs
    assert not any(q.startswith("Is a contract a legally") for q in pairs)
    # the reply that negates its question is news, not an echo
    cfg = load_config(Path(__file__).resolve().parents[1], "legal", [])
    assert check_pair("Is an invitation to treat an offer?", pairs["Is an invitation to treat an offer?"], text, cfg.forge) is None


def test_about_questions_ask_what_no_other_pattern_asks_by_the_name_a_sentence_mentions():
    """experimental.about_questions: unmatched, a sentence that yields no other pair, but names an
    option, a file or a keyword, is asked about by that name; every, a sentence with a pair of its
    own is asked about by its name too; off, it asks nothing."""
    text = (
        '"noopt": The presence of this tag means that the package should be compiled with a minimum of optimization.\n'
        "Secondly, required targets may write to \"/tmp\" but must not depend on the contents of it.\n"
        "The architecture is a client/server design that many people find quite surprising today.\n"
        "It is a quiet and sunny afternoon in the garden and nothing much is happening there.\n"
        "The SQL parser reads SQL text. The SQL text is stored, and later SQL statements reuse it.\n"
        "An invitation to treat is not an offer.\n"
        'The "nostrip" tag must not be used by packages in the main archive area.\n'
    )
    chunk = Chunk("d#0", "d", "Debian Policy > 4.9.1. Build options", text, 80)
    assert set(extract_pairs(chunk)) == set(extract_pairs(chunk, about_questions="off"))
    plain_pairs = dict(extract_pairs(chunk))
    pairs = dict(extract_pairs(chunk, about_questions="unmatched"))
    added = {q: a for q, a in pairs.items() if q not in plain_pairs}
    assert added == {
        "What does section 4.9.1 of Debian Policy say about noopt?":
            '"noopt": The presence of this tag means that the package should be compiled with a minimum of optimization.',
        "What does section 4.9.1 of Debian Policy say about /tmp?":
            'Secondly, required targets may write to "/tmp" but must not depend on the contents of it.',
    }  # client/server is no name, the garden sentence names nothing, SQL is said too often to identify a fact
    assert "Is an invitation to treat an offer?" in plain_pairs  # a sentence with a pair of its own gets no about-question
    nostrip = 'The "nostrip" tag must not be used by packages in the main archive area.'
    assert plain_pairs['Must the "nostrip" tag be used by packages in the main archive area?'] == "No. " + nostrip
    every = dict(extract_pairs(chunk, about_questions="every"))
    assert {q: a for q, a in every.items() if q not in pairs} == {"What does section 4.9.1 of Debian Policy say about nostrip?": nostrip}
    assert set(plain_pairs) <= set(every)  # the pattern's own question stays beside it

    for question, answer in added.items():
        assert unfaithful(question, answer, chunk) is None
    unnumbered = dict(extract_pairs(Chunk("d#1", "d", "Build options", text, 80), about_questions="unmatched"))
    assert "What does the section Build options say about noopt?" in unnumbered


def test_yes_no_questions_off_drops_the_yes_no_pairs_and_keeps_the_sentences_other_questions(project):
    """experimental.yes_no_questions=false: no pair answers Yes./No.; a sentence's what-question
    stays; the teacher the config builds passes the setting on."""
    text = (
        "The clean target must remove the generated files, but it may keep the build logs.\n"
        "An invitation to treat is not an offer.\n"
        "Breach of a warranty allows the innocent party to claim damages but not to terminate the contract.\n"
    )
    chunk = Chunk("d#0", "d", "Contract law > Terms", text, 80)
    both = dict(extract_pairs(chunk))
    assert both["Must the clean target remove the generated files?"].startswith("Yes. The clean target")
    assert both["Is an invitation to treat an offer?"] == "No. An invitation to treat is not an offer."
    without = dict(extract_pairs(chunk, yes_no=False))
    assert without == {q: a for q, a in both.items() if not a.startswith(("Yes. ", "No. "))}
    assert set(without) == {"What must the clean target remove?", "What does breach of a warranty allow?"}

    from opensem.forge.teachers import make_teacher

    cfg = load_config(project, "legal", ["experimental.yes_no_questions=false"])
    teacher = make_teacher(cfg, project / "cache", budget=None)
    assert dict(asyncio.run(teacher.ask(chunk, None)).result) == without


def test_yes_opener_off_answers_an_agreeing_question_with_its_sentence_and_keeps_no(project):
    """experimental.yes_opener=false: the same questions; an agreeing answer loses its "Yes."
    and is the sentence alone, a denial keeps "No."; the teacher the config builds passes it on."""
    text = "The clean target must remove the generated files, but it may keep the build logs.\nAn invitation to treat is not an offer.\n"
    chunk = Chunk("d#0", "d", "Contract law > Terms", text, 40)
    sentence = "The clean target must remove the generated files, but it may keep the build logs."
    both = dict(extract_pairs(chunk))
    plain_ = dict(extract_pairs(chunk, yes_opener=False))
    assert set(plain_) == set(both)
    assert both["Must the clean target remove the generated files?"] == f"Yes. {sentence}"
    assert plain_["Must the clean target remove the generated files?"] == sentence
    assert plain_["Is an invitation to treat an offer?"] == "No. An invitation to treat is not an offer."
    assert not any(a.startswith("Yes") for a in plain_.values())
    assert all(unfaithful(q, a, chunk) is None for q, a in plain_.items())

    from opensem.forge.teachers import make_teacher

    cfg = load_config(project, "legal", ["experimental.yes_opener=false"])
    assert dict(asyncio.run(make_teacher(cfg, project / "cache", budget=None).ask(chunk, None)).result) == plain_


# -- end to end, offline --------------------------------------------------------------------------
def test_forge_sample_sem_offline(project):
    result = CliRunner().invoke(app, ["forge", "--sem", "legal"])
    assert result.exit_code == 0, result.output
    sem = open_sem("legal")
    train, test = read_jsonl(sem.processed_dir / "train.jsonl"), read_jsonl(sem.processed_dir / "test.jsonl")
    assert len(train) > 30 and len(test) >= 1
    assert 0.05 <= len(test) / (len(train) + len(test)) <= 0.2
    for row in train + test:
        assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    golden = {q.question.lower() for q in load_golden(sem.golden_set)}
    assert not golden & {r["messages"][1]["content"].lower() for r in train + test}
    manifest = json.loads((sem.processed_dir / "manifest.json").read_text())
    assert manifest["train"] == len(train) and manifest["test"] == len(test)
    assert manifest["pairs_kept"] == manifest["pairs_generated"] - sum(manifest["rejected"].values())
    assert manifest["teacher"] == "extractive" and manifest["cost_usd"] == 0
    corpus = read_jsonl(sem.processed_dir / "corpus.jsonl")  # the documents as read, for training's cpt phase
    assert sorted(r["document"] for r in corpus) == sorted(p.name for p in sem.raw_dir.iterdir() if not p.name.startswith("."))
    assert all(r["text"].strip() for r in corpus) and manifest["digests"]["corpus"]

    run = mlflow.search_runs(experiment_names=["opensem-legal"], output_format="list")[0]
    assert run.data.tags["opensem.stage"] == "forge"
    assert run.data.metrics["pairs_train"] == len(train)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert {"legal-train", "legal-test"} <= set(inputs)
    assert inputs["legal-train"].dataset.digest
    assert "forge/manifest.json" in {a.path for a in mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path="forge")}


def test_forge_shows_each_step_while_it_runs(project, monkeypatch):
    """Reading, chunking and indexing a large document take minutes with no count to show: each
    shows a spinner with its name and the time elapsed while it runs (gone afterwards)."""
    import io

    from rich.console import Console

    from opensem.forge import stage

    screen = io.StringIO()
    monkeypatch.setattr(stage, "console", Console(file=screen, force_terminal=True, width=200))
    assert CliRunner().invoke(app, ["forge", "--sem", "legal", "--set", "retrieval.enabled=true"]).exit_code == 0
    shown = screen.getvalue()
    for step in ("reading", "documents (", "MB of text) into chunks", "indexing the documents' passages", "pairs with their excerpts"):
        assert step in shown, step
    assert "0:00:0" in shown  # the elapsed-time column


@pytest.mark.parametrize("sizes", [[4, 2], [4, 2, 1], [9, 8, 7], [3] * 40, [1] * 7 + [30]])
def test_split_keeps_chunks_whole_and_the_held_out_side_smaller(sizes):
    from opensem.forge.stage import Pair, split_by_chunk

    pairs = [Pair(f"q{c}-{i}?", "a.", Chunk(f"doc#{c}", "doc", "", "", 1)) for c, n in enumerate(sizes) for i in range(n)]
    for seed in range(20):
        train, test = split_by_chunk(pairs, 0.1, seed)
        assert sorted(map(id, train + test)) == sorted(map(id, pairs))
        assert not {p.chunk.id for p in train} & {p.chunk.id for p in test}
        assert train and test and len(test) < len(train)
        if len(sizes) == 40:  # many small chunks: close to the share asked for
            assert len(test) == 12


def test_output_trains_with_trl_format(project, bundled_model_dir):
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational

    assert CliRunner().invoke(app, ["forge", "--sem", "legal"]).exit_code == 0
    ds = load_dataset("json", data_files=str(open_sem("legal").processed_dir / "train.jsonl"), split="train")
    assert is_conversational(ds[0])
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    enc = tok.apply_chat_template(ds[0]["messages"], return_dict=True, return_assistant_tokens_mask=True)
    assert 0 < sum(enc["assistant_masks"]) < len(enc["input_ids"])


# -- real SDKs against the local server -------------------------------------------------------------
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_api_teacher_retries_429_500_malformed_and_slow(mini, monkeypatch, provider):
    key_env = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    monkeypatch.setenv(key_env, "sk-test-SECRET-KEY-42")
    with FakeLLMServer() as server:
        server.push("429:1", "500", "malformed", "slow:5")
        cfg = load_config(mini.root, "mini", api(server, provider, "forge.teacher.max_concurrency=1"))
        manifest = forge(mini, cfg)
    assert manifest["chunks"] == 6 and manifest["pairs_generated"] == 6
    statuses = [e["status"] for e in server.log]
    assert statuses[:2] == [429, 500]
    first, second = server.log[0], server.log[1]
    assert second["time"] - first["time"] >= 0.9  # Retry-After: 1 was honoured
    assert manifest["requests"] == len(server.log) and len(server.log) >= 6 + 4
    assert manifest["tokens_input"] > 0 and manifest["cost_usd"] > 0
    assert server.log[0]["api_key"].endswith("sk-test-SECRET-KEY-42")
    # the key never reaches MLflow or the outputs
    run = mlflow.search_runs(experiment_names=["opensem-mini"], output_format="list")[0]
    blob = json.dumps(run.data.params) + json.dumps(run.data.tags)
    for path in mini.processed_dir.iterdir():
        blob += path.read_text()
    assert "SECRET-KEY" not in blob


@pytest.mark.parametrize("setting, used", [("auto", "json_object"), ("json_object", "json_object"), ("json_schema", None)])
def test_a_server_that_refuses_json_schema_gets_json_object(mini, monkeypatch, setting, used):
    """llama.cpp's server answers response_format json_schema with HTTP 500; auto falls back once."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        server.reject_json_schema = True
        cfg = load_config(mini.root, "mini", api(server, "openai", f"forge.teacher.response_format={setting}",
                                                 "forge.teacher.max_retries=1"))
        manifest = forge(mini, cfg) if used else None
        if not used:  # told to use json_schema: every chunk fails, nothing is kept, and forge says so
            with pytest.raises(OpenSEMError):
                forge(mini, cfg)
    formats = [e["format"] for e in server.log]
    if used:
        assert manifest["pairs_kept"] > 0 and manifest["teacher_response_format"] == "json_object"
        # auto: the first request and its one retry asked for json_schema, every other json_object
        assert formats.count("json_schema") == (2 if setting == "auto" else 0)
        assert formats.count("json_object") == 6
    else:
        assert set(formats) == {"json_schema"}


def test_cache_means_a_rerun_sends_nothing(mini, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        cfg = load_config(mini.root, "mini", api(server))
        first = forge(mini, cfg)
        sent = len(server.log)
        second = forge(mini, cfg)
    assert first["requests"] == sent == 6
    assert len(server.log) == sent  # nothing new
    assert second["requests"] == 0 and second["cache_hits"] == 6 and second["cost_usd"] == 0
    assert second["digests"]["train"] == first["digests"]["train"]


def test_a_bench_copy_answers_from_the_teacher_replies_forged_before(mini, tmp_path, monkeypatch):
    """sky/outcome.yaml forges with a served teacher, stops the server, then runs the bench, whose
    project copies must answer every chunk from the cache: with the server gone a request fails."""
    from bench.common import project_copy

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        overrides = api(server, "openai", "forge.teacher.max_retries=0")
        first = forge(mini, load_config(mini.root, "mini", overrides))
    copy = project_copy(tmp_path / "bench", "mini", source=mini.root)
    monkeypatch.setenv("OPENSEM_HOME", str(copy))
    monkeypatch.chdir(copy)
    second = forge(open_sem("mini"), load_config(copy, "mini", overrides))
    assert first["requests"] == 6 and second["requests"] == 0 and second["cache_hits"] == 6
    assert second["digests"]["train"] == first["digests"]["train"]


def test_kill_9_part_way_then_resume_repeats_no_request(mini):
    env = dict(os.environ, OPENAI_API_KEY="sk-test", OPENSEM_HOME=str(mini.root))
    with FakeLLMServer() as server:
        server.push("ok", "ok", "ok", "hold")  # the 4th request is in flight when the process dies
        sets = sum((["--set", s] for s in api(server, "openai", "forge.teacher.max_concurrency=1")), [])
        cmd = [sys.executable, "-m", "opensem", "forge", "--sem", "mini", *sets]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while len(server.log) < 4 and time.time() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
        proc.wait()
        server.release.set()
        assert len(server.successes()) == 3
        assert not (mini.processed_dir / "train.jsonl").exists()  # nothing half-written
        killed = mlflow.search_runs(experiment_names=["opensem-mini"], output_format="list")
        assert [r.info.status for r in killed] == ["RUNNING"]  # MLflow never heard of the kill
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        # the next command found the dead process's run and closed it
        assert mlflow.get_run(killed[0].info.run_id).info.status == "KILLED"
    prompts = server.successes()
    assert len(server.log) == 4 + 3  # the restart asked only for the 3 chunks never answered
    assert len(prompts) == 6 and len(set(prompts)) == 6  # every chunk answered exactly once overall


def test_budget_cap_stops_spending_and_keeps_what_was_made(mini, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        cfg = load_config(mini.root, "mini", api(
            server, "openai", "forge.teacher.model=pricey", "forge.teacher.max_tokens=100", "forge.teacher.max_concurrency=1",
            "forge.prices.pricey.input_per_mtok=1000", "forge.prices.pricey.output_per_mtok=1000", "forge.max_cost_usd=1.0",
        ))
        manifest = forge(mini, cfg)
    assert manifest["budget_exhausted"] is True
    assert 0 < manifest["requests"] < 6 and manifest["requests"] == len(server.log)
    assert manifest["cost_usd"] <= 1.0
    assert manifest["rejected"]["budget"] == 6 - manifest["requests"]
    assert manifest["train"] + manifest["test"] == manifest["pairs_kept"] > 0


def test_a_budget_without_a_price_is_refused_before_any_request(mini, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        args = ["forge", "--sem", "mini"] + sum((["--set", o] for o in api(server, "openai", "forge.teacher.model=unpriced",
                                                                            "forge.max_cost_usd=1.0")), [])
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and len(server.log) == 0
    assert "forge.prices has no price for 'unpriced'" in result.output
    assert not (mini.processed_dir / "train.jsonl").exists()


def test_the_price_hint_is_a_setting_that_works_for_a_model_name_with_dots(mini, monkeypatch):
    import re

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        priced = api(server, "openai", "forge.teacher.model=qwen2.5-7b", "forge.max_cost_usd=1.0")
        result = CliRunner().invoke(app, ["forge", "--sem", "mini", *sum((["--set", o] for o in priced), [])])
        assert result.exit_code == 2 and len(server.log) == 0
        hint = re.search(r"--set '([^']+)'", " ".join(result.output.split())).group(1)
        again = CliRunner().invoke(app, ["forge", "--sem", "mini", *sum((["--set", o] for o in priced + [hint]), [])])
        assert again.exit_code == 0 and len(server.log) > 0, again.output


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize("reply", ["malformed", "empty"])
def test_a_reply_empty_or_unparsable_every_time_is_a_failed_request(mini, monkeypatch, provider, reply):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    forge(mini, load_config(mini.root, "mini"))  # a good forge output to keep
    before = {p.name: p.read_bytes() for p in mini.processed_dir.iterdir() if p.is_file()}
    with FakeLLMServer() as server:
        server.push(*[reply] * 4)  # first chunk: 1 try + 3 retries, all unusable
        cfg = load_config(mini.root, "mini", api(server, provider, "forge.teacher.max_concurrency=1"))
        with pytest.raises(OpenSEMError, match="1 of 6 teacher requests failed") as stopped:
            forge(mini, cfg)
        assert "no usable reply in 4 tries" in str(stopped.value) and "max_failed_chunks=1" in str(stopped.value)
        assert {p.name: p.read_bytes() for p in mini.processed_dir.iterdir() if p.is_file()} == before
        asked = len(server.log)
        server.push(*[reply] * 4)
        manifest = forge(mini, load_config(mini.root, "mini", api(server, provider, "forge.teacher.max_concurrency=1",
                                                                   "forge.max_failed_chunks=1")))
        assert len(server.log) == asked + 4  # the five good replies came from the cache
    assert manifest["rejected"]["unusable"] == 1 and manifest["pairs_generated"] == 5


# -- decontamination ----------------------------------------------------------------------------------
def test_decontamination_removes_planted_copy_and_paraphrase(mini, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    planted = [
        ["How much does the largest widget0 weigh?", "The largest widget0 weighs 400 grams."],  # exact copy
        ["How much does the largest widget0 weigh, roughly?", "400 grams, as the largest widget0 weighs."],  # light paraphrase
        ["What is a widget0?", "A widget0 is a small gadget used in kitchens."],  # same facts, not an exam question
    ]
    with FakeLLMServer() as server:
        server.push("pairs:" + json.dumps(planted))
        cfg = load_config(mini.root, "mini", api(server, "openai", "forge.teacher.max_concurrency=1"))
        manifest = forge(mini, cfg)
    rejected = read_jsonl(mini.processed_dir / "rejected.jsonl")
    contaminated = {r["question"] for r in rejected if r["reason"] == "contaminated"}
    assert contaminated == {planted[0][0], planted[1][0]}
    kept = {question_of(r["messages"][1]["content"]) for f in ("train.jsonl", "test.jsonl") for r in read_jsonl(mini.processed_dir / f)}
    assert planted[2][0] in kept
    assert manifest["rejected"]["contaminated"] == 2


def test_an_llm_teachers_inverted_pair_is_rejected_and_a_denial_by_another_fact_kept(mini, monkeypatch):
    """The issue's inverted pairs, from an LLM teacher: "No. X is not Y." from "X is Y." never
    reaches training; a "No." that rests on a different statement of the chunk does."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    planted = [
        ["Is a widget0 a kitchen gadget?", "No. A widget0 is not a small gadget used in kitchens."],  # inverted
        ["Does the largest widget0 weigh two kilograms?", "No. The largest widget0 weighs 400 grams."],  # denied by a fact
        ["How many sizes of widget0 are there?", "Three. Widget0s come in three sizes, the largest weighing 400 grams."],
    ]
    with FakeLLMServer() as server:
        server.push("pairs:" + json.dumps(planted))
        manifest = forge(mini, load_config(mini.root, "mini", api(server, "openai", "forge.teacher.max_concurrency=1")))
    rejected = {r["question"]: r["reason"] for r in read_jsonl(mini.processed_dir / "rejected.jsonl")}
    assert rejected.get(planted[0][0]) == "polarity" and manifest["rejected"]["polarity"] == 1
    kept = {question_of(r["messages"][1]["content"]) for f in ("train.jsonl", "test.jsonl") for r in read_jsonl(mini.processed_dir / f)}
    assert {planted[1][0], planted[2][0]} <= kept


def test_decontaminator_unit():
    d = Decontaminator([{"question": "How long do I have to sue for breach of an ordinary contract in England?", "answer": "Six years."}], 0.6)
    assert d.is_contaminated("How long do I have to sue for breach of an ordinary contract in England?", "x")
    assert d.is_contaminated("How long do I have to sue for a breach of an ordinary contract in England and Wales?", "x")
    assert not d.is_contaminated("What is the limitation period for a deed?", "Twelve years.")


# -- bad input ----------------------------------------------------------------------------------------
def test_missing_api_key_names_the_variable(mini, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["forge", "--sem", "mini", "--set", "forge.teacher.provider=openai", "--set", "forge.teacher.model=gpt-4o-mini"])
    assert result.exit_code == 2
    assert "OPENAI_API_KEY" in result.output and len(result.output.strip().splitlines()) == 1


def test_unknown_provider_is_a_config_error(mini):
    result = CliRunner().invoke(app, ["forge", "--sem", "mini", "--set", "forge.teacher.provider=gemini"])
    assert result.exit_code == 2 and "forge.teacher.provider" in result.output


def test_bad_api_key_stops_with_one_line(mini, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with FakeLLMServer() as server:
        server.default = "401"
        result = CliRunner().invoke(app, ["forge", "--sem", "mini", *sum((["--set", s] for s in api(server)), [])])
    assert result.exit_code == 2 and "rejected the API key" in result.output


def test_local_teacher_runs_the_bundled_model(mini):
    """The `local` teacher really generates with the bundled model; a 135M model rarely writes
    valid JSON, and whatever it writes is either parsed or rejected as malformed, never a crash."""
    cfg = load_config(mini.root, "mini", ["forge.teacher.provider=local", "forge.teacher.max_tokens=24", "forge.chunk_tokens=400"])
    try:
        manifest = forge(mini, cfg)
        assert manifest["pairs_generated"] > 0
        rejected = read_jsonl(mini.processed_dir / "rejected.jsonl")
    except OpenSEMError as exc:  # nothing kept: the rejections are kept aside, processed/ is not written
        assert "malformed" in str(exc) and not mini.processed_dir.exists()
        rejected = read_jsonl(mini.cache_dir / "forge_rejected.jsonl")
    assert all(r["reason"] in ("malformed", "too_short", "not_grounded", "echo", "language", "duplicate") for r in rejected)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_read_timeout_is_named_as_one_with_the_setting_to_raise(mini, monkeypatch, provider):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    with FakeLLMServer() as server:
        server.push("slow:4")
        args = [a for a in api(server, provider, "forge.teacher.max_concurrency=1") if "max_retries" not in a and "timeout_s" not in a]
        cfg = load_config(mini.root, "mini", args + ["forge.teacher.max_retries=0", "forge.teacher.timeout_s=1"])
        with pytest.raises(OpenSEMError) as stopped:
            forge(mini, cfg)
    message = str(stopped.value)
    assert "timed out" in message and "within 1.0s" in message and "forge.teacher.timeout_s" in message, message
    assert "cannot reach" not in message


@pytest.mark.slow
def test_a_5_mb_corpus_forges_within_the_cap_and_says_how_far_it_is_without_a_terminal(project):
    """forge.max_pairs bounds what is asked and kept, the chunks asked are spread over the whole
    corpus, and a log without a terminal (CliRunner's, like CI's or nohup's) gets plain progress lines."""
    import re

    from opensem.io import read_jsonl

    sem = new_sem("big")
    legal = "\n\n".join(p.read_text() for p in sorted((project / "data" / "legal" / "raw").iterdir()) if p.suffix in (".md", ".txt"))
    copies, size = [], 0
    while size < 5 * 2**20:  # copies that differ: each numbers its contracts and offers
        copies.append(re.sub(r"\b(contract|offer)\b", lambda m: f"{m.group(1)}{len(copies)}", legal))
        size += len(copies[-1])
    (sem.raw_dir / ".gitkeep").unlink()
    (sem.raw_dir / "corpus.md").write_text("\n\n".join(copies))
    result = CliRunner().invoke(app, ["forge", "--sem", "big", "--set", "forge.max_pairs=300"])
    assert result.exit_code == 0, result.output[-2000:]
    manifest = json.loads((sem.processed_dir / "manifest.json").read_text())
    assert manifest["chunks_asked"] == 100 < manifest["chunks"] and manifest["pairs_kept"] <= 300
    assert manifest["train"] + manifest["test"] == manifest["pairs_kept"]
    chunk_ids = {int(r["chunk"].rsplit("#", 1)[1]) for r in read_jsonl(sem.processed_dir / "rejected.jsonl") if "#" in r["chunk"]}
    assert chunk_ids and max(chunk_ids) > manifest["chunks"] * 0.8  # spread to the corpus' end, not its first chunks
    lines = result.output.splitlines()
    assert any(re.fullmatch(r"forge: teacher extractive: (started, 100 chunks|done, 100 chunks in \d+ s; \d+ pairs, \$0\.0000)", l) for l in lines)
    assert any(l.startswith("forge: cutting 1 documents (5.0 MB of text) into chunks: done in") for l in lines)
    assert "asking about 100 of them, evenly spread" in " ".join(result.output.split())
