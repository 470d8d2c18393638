"""The bad-input suite: every way a user can hand OpenSEM something wrong, in one table.

Each case makes one bad input in a fresh copy of the project (the sample SEM, with forge output
made by hand where a case needs it), runs one command as a user would, and expects: exit code 2,
exactly one `error:` line that contains the words naming what was wrong, no traceback, and no
file written or changed outside MLflow's own store and the caches."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opensem.cli import app

ROW = {"messages": [{"role": "user", "content": "What is an offer?"}, {"role": "assistant", "content": "An offer is a promise."}]}


def processed(root: Path, train: str | None = None, test: str | None = None) -> None:
    """Forge output for the legal SEM, made by hand (the suite must not pay for a forge per case)."""
    out = root / "data" / "legal" / "processed"
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text(train if train is not None else json.dumps(ROW) + "\n")
    if test != "absent":
        (out / "test.jsonl").write_text(test if test is not None else json.dumps(ROW) + "\n")


def write(relative: str, text: str | bytes):
    def make(root: Path) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
    return make


def only_raw(name: str, content: str | bytes | None = None, link_to: str | None = None):
    """The legal raw folder holding just one (bad) document."""
    def make(root: Path) -> None:
        raw = root / "data" / "legal" / "raw"
        for p in raw.iterdir():
            p.unlink()
        if link_to:
            os.symlink(link_to, raw / name)
        else:
            (raw / name).write_bytes(content if isinstance(content, bytes) else (content or "").encode())
    return make


def golden(data) -> callable:
    return write("evals/legal/golden_set.json", data if isinstance(data, str) else json.dumps(data))


ITEM = {"id": "q1", "question": "What is an offer?", "answer": "An offer is a promise to be bound.", "key_facts": ["promise"]}


def both(*makers):
    def make(root: Path) -> None:
        for m in makers:
            m(root)
    return make


def env(**variables):
    def make(root: Path) -> None:
        for k, v in variables.items():
            os.environ[k] = v
    return make


def nothing(root: Path) -> None:
    pass


LEGAL = ["--sem", "legal"]
CASES = [
    # -- command-line arguments --------------------------------------------------------------
    ("unknown SEM", nothing, ["forge", "--sem", "nosuch"], "nosuch"),
    ("SEM name with a space", nothing, ["new-sem", "Bad Name"], "Bad Name"),
    ("SEM name with a path", nothing, ["new-sem", "../escape"], "../escape"),
    ("SEM that exists", nothing, ["new-sem", "legal"], "already exists"),
    ("--set without =", nothing, ["config", *LEGAL, "--set", "training.learning_rate"], "training.learning_rate"),
    ("--set unknown key", nothing, ["config", *LEGAL, "--set", "training.learnin_rate=1"], "learnin_rate"),
    ("--set wrong type", nothing, ["config", *LEGAL, "--set", "training.learning_rate=fast"], "learning_rate"),
    ("--set out of range", nothing, ["config", *LEGAL, "--set", "lora.r=0"], "lora.r"),
    ("--set unknown provider", nothing, ["config", *LEGAL, "--set", "forge.teacher.provider=gemini"], "provider"),
    ("--set retrieval.top_k out of range", nothing, ["config", *LEGAL, "--set", "retrieval.top_k=0"], "retrieval.top_k"),
    ("--set unknown section", nothing, ["config", *LEGAL, "--set", "trainer.epochs=1"], "trainer"),
    ("recipe that does not exist", nothing, ["config", *LEGAL, "--set", "recipe=nosuch/1b_lora_cpu"], "nosuch/1b_lora_cpu"),
    ("MLproject overrides malformed", nothing, ["config", *LEGAL, "--overrides", "training.epochs"], "training.epochs"),
    ("adapter run that does not exist", nothing, ["promote", *LEGAL, "--run", "no-such-run"], "no-such-run"),
    ("promote with nothing evaluated", nothing, ["promote", *LEGAL], "evaluate"),
    ("train before forge", nothing, ["train", *LEGAL], "forge"),
    ("evaluate before training", processed, ["evaluate", *LEGAL], "opensem train"),
    ("evaluate a model that was never logged", nothing, ["evaluate", *LEGAL, "--model", "models:/opensem-legal@champion"],
     "cannot load model"),
    ("evaluate a folder that is not a logged model", nothing, ["evaluate", *LEGAL, "--model", "data/legal/raw"], "not a model"),
    # -- config files, every layer -------------------------------------------------------------
    ("defaults.yaml not YAML", write("configs/defaults.yaml", "training: [unclosed\n"), ["config", *LEGAL], "defaults.yaml"),
    ("SEM config not YAML", write("configs/sems/legal.yaml", "forge:\n  teacher: : :\n"), ["config", *LEGAL], "legal.yaml"),
    ("SEM config a list", write("configs/sems/legal.yaml", "- a\n- b\n"), ["config", *LEGAL], "legal.yaml"),
    ("SEM config unknown key", write("configs/sems/legal.yaml", "training:\n  epochz: 3\n"), ["config", *LEGAL], "epochz"),
    ("SEM config wrong type", write("configs/sems/legal.yaml", "training:\n  batch_size: many\n"), ["config", *LEGAL], "batch_size"),
    ("recipe file unknown key", write("configs/recipes/smollm2/135m_lora_cpu.yaml", "lora:\n  rank: 8\n"), ["config", *LEGAL], "rank"),
    ("literal password in storage", nothing,
     ["config", *LEGAL, "--set", "sweep.storage=postgresql://u:hunter2@db/optuna"], "sweep.storage"),
    ("sweep space on an unknown key", nothing, ["sweep", *LEGAL, "--set", "sweep.space={training.lr: {type: float, low: 0.1, high: 1}}"],
     "training.lr"),
    # -- golden sets ------------------------------------------------------------------------------
    ("golden set missing", lambda r: (r / "evals/legal/golden_set.json").unlink(), ["baseline", *LEGAL], "not found"),
    ("golden set not JSON", golden("{ items: "), ["baseline", *LEGAL], "invalid JSON"),
    ("golden set empty", golden({"items": []}), ["baseline", *LEGAL], "non-empty list"),
    ("golden item without question", golden({"items": [{"id": "q1", "answer": "x", "key_facts": ["x"]}]}), ["baseline", *LEGAL], "question"),
    ("golden item with a blank key fact", golden({"items": [ITEM | {"key_facts": [" "]}]}), ["baseline", *LEGAL], "blank"),
    ("golden key fact a bad regex", golden({"items": [ITEM | {"key_facts": ["(promise"]}]}), ["baseline", *LEGAL], "regular expression"),
    ("golden ids twice", golden({"items": [ITEM, ITEM]}), ["baseline", *LEGAL], "duplicate id"),
    ("golden key fact not in its answer", golden({"items": [ITEM | {"key_facts": ["acceptance"]}]}), ["baseline", *LEGAL],
     "golden check"),
    # -- raw documents ---------------------------------------------------------------------------
    ("raw folder missing", lambda r: __import__("shutil").rmtree(r / "data/legal/raw"), ["forge", *LEGAL], "does not exist"),
    ("raw folder empty", only_raw(".keep"), ["forge", *LEGAL], "is empty"),
    ("raw document empty", only_raw("a.md", ""), ["forge", *LEGAL], "empty"),
    ("raw document binary", only_raw("a.md", b"\x00\x01\x02PK\x03\x04" * 100), ["forge", *LEGAL], "binary"),
    ("raw document not UTF-8", only_raw("a.txt", "Caf\u00e9 cr\u00e8me law".encode("utf-16")), ["forge", *LEGAL], "a.txt"),
    ("raw document unsupported", only_raw("a.xlsx", b"PK\x03\x04"), ["forge", *LEGAL], "unsupported"),
    ("raw document a corrupt PDF", only_raw("a.pdf", b"%PDF-1.4 garbage"), ["forge", *LEGAL], "unreadable"),
    ("raw document links outside", only_raw("a.md", link_to="/etc/passwd"), ["forge", *LEGAL], "outside_folder"),
    ("raw document huge", only_raw("a.md", b" " * (65 * 2**20)), ["forge", *LEGAL], "too_large"),
    # -- processed files edited by hand ------------------------------------------------------------
    ("train.jsonl not JSON", lambda r: processed(r, train="{not json\n"), ["train", *LEGAL], "train.jsonl"),
    ("train.jsonl row without messages", lambda r: processed(r, train='{"text": "hi"}\n'), ["train", *LEGAL], "train.jsonl"),
    ("train.jsonl empty", lambda r: processed(r, train=""), ["train", *LEGAL], "train.jsonl"),
    ("train.jsonl wrong role", lambda r: processed(r, train=json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n"),
     ["train", *LEGAL], "train.jsonl"),
    ("pairs forged closed book, trained open book", both(processed, write("data/legal/processed/manifest.json", '{"retrieval": null}')),
     ["train", *LEGAL, "--set", "retrieval.enabled=true"], "opensem forge --sem legal"),
    # -- environment variables ---------------------------------------------------------------------
    ("OPENAI_API_KEY missing", nothing, ["forge", *LEGAL, "--set", "forge.teacher.provider=openai", "--set", "forge.teacher.model=gpt-4o-mini"],
     "OPENAI_API_KEY"),
    ("api_key_env names an unset variable", nothing,
     ["forge", *LEGAL, "--set", "forge.teacher.provider=anthropic", "--set", "forge.teacher.model=claude-3-5-haiku-latest",
      "--set", "forge.teacher.api_key_env=MY_UNSET_KEY"], "MY_UNSET_KEY"),
    ("storage variable unset", processed, ["sweep", *LEGAL, "--set", "sweep.storage=postgresql+psycopg2://u:${UNSET_DB_PW}@127.0.0.1:1/o"],
     "UNSET_DB_PW"),
    ("OPENSEM_HOME not a project", env(OPENSEM_HOME="/tmp"), ["forge", *LEGAL], "OPENSEM_HOME"),
    ("tracking server down", env(MLFLOW_TRACKING_URI="http://127.0.0.1:9"), ["forge", *LEGAL], "does not answer"),
    ("paid teacher, cap, no price", env(OPENAI_API_KEY="sk-test"),
     ["forge", *LEGAL, "--set", "forge.teacher.provider=openai", "--set", "forge.teacher.model=my-finetune",
      "--set", "forge.teacher.base_url=http://127.0.0.1:9/v1", "--set", "forge.max_cost_usd=1"], "forge.prices"),
]


def _files(root: Path) -> dict[str, int]:
    skip = ("mlflow.db", "mlruns", "optuna.db")
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")
            if (p.is_file() or p.is_symlink()) and not str(p.relative_to(root)).startswith(skip) and "/cache/" not in str(p)}


def test_the_suite_covers_forty_distinct_inputs():
    assert len({name for name, *_ in CASES}) == len(CASES) >= 40


@pytest.mark.parametrize("name, make, args, names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(project, monkeypatch, name, make, args, names):
    saved = dict(os.environ)
    try:
        make(project)
        before = _files(project)
        result = CliRunner().invoke(app, args)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    output = result.output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, f"{name}: exit {result.exit_code}: {output[-1500:]} {result.exception!r}"
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(errors) == 1 and names.lower() in " ".join(output.split()).lower(), output[-1500:]
    after = _files(project)
    written = sorted(set(after) - set(before)) + sorted(k for k in before if k in after and after[k] != before[k])
    assert written == [], f"{name}: wrote {written}"


# -- kill -9 in each stage, then the same command again ---------------------------------------------
KILL_DOC = """# Widgets

