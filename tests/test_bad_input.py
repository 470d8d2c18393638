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


def nan_weights(root: Path) -> None:
    """An adapter weights file, readable, whose numbers are NaN (what a diverged training wrote)."""
    import torch
    from safetensors.torch import save_file

    folder = root / "models/legal/adapters/x"
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"base_model.model.layers.0.q_proj.lora_B.weight": torch.full((4, 4), float("nan"))}, str(folder / "adapter_model.safetensors"))


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
    ("raw document not UTF-8", only_raw("a.txt", "Caf\u00e9 cr\u00e8me law".encode("latin-1")), ["forge", *LEGAL], "a.txt: not_utf8"),
    ("raw document unsupported", only_raw("a.xlsx", b"PK\x03\x04"), ["forge", *LEGAL], "unsupported"),
    ("raw document a corrupt PDF", only_raw("a.pdf", b"%PDF-1.4 garbage"), ["forge", *LEGAL], "a.pdf: unreadable (Pdf"),
    ("raw document only navigation", only_raw("a.html", "<ul><li><a href='/x'>Home</a></li></ul><a href='/n'>Next</a> | Previous"),
     ["forge", *LEGAL], "a.html: no_sentences"),
    ("raw document links outside", only_raw("a.md", link_to="/etc/passwd"), ["forge", *LEGAL], "outside_folder"),
    ("raw document huge", only_raw("a.md", b" " * (65 * 2**20)), ["forge", *LEGAL], "too_large"),
    ("a file where a new SEM's folder belongs", write("evals/medical", "notes"), ["new-sem", "medical"], "is a file, where"),
    ("a file where processed/ belongs", write("data/legal/processed", "notes"), ["forge", *LEGAL], "is a file, where"),
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
    ("tracking URI a bare path", env(MLFLOW_TRACKING_URI="./mlruns"), ["forge", *LEGAL], "is a path, not a URI"),
    ("tracking store in a folder that is not there", env(MLFLOW_TRACKING_URI="sqlite:////nonexistent/dir/x.db"), ["forge", *LEGAL],
     "/nonexistent/dir does not exist"),
    ("tracking file store that cannot be made", env(MLFLOW_TRACKING_URI="file:///proc/nope"), ["forge", *LEGAL], "cannot be made"),
    ("W&B key too short", env(WANDB_API_KEY="abc123"), ["forge", *LEGAL, "--set", "tracking.wandb.enabled=true",
                                                         "--set", "tracking.wandb.mode=online"], "WANDB_API_KEY is 6 characters"),
    # -- values pydantic would bend, and files of the stages damaged -------------------------------
    ("a number given as true", nothing, ["config", *LEGAL, "--set", "training.batch_size=true"], "expected a number, not true"),
    ("epochs infinite", processed, ["train", *LEGAL, "--set", "training.epochs=.inf"], "finite number"),
    ("chunk overlap as large as a chunk", nothing, ["forge", *LEGAL, "--set", "forge.chunk_overlap=500"], "must be below forge.chunk_tokens"),
    ("a key twice in one file", write("configs/sems/legal.yaml", "training:\n  epochs: 2\n  epochs: 3\n"), ["config", *LEGAL], "given twice"),
    ("a bad value in defaults.yaml that the recipe overrides",
     write("configs/defaults.yaml", "recipe: smollm2/135m_lora_cpu\ntraining:\n  batch_size: -8\n"), ["config", *LEGAL], "defaults.yaml"),
    ("forge manifest cut short", both(processed, write("data/legal/processed/manifest.json", '{"digests": {"tr')), ["train", *LEGAL],
     "manifest.json is damaged"),
    ("test.jsonl deleted after forge", both(lambda r: processed(r, test="absent"), write("data/legal/processed/manifest.json",
                                                                                           '{"digests": {"test": "00"}}')),
     ["train", *LEGAL], "test.jsonl is missing"),
    ("pipeline.json cut short", write("data/legal/pipeline.json", '{"stages": {'), ["pipeline", *LEGAL], "pipeline.json is damaged"),
    ("an adapter's metadata cut short", both(write("models/legal/adapters/x/adapter_config.json", "{}"),
                                            write("models/legal/adapters/x/training_metadata.json", '{"base_')),
     ["evaluate", *LEGAL, "--adapter", "x"], "training_metadata.json is damaged"),
    ("an adapter's weights cut short", both(write("models/legal/adapters/x/adapter_config.json", "{}"),
                                            write("models/legal/adapters/x/adapter_model.safetensors", b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a")),
     ["evaluate", *LEGAL, "--adapter", "x"], "cannot be read"),
    ("an adapter's weights not finite", both(write("models/legal/adapters/x/adapter_config.json", "{}"), nan_weights),
     ["evaluate", *LEGAL, "--adapter", "x"], "not finite"),
    ("an adapter's config deleted", nan_weights, ["evaluate", *LEGAL, "--adapter", "x"], "adapter_config.json is missing"),
    ("a learning rate of inf (a string to YAML)", nothing, ["config", *LEGAL, "--set", "training.learning_rate=inf"], "finite number"),
    ("a tracking URI of no known kind", env(MLFLOW_TRACKING_URI="foo://bar"), ["forge", *LEGAL], "no store of kind 'foo'"),
    ("a file where raw/ belongs", both(lambda r: __import__("shutil").rmtree(r / "data/legal/raw"), write("data/legal/raw", "notes")),
     ["forge", *LEGAL], "is a file, where the SEM's folder of documents belongs"),
    ("an API key pasted with a typographic quote", env(OPENAI_API_KEY="\u201csk-test\u201d"),
     ["forge", *LEGAL, "--set", "forge.teacher.provider=openai", "--set", "forge.teacher.model=gpt-4o-mini"],
     "$OPENAI_API_KEY holds a character an API key cannot have (character 1 of 9"),
    ("a tracking database whose header is damaged", both(write("bad.db", b"SQLite farmat 3\x00" + b"\x00" * 4096),
                                                           env(MLFLOW_TRACKING_URI="sqlite:///bad.db")),
     ["forge", *LEGAL], "bad.db is damaged"),
    ("serve on a port that is no port", nothing, ["serve", *LEGAL, "--port", "99999"], "not a TCP port"),
    ("export in a format not written", nothing, ["export", *LEGAL, "--format", "onnx"], "--format gguf"),
    ("export at an unknown precision", nothing, ["export", *LEGAL, "--quant", "q3"], "q8_0"),
    ("export with no champion", nothing, ["export", *LEGAL], "no version with alias 'champion'"),
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


# -- inputs where the run sensibly goes on, or a check that must say no ---------------------------------
def test_a_utf16_document_is_read_as_text(tmp_path):
    from opensem.text.ingest import ingest

    (tmp_path / "notes.txt").write_bytes("A Zorblat is teal. Caf\u00e9 law applies.".encode("utf-16"))
    docs, skipped = ingest(tmp_path)
    assert skipped == [] and "A Zorblat is teal. Caf\u00e9 law applies." in docs[0].text


def test_golden_check_refuses_the_placeholder_new_sem_wrote(project):
    made = CliRunner().invoke(app, ["new-sem", "fresh"])
    assert made.exit_code == 0, made.output
    checked = CliRunner().invoke(app, ["golden", "check", "--sem", "fresh"])
    assert checked.exit_code == 2 and "placeholder" in checked.output, checked.output


def test_new_sem_outside_a_project_refuses_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENSEM_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["new-sem", "medical"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "not an OpenSEM project" in errors[0], result.output
    assert list(tmp_path.iterdir()) == []


def test_an_exported_wandb_offline_wins_over_a_key(project, monkeypatch):
    from opensem.config import load_config
    from opensem.tracking import wandb_mode

    cfg = load_config(project, "legal", ["tracking.wandb.enabled=true"])
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode(cfg) == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert wandb_mode(cfg) == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    assert wandb_mode(cfg) == "offline"


def test_an_unreachable_wandb_server_is_one_line(project, monkeypatch):
    """W&B online against a server that is not there: one clear error, within W&B's init timeout,
    when the stage's run opens (before the stage does any work)."""
    import socket

    from opensem.config import load_config
    from opensem.errors import OpenSEMError
    from opensem.tracking import stage_run
    from opensem.workspace import open_sem

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    cfg = load_config(project, "legal", ["tracking.wandb.enabled=true", "tracking.wandb.mode=online"])
    with pytest.raises(OpenSEMError, match="W&B could not start an online run") as refused:
        with stage_run(open_sem("legal"), "report", cfg):
            pytest.fail("the stage must not start")
    assert "WANDB_MODE=offline" in str(refused.value) and "\n" not in str(refused.value)


def test_an_adapter_whose_metadata_is_damaged_is_left_out_of_the_newest(project):
    from opensem.judge.evaluate import resolve_adapter
    from opensem.workspace import open_sem

    sem = open_sem("legal")
    for name, metadata in (("good", '{"finished": "2026-12-01T00:00:00+00:00"}'), ("broken", '{"fini')):
        (sem.adapters_dir / name).mkdir(parents=True)
        (sem.adapters_dir / name / "training_metadata.json").write_text(metadata)
    assert resolve_adapter(sem, None).name == "good"


@pytest.mark.parametrize("error, words", [
    (PermissionError(13, "Permission denied", "data/legal/processed"), "cannot write data/legal/processed: Permission denied"),
    (OSError(28, "No space left on device", "mlflow.db"), "the disk is full writing mlflow.db"),
])
def test_a_folder_the_machine_will_not_let_a_stage_write_is_one_line(error, words):
    """What the operating system refuses (a folder another user owns, a full disk) is one line and
    exit 2 from every command; raised here directly, since this suite runs as root, whom
    permissions do not stop."""
    import typer

    from opensem.cli import user_errors

    @user_errors
    def stage():
        raise error

    command = typer.Typer()
    command.command()(stage)
    result = CliRunner().invoke(command, [])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {words}"), result.output


def test_a_stage_run_outside_a_project_says_so_and_not_to_make_a_sem(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENSEM_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["forge", "--sem", "legal"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "is not an OpenSEM project" in errors[0], result.output
    assert "new-sem" not in errors[0] and list(tmp_path.iterdir()) == []


def test_serving_on_a_port_another_program_holds_is_one_line(project):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        result = CliRunner().invoke(app, ["serve", "--sem", "legal", "--port", str(held.getsockname()[1])])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "cannot listen on 127.0.0.1" in errors[0], result.output


def test_a_tracking_database_that_cannot_grow_is_one_line_and_the_outputs_stay(project):
    """A full disk under mlflow.db, made real: the stage's process may not grow any file past the
    database's size (RLIMIT_FSIZE, as a full disk would stop it), so SQLite fails with "disk I/O
    error" when MLflow writes the run. One line naming the store, exit 2, and the forge's outputs
    from the run before are byte-identical."""
    import resource
    import signal
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_EXPERIMENT", "MLFLOW_RUN", "MLFLOW_TRACKING"))}
    env["OPENSEM_HOME"] = str(project)
    forge = [sys.executable, "-m", "opensem", "forge", "--sem", "legal"]
    first = subprocess.run(forge, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    database = project / "mlflow.db"
    processed = project / "data" / "legal" / "processed"
    before = {p.name: p.read_bytes() for p in processed.iterdir() if p.is_file()}
    limit = database.stat().st_size

    def no_file_past_the_database():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    again = subprocess.run([*forge, "--set", "forge.seed=7"], env=env, capture_output=True, text=True, timeout=600,
                           preexec_fn=no_file_past_the_database)
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert again.returncode == 2 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert len(errors) == 1 and f"the MLflow store sqlite:///{database} could not be written" in errors[0], again.stderr[-3000:]
    assert "free some space" in errors[0]
    assert {p.name: p.read_bytes() for p in processed.iterdir() if p.is_file()} == before
