"""The Judge: golden-set validation, the offline judge on planted cases, batched generation, the
LLM judge through the real SDKs against a local server, and honest comparisons."""

from __future__ import annotations

import json

import mlflow
import pytest
from typer.testing import CliRunner

from llm_server import FakeLLMServer
from opensem.cli import app
from opensem.config import load_config
from opensem.errors import OpenSEMError
from opensem.golden import GoldenItem, load_golden
from opensem.judge.offline import NAME, grade, key_fact_recall, rouge_l, token_f1
from opensem.workspace import new_sem

from conftest import REPO


# -- golden set ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "invalid JSON at line 1"),
        ('{"items": []}', "expected a non-empty list"),
        ('[{"id": "a", "question": "Q?", "answer": "A", "key_facts": ["x"]}, {"id": "a", "question": "Q2?", "answer": "B", "key_facts": ["y"]}]',
         "item 2 (id 'a'): duplicate id 'a'"),
        ('[{"id": "a", "question": "  ", "answer": "A", "key_facts": ["x"]}]', "item 1 (id 'a'): question: Value error, must not be blank"),
        ('[{"id": "a", "question": "Q?", "answer": "A", "key_facts": []}]', "item 1 (id 'a'): key_facts"),
        ('[{"id": "a", "question": "Q?", "answer": "A", "key_facts": ["(unclosed"]}]', "is not a valid regular expression"),
    ],
)
def test_golden_set_errors_name_the_item(tmp_path, content, expected):
    path = tmp_path / "golden_set.json"
    path.write_text(content)
    with pytest.raises(OpenSEMError) as exc:
        load_golden(path)
    assert expected in str(exc.value) and "\n" not in str(exc.value)


# -- offline judge ---------------------------------------------------------------------------------
ITEM = next(GoldenItem(**i) for i in json.loads((REPO / "evals/legal/golden_set.json").read_text())["items"] if i["id"] == "limitation-01")


def test_offline_grading_rules():
    assert key_fact_recall("Six years from the breach.", ITEM.key_facts) == 1.0
    assert key_fact_recall("Six years.", ITEM.key_facts) == 0.5
    assert key_fact_recall("Sixteen years after the breach.", ITEM.key_facts) == 0.5  # word-bounded: not "six"
    assert token_f1("six years from the breach", "Six years from the breach.") == 1.0
    assert 0 < rouge_l("you have six years", "Six years from the breach") < 1
    assert grade("", ITEM.key_facts, 0.0, ITEM.answer).score == 1
    assert grade("Six years from the breach.", ITEM.key_facts, 0.9, ITEM.answer).score == 5
    assert grade("Six years, from the breach.", ITEM.key_facts, 0.4, ITEM.answer).score == 4
    assert grade("Six years.", ITEM.key_facts, 0.4, ITEM.answer).score == 3
    # a fluent answer in the golden answer's style, with the wrong number, can never reach 4
    wrong = grade("Twelve years from the breach, under the Limitation Act 1980.", ITEM.key_facts, 0.95, ITEM.answer, ITEM.question)
    assert wrong.score == 3 and wrong.key_fact_recall == 0.5  # the Act and the start date, not the period
    off = grade("Twelve years, I believe.", ITEM.key_facts, 0.7, ITEM.answer, ITEM.question)
    assert off.score == 2 and off.key_fact_recall == 0
    # saying the question back is not "on topic", however similar it is to the golden answer
    echo = grade(ITEM.question, ITEM.key_facts, 0.8, ITEM.answer, ITEM.question)
    assert echo.score == 1 and "restates the question" in echo.reason


@pytest.mark.slow
def test_offline_judge_orders_planted_answers():
    from opensem.judge.offline import OfflineJudge

    judge = OfflineJudge()
    correct, wrong_fact, off_topic, empty = judge.judge([ITEM] * 4, [
        "You have six years from the breach to sue, under the Limitation Act 1980.",
        "You have twelve years from the breach to sue, under the Limitation Act 1980.",
        "Bananas are a good source of potassium.",
        "",
    ])
    assert correct.score >= 4 and wrong_fact.score < 4
    assert correct.score > wrong_fact.score > off_topic.score >= empty.score == 1
    assert wrong_fact.similarity > 0.7  # it reads like the golden answer - and still fails