## Colours

A **Zorblat** is a teal widget. A **Frobnit** is an orange widget. Zorblats are sold in boxes of twelve.

## Sizes

The largest widget weighs 400 grams. Widget makers formed a guild in 1950. The guild meets in Leeds every spring.
"""
KILL_GOLDEN = {"items": [
    {"id": "w1", "question": "What colour is a Zorblat widget?", "answer": "A Zorblat is teal.", "key_facts": ["teal"]},
    {"id": "w2", "question": "When did the widget makers form their guild?", "answer": "They formed it in 1950.", "key_facts": ["1950"]},
]}


@pytest.mark.slow
@pytest.mark.usefixtures("bundled_model_dir")
def test_kill_9_in_each_stage_then_the_same_command_finishes_and_repeats_no_paid_request(project):
    """A paid teacher and a paid judge (the real openai SDK against the local server); each stage is
    killed with -9 while it works (forge and the judge with a request in flight, training after a
    checkpoint), then run again: it finishes, and no request that was answered is sent again."""
    import signal
    import subprocess
    import sys
    import time

    from llm_server import FakeLLMServer
    from opensem.workspace import new_sem

    sem = new_sem("widgets")
    (sem.raw_dir / "widgets.md").write_text(KILL_DOC)
    sem.golden_set.write_text(json.dumps(KILL_GOLDEN))
    with FakeLLMServer() as server:
        paid = ["forge.teacher.provider=openai", "forge.teacher.model=gpt-4o-mini", f"forge.teacher.base_url={server.url}/v1",
                "forge.teacher.max_concurrency=1", "forge.teacher.pairs_per_chunk=3", "judge.provider=openai", "judge.model=gpt-4o-mini",
                f"judge.base_url={server.url}/v1", "judge.max_concurrency=1", "forge.prices={gpt-4o-mini: {input_per_mtok: 0.15, output_per_mtok: 0.6}}",
                "model.system_prompt=Answer briefly.", "generation.max_new_tokens=12", "training.cpt_epochs=0", "training.max_steps=12",
                "training.batch_size=1", "training.checkpoint_steps=5", "training.logging_steps=1",
                # the last step's adapter: an early best epoch can answer as the base model did, and then
                # evaluate's verdicts all come from the judge cache, with no request to kill it in
                "training.keep_best=false"]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT", "MLFLOW_RUN"))}
        env |= {"OPENAI_API_KEY": "sk-test", "OPENSEM_HOME": str(project)}

        def stage(name: str, underway) -> None:
            cmd = [sys.executable, "-m", "opensem", name, "--sem", "widgets", *sum((["--set", s] for s in paid), [])]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.time() + 300
            while not underway() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, f"{name} ended before it could be killed"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            server.release.set()  # the held request is dropped; later requests are answered
            again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
            assert again.returncode == 0, f"{name} again: {again.stderr[-2000:]}"
            server.release.clear()

        def judge_in_flight(before: int):
            return lambda: len(server.log) >= before + 2  # one verdict answered, the next held

        server.push("ok", "hold")
        stage("forge", lambda: len(server.log) >= 2)
        assert (sem.processed_dir / "train.jsonl").is_file()
        server.push("verdict:4", "hold")
        stage("baseline", judge_in_flight(len(server.log)))
        stage("train", lambda: any(sem.adapters_dir.glob("*/checkpoints/checkpoint-5/trainer_state.json")))
        server.push("verdict:4", "hold")
        stage("evaluate", judge_in_flight(len(server.log)))
    answered = server.successes()
    assert len(answered) == len(set(answered)), "a paid request that was answered was sent again"
    assert [e["behaviour"] for e in server.log].count("hold") == 3