# -- generation ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_batched_and_unbatched_greedy_answers_match(bundled_model_dir):
    from opensem.generate import answer_questions
    from opensem.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(bundled_model_dir)
    questions = ["What is a contract?", "How long do I have to sue for breach of contract in England?", "What is consideration?"]
    batched = answer_questions(model, tok, questions, "Answer briefly.", max_new_tokens=20, batch_size=3)
    single = [answer_questions(model, tok, [q], "Answer briefly.", max_new_tokens=20, batch_size=1)[0] for q in questions]
    assert batched == single and all(batched)


# -- LLM judge through the real SDKs ---------------------------------------------------------------
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_llm_judge_parses_retries_refusals_and_takes_the_median(project, monkeypatch, provider):
    from opensem.judge.llm_judge import LLMJudge

    monkeypatch.setenv("OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        url = server.url + ("/v1" if provider == "openai" else "")
        cfg = load_config(project, "legal", [f"judge.provider={provider}", "judge.model=gpt-4o-mini", f"judge.base_url={url}",
                                             "judge.repeats=3", "judge.max_concurrency=1", "judge.max_retries=1"])
        judge = LLMJudge(cfg, project / "judge-cache")
        # item 1: verdicts 5, then malformed (asked again -> 2), then 3 -> median 3
        # item 2: refused every time -> a judge failure, not a score
        # item 3: default grading: contains the reference answer -> 5, three times
        server.push("verdict:5", "malformed", "verdict:2", "verdict:3", "refuse", "refuse", "refuse", "refuse", "refuse", "refuse")
        verdicts = judge.judge([ITEM, ITEM, ITEM], ["Six years.", "whatever", ITEM.answer])
    assert verdicts[0].score == 3 and verdicts[0].reason == "scripted verdict 3"
    assert verdicts[1] is None
    assert verdicts[2].score == 5 and verdicts[2].key_fact_recall == 1.0
    assert judge.name == f"llm:{provider}:gpt-4o-mini"


def test_llm_judge_falls_back_to_json_object_when_the_server_refuses_json_schema(project, monkeypatch):
    from opensem.judge.llm_judge import LLMJudge

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        server.reject_json_schema = True
        cfg = load_config(project, "legal", ["judge.provider=openai", "judge.model=local", f"judge.base_url={server.url}/v1",
                                             "judge.max_retries=1"])
        judge = LLMJudge(cfg, project / "judge-cache")
        verdicts = judge.judge([ITEM, ITEM], [ITEM.answer, "Six years."])
    assert [v.score for v in verdicts] == [5, 2]
    assert judge.response_format_used == "json_object"
    assert [e["format"] for e in server.log].count("json_object") == 2


# -- baseline, evaluate, comparison ----------------------------------------------------------------
TINY_GOLDEN = {"items": [
    {"id": "z1", "question": "What colour is a Zorblat?", "answer": "A Zorblat is teal.", "key_facts": ["teal"], "tags": ["animals"]},
    {"id": "z2", "question": "Where do Frobnits live?", "answer": "Frobnits live in Oslo.", "key_facts": ["oslo"], "tags": ["places"]},
    {"id": "z3", "question": "How many legs does a Quimble have?", "answer": "A Quimble has seven legs.", "key_facts": ["seven|7"], "tags": ["animals"]},
]}
TRAIN = [(i["question"], i["answer"]) for i in TINY_GOLDEN["items"]]


@pytest.fixture
def tiny(project):
    sem = new_sem("tiny")
    sem.golden_set.write_text(json.dumps(TINY_GOLDEN))
    sem.processed_dir.mkdir(parents=True)
    rows = "".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n" for q, a in TRAIN)
    (sem.processed_dir / "train.jsonl").write_text(rows)
    return sem


FAST = ["model.system_prompt=Answer briefly.", "generation.max_new_tokens=16"]


@pytest.mark.slow
def test_baseline_then_evaluate_prints_the_comparison(tiny):
    runner = CliRunner()
    base = runner.invoke(app, ["baseline", "--sem", "tiny", *sum((["--set", s] for s in FAST), [])])
    assert base.exit_code == 0, base.output
    assert "controls: echo" in base.output and "shuffled" in base.output
    train = runner.invoke(app, ["train", "--sem", "tiny", *sum((["--set", s] for s in FAST + [
        "training.max_steps=16", "training.cpt_epochs=0", "training.batch_size=3", "training.learning_rate=2e-3", "training.lr_scheduler=constant",
        "training.warmup_ratio=0", "training.run_name=t1"]), [])])
    assert train.exit_code == 0, train.output
    ev = runner.invoke(app, ["evaluate", "--sem", "tiny", *sum((["--set", s] for s in FAST), [])])
    assert ev.exit_code == 0, ev.output
    assert "Baseline vs Fine-tuned" in ev.output and "tag animals" in ev.output
    headline = next(line for line in ev.output.splitlines() if line.startswith("Key-fact accuracy"))
    assert "points, 95% CI [" in headline and "Accuracy improved by" not in ev.output

    runs = {r.data.tags["opensem.stage"]: r for r in mlflow.search_runs(experiment_names=["opensem-tiny"], output_format="list")}
    b, e = runs["baseline"], runs["evaluate"]
    assert b.data.tags["opensem.golden_digest"] == e.data.tags["opensem.golden_digest"]
    assert e.data.tags["opensem.baseline_run_id"] == b.info.run_id
    assert e.data.tags["opensem.judge"] == NAME and e.data.tags["opensem.partial"] == "false"
    for key in ("mean_score", "ci_low", "ci_high", "pass_rate", "key_fact_recall", "echo_mean", "oracle_mean", "gen_tokens_per_s",
                "shuffled_pass_rate", "recall_gain", "recall_gain_ci_low"):
        assert key in e.data.metrics
    assert "soup_mean" not in e.data.metrics  # this SEM has no documents to make a soup from
    assert e.data.metrics["oracle_pass_rate"] == 1 and e.data.metrics["echo_mean"] == 1 and e.data.metrics["shuffled_pass_rate"] == 0
    assert e.data.tags["opensem.judge_unreliable"] == "false"
    assert e.data.metrics["key_fact_recall"] > b.data.metrics["key_fact_recall"]  # it learned the facts
    table = mlflow.load_table("eval/per_question.json", run_ids=[e.info.run_id])
    assert list(table["id"]) == ["z1", "z2", "z3"] and {"answer", "score", "reason", "seconds"} <= set(table.columns)

    # the MLflow model the training logged, evaluated by URI, answers as the adapter folder did
    uri = json.loads((tiny.adapters_dir / "t1" / "opensem_run.json").read_text())["model_uri"]
    (tiny.adapters_dir / "t1").rename(tiny.adapters_dir.parent / "t1-moved")  # so it cannot answer from the folder
    by_uri = runner.invoke(app, ["evaluate", "--sem", "tiny", "--model", uri, *sum((["--set", s] for s in FAST), [])])
    assert by_uri.exit_code == 0, by_uri.output
    last = mlflow.search_runs(experiment_names=["opensem-tiny"], filter_string="tags.`opensem.stage` = 'evaluate'",
                              order_by=["start_time DESC"], output_format="list")[0]
    assert last.info.run_id != e.info.run_id and last.data.tags["opensem.model_under_test"] == uri
    assert list(mlflow.load_table("eval/per_question.json", run_ids=[last.info.run_id])["answer"]) == list(table["answer"])


@pytest.mark.slow
def test_comparison_refuses_a_changed_golden_set_or_judge(tiny, monkeypatch):
    runner = CliRunner()
    sets = sum((["--set", s] for s in FAST), [])
    assert runner.invoke(app, ["baseline", "--sem", "tiny", *sets]).exit_code == 0
    adapter = tiny.adapters_dir / "fake"
    # an "adapter" is not needed to reach the comparison check: --model is resolved after it
    changed = dict(TINY_GOLDEN, items=TINY_GOLDEN["items"][:2])
    tiny.golden_set.write_text(json.dumps(changed))
    from opensem.judge.evaluate import find_baseline
    from opensem.golden import golden_digest

    cfg = load_config(tiny.root, "tiny", FAST)
    with pytest.raises(OpenSEMError, match="golden_digest"):
        find_baseline(tiny, cfg, golden_digest(load_golden(tiny.golden_set)), NAME)
    tiny.golden_set.write_text(json.dumps(TINY_GOLDEN))
    with pytest.raises(OpenSEMError, match="judge 'offline-keyfact-v2' vs 'llm:openai:gpt-4o-mini'"):
        find_baseline(tiny, cfg, golden_digest(load_golden(tiny.golden_set)), "llm:openai:gpt-4o-mini")
    # the control is asked the same way as the model under test: a new system prompt, a new baseline
    reworded = load_config(tiny.root, "tiny", [*FAST, "model.system_prompt=Answer in one word."])
    with pytest.raises(OpenSEMError, match="prompt_digest"):
        find_baseline(tiny, reworded, golden_digest(load_golden(tiny.golden_set)), NAME)
    # answers generated on a GPU in 16 bits are not compared with answers generated on this CPU
    baseline = find_baseline(tiny, cfg, golden_digest(load_golden(tiny.golden_set)), NAME)
    assert baseline.data.tags["opensem.answered_on"] == "cpu float32"
    mlflow.MlflowClient().set_tag(baseline.info.run_id, "opensem.answered_on", "cuda bfloat16")
    with pytest.raises(OpenSEMError, match="answered_on 'cuda bfloat16' vs 'cpu float32'"):
        find_baseline(tiny, cfg, golden_digest(load_golden(tiny.golden_set)), NAME)
    assert not adapter.exists()


@pytest.mark.slow
def test_a_judge_that_passes_everything_is_marked_unreliable(tiny, monkeypatch):
    """An LLM judge (real SDK, local server) that gives 5 to every answer: the shuffled control
    exposes it, the run is tagged unreliable, and the output says so."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        server.push(*["verdict:5"] * 12)  # 3 answers + echo, oracle and shuffled controls for each
        sets = [*FAST, "judge.provider=openai", "judge.model=gpt-4o-mini", f"judge.base_url={server.url}/v1"]
        result = CliRunner().invoke(app, ["baseline", "--sem", "tiny", *sum((["--set", s] for s in sets), [])])
    assert result.exit_code == 0, result.output
    assert "judge unreliable: the shuffled control passes 100% of items" in " ".join(result.output.split())
    run = mlflow.search_runs(experiment_names=["opensem-tiny"], output_format="list")[0]
    assert run.data.tags["opensem.judge_unreliable"] == "true"
    assert run.data.metrics["shuffled_pass_rate"] == 1.0 and run.data.metrics["echo_mean"] == 5


def test_partial_baseline_is_tagged_and_never_used(tiny):
    from opensem.golden import golden_digest
    from opensem.judge.evaluate import find_baseline

    result = CliRunner().invoke(app, ["baseline", "--sem", "tiny", "--limit", "1", *sum((["--set", s] for s in FAST), [])])
    assert result.exit_code == 0, result.output
    run = mlflow.search_runs(experiment_names=["opensem-tiny"], output_format="list")[0]
    assert run.data.tags["opensem.partial"] == "true" and run.data.metrics["n_items"] == 1
    with pytest.raises(OpenSEMError, match="no complete baseline"):
        find_baseline(tiny, load_config(tiny.root, "tiny"), golden_digest(load_golden(tiny.golden_set)), NAME)


def test_example_golden_item_is_refused(project):
    new_sem("fresh")
    result = CliRunner().invoke(app, ["baseline", "--sem", "fresh"])
    assert result.exit_code == 2 and "example item" in result.output


def test_an_adapter_is_not_evaluated_on_another_base(project):
    # trained under another recipe: loading it onto this config's base would fail, or worse, not
    adapter = project / "models" / "legal" / "adapters" / "qwen-run"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "training_metadata.json").write_text(json.dumps(
        {"base_model": "Qwen/Qwen2.5-1.5B-Instruct", "recipe": "qwen2.5/1.5b_lora_cuda", "finished": "2026-01-01T00:00:00"}))
    result = CliRunner().invoke(app, ["evaluate", "--sem", "legal", "--adapter", "qwen-run"])
    assert result.exit_code == 2, result.output
    assert "trained on Qwen/Qwen2.5-1.5B-Instruct, but model.base here is HuggingFaceTB/SmolLM2-135M-Instruct" in result.output
    assert "--set recipe=qwen2.5/1.5b_lora_cuda" in result.output
    assert not mlflow.search_runs(search_all_experiments=True, output_format="list")  # refused before any run


# -- promptfoo ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_promptfoo_config_runs_under_real_promptfoo(tiny):
    import shutil

    import yaml

    from opensem.judge.promptfoo import promptfoo_command, run_promptfoo

    if promptfoo_command(tiny.root) is None or not shutil.which("node"):
        pytest.skip("Node.js is not installed")
    items = TINY_GOLDEN["items"]
    items[1] = dict(items[1], asserts=[{"type": "icontains", "value": "oslo"}])
    tiny.golden_set.write_text(json.dumps(TINY_GOLDEN))
    cfg = load_config(tiny.root, "tiny", FAST)
    answers = {
        items[0]["question"]: "A Zorblat is teal.",          # right
        items[1]["question"]: "Frobnits live in Paris.",     # wrong fact: fails both asserts
        items[2]["question"]: "It has seven legs.",          # right, other words
    }
    result = run_promptfoo(tiny, cfg, adapter="t1", model_uri=None, answers=answers)
    assert "error" not in result, result.get("error")
    details = [(r["testCase"]["description"], r["success"], r.get("error")) for r in result["results"]["results"]["results"]]
    assert (result["passed"], result["failed"]) == (2, 1), details
    outcomes = {r["testCase"]["description"]: r["success"] for r in result["results"]["results"]["results"]}
    assert outcomes == {"z1": True, "z2": False, "z3": True}
    written = yaml.safe_load((tiny.evals_dir / "promptfooconfig.yaml").read_text())
    assert written["prompts"] == ["{{question}}"] and len(written["tests"]) == 3
    assert written["tests"][1]["assert"][1] == {"type": "icontains", "value": "oslo"}


@pytest.mark.slow
def test_promptfoo_provider_answers_with_the_model_on_a_cache_miss(tiny):
    from opensem.judge.promptfoo_provider import call_api

    conf = {"project": str(tiny.root), "sem": "tiny", "adapter": None, "model_uri": None, "max_new_tokens": 8}
    first = call_api("What is the capital of France?", {"config": conf}, {})
    assert "Paris" in first["output"]
    assert call_api("What is the capital of France?", {"config": conf}, {}) == first  # now from the cache


def test_judge_name_is_known_without_loading_the_judge(project):
    from opensem.judge.evaluate import judge_name

    assert judge_name(load_config(project, "legal")) == NAME
    assert judge_name(load_config(project, "legal", ["judge.provider=openai", "judge.model=gpt-4o-mini"])) == "llm:openai:gpt-4o-mini"


def test_answer_format_counts_fragments_and_long_answers():
    from opensem.judge.evaluate import answer_format

    answers = [
        "A contract needs six essential elements.",                      # complete, one sentence
        "No. A minor's contract is voidable at the minor's option.",     # complete after Yes./No.
        "The limitation period for a simple contract is six",            # trailing fragment
        "One. Two sentences here. Three sentences here. And this is the fourth one.",  # four sentences
    ]
    shape = answer_format(answers)
    assert shape["complete_answer_share"] == 0.75 and shape["short_answer_share"] == 0.75


def test_the_offline_judges_vocabulary_is_versioned_with_its_name():
    """The offline judge counts words with opensem/text/words.py, which the forge's filters share.
    A change there changes every offline score: it must come with a new judge name (NAME), so that
    no evaluation is compared with a baseline judged by other words. Update both together."""
    import hashlib
    import inspect

    from opensem.judge.offline import NAME
    from opensem.text import words

    source = inspect.getsource(words.content_words) + inspect.getsource(words.words)
    digest = hashlib.sha256(("\n".join(sorted(words.STOPWORDS)) + words._WORD.pattern + source).encode()).hexdigest()[:12]
    assert (NAME, digest) == ("offline-keyfact-v2", "aa031c67d9d1")
