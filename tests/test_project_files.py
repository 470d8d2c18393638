"""MLproject, conda.yaml, entry points and .gitignore agree with the package."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest
import yaml

from conftest import REPO
from opensem.stages import STAGES


def test_mlproject_has_an_entry_point_per_stage():
    project = yaml.safe_load((REPO / "MLproject").read_text())
    assert set(project["entry_points"]) == set(STAGES)
    for name, entry in project["entry_points"].items():
        assert set(entry["parameters"]) == {"sem", "overrides"}
        assert f"entrypoints/{name}.py" in entry["command"]
        assert (REPO / "entrypoints" / f"{name}.py").is_file()


def test_conda_env_matches_pyproject():
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert sorted(p for p in pip if not p.startswith("-e")) == sorted(core)


@pytest.mark.parametrize("path", ["mlflow.db", "mlflow.db.lock", "optuna.db", "optuna.db.lock", "mlruns/x", "wandb/x", "models/legal/adapters/x", "data/legal/processed/train.jsonl", "data/legal/pipeline.json", "data/legal/cache/x", ".venv/x", "reports/legal/x", "node_modules/x", ".venv-sky/x", ".venv-gpu-api/x", ".opensem-infra/x"])
def test_run_outputs_are_ignored(path):
    result = subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO)
    assert result.returncode == 0, path


def test_a_bench_takes_its_arguments_and_an_unknown_one_is_named(tmp_path):
    """`python -m bench forge_yield FOLDER` passes the folder on (the README's commands with
    arguments once tried to import each argument as a benchmark)."""

    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "doc.md").write_text("# Widgets\n\nIf a widget is dropped, the casing cracks along its seam.\n")
    run = subprocess.run([sys.executable, "-m", "bench", "forge_yield", str(tmp_path / "corpus")], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "| corpus | 0.1 | 1 |" in run.stdout and "| sqlite |" in run.stdout
    wrong = subprocess.run([sys.executable, "-m", "bench", "no_such_bench"], cwd=REPO, capture_output=True, text=True)
    assert wrong.returncode == 2 and "no benchmark named 'no_such_bench'" in wrong.stderr
    seeds = subprocess.run([sys.executable, "-m", "bench", "outcome", "legal", "--seeds", "42,x"], cwd=REPO, capture_output=True, text=True)
    assert seeds.returncode == 2 and "--seeds takes integers" in seeds.stderr and "Traceback" not in seeds.stderr


def test_bench_help_and_the_gpu_bench_on_a_machine_without_one():
    """`--help` prints the bench's own page; gpu_train names a wrong case and, with no GPU, says
    so (exit 2, no traceback); its architecture numbers build models of the published sizes."""

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from bench.gpu_train import SHAPES

    page = subprocess.run([sys.executable, "-m", "bench", "gpu_train", "--help"], cwd=REPO, capture_output=True, text=True)
    assert page.returncode == 0 and page.stdout.startswith("`python -m bench gpu_train")
    wrong = subprocess.run([sys.executable, "-m", "bench", "gpu_train", "9b-fast"], cwd=REPO, capture_output=True, text=True)
    assert wrong.returncode == 2 and "no case '9b-fast'; the cases are 135m-hf" in wrong.stderr
    if not torch.cuda.is_available():
        none = subprocess.run([sys.executable, "-m", "bench", "gpu_train", "135m-hf"], cwd=REPO, capture_output=True, text=True)
        assert none.returncode == 2 and "no CUDA GPU visible" in none.stderr and "Traceback" not in none.stderr
    sizes = {}
    for name, numbers in SHAPES.items():
        numbers = dict(numbers)
        config = AutoConfig.for_model(numbers.pop("model_type"), **{k: v for k, v in numbers.items() if k != "architectures"})
        with torch.device("meta"):  # no memory: only the parameter count
            sizes[name] = round(AutoModelForCausalLM.from_config(config).num_parameters() / 1e9, 2)
    assert sizes == {"smollm2-1.7b": 1.71, "qwen2.5-7b": 7.62}


def test_the_outcome_task_check_says_what_is_missing(tmp_path):
    """`python -m bench outcome_task` without llama-cpp-python's venv: one line naming the make
    target that builds it, exit 2, no traceback; its --help is its own page."""
    env = {**os.environ, "LLAMA_SERVER_PYTHON": str(tmp_path / "none" / "python")}
    done = subprocess.run([sys.executable, "-m", "bench", "outcome_task"], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "make check-outcome-task" in done.stderr and "Traceback" not in done.stderr
    page = subprocess.run([sys.executable, "-m", "bench", "outcome_task", "--help"], cwd=REPO, capture_output=True, text=True)
    assert page.returncode == 0 and page.stdout.startswith("`python -m bench outcome_task`")


def test_passage_coverage_counts_the_key_facts_more_passages_state_and_names_a_bad_grid(bundled_model_dir, capsys):
    """More passages of one size state at least the facts fewer do, and cost more tokens; the
    passages state a good share of legal's golden key facts (TF-IDF: no embedding model needed)."""
    from bench.passage_coverage import _grid, measure

    rows = {(r["passage_tokens"], r["top_k"]): r for r in measure("legal", "golden_set", [(128, 1), (128, 3), (64, 2)], "tfidf")}
    assert list(rows) == [(128, 1), (128, 3), (64, 2)]
    assert rows[(128, 3)]["stated"] >= rows[(128, 1)]["stated"] > 0.3 and rows[(128, 3)]["tokens"] > rows[(128, 1)]["tokens"]
    assert rows[(64, 2)]["passages"] > rows[(128, 1)]["passages"]
    # sentence units: one per sentence (more than any chunking), a wider window states at least as much
    sentences = {(r["passage_tokens"], r["top_k"]): r for r in measure("legal", "golden_set", [("s0", 2), ("s1", 2)], "tfidf")}
    assert sentences[("s0", 2)]["passages"] > rows[(64, 2)]["passages"]
    assert sentences[("s1", 2)]["stated"] >= sentences[("s0", 2)]["stated"] and sentences[("s1", 2)]["tokens"] > sentences[("s0", 2)]["tokens"]
    assert _grid("256x2,128x3,s1x3") == [(256, 2), (128, 3), ("s1", 3)]
    for bad in ("256", "0x2", "axb", "s1"):
        with pytest.raises(SystemExit) as refused:
            _grid(bad)
        assert refused.value.code == 2 and "is not a list like 256x2,128x3,s1x3" in capsys.readouterr().err
    wrong = subprocess.run([sys.executable, "-m", "bench", "passage_coverage", "nosuch"], cwd=REPO, capture_output=True, text=True)
    assert wrong.returncode == 2 and "nosuch has no evals/nosuch/dev_set.json" in wrong.stderr and "Traceback" not in wrong.stderr


def test_the_outcome_spread_names_each_seed_and_counts_failures():
    from bench.outcome import spread_table

    def run(seed, gain, low, decision="refused"):
        return {"sem": "legal", "seed": seed, "gain": gain, "low": low, "decision": decision, "tuned": 0.3 + gain,
                "copy_top1": 0.3, "answer_chars": 100.0, "copy_top2_chars": 150.0, "short": 1.0}

    table = spread_table([run(42, 0.16, 0.02, "promoted"), run(43, -0.04, -0.1), {"sem": "legal", "seed": 44, "error": ["boom"]}])
    assert "| legal | 42: +16, 43: -4 (1 failed) | +6.0 | -4 to +16 | 1 of 3 |" in table
    assert table.splitlines()[-1].endswith("| no dev set |")
    with_dev = [{**run(42, 0.1, 0.0), "dev": {"gain": 0.07}}, {**run(43, 0.0, -0.1), "dev": {"gain": -0.03}}]
    assert spread_table(with_dev).splitlines()[-1].endswith("| 0 of 2 | +7, -3 (mean +2.0) |")


def test_an_outcome_row_fills_every_column_and_says_how_many_facts_the_pairs_teach():
    from bench.outcome import HEADER, _row

    r = {"sem": "sqlite", "seed": 42, "baseline": 0.1, "tuned": 0.03, "gain": -0.07, "low": -0.14, "high": -0.01,
         "shuffled_pass": 0.0, "echo_mean": 1.0, "unreliable": None, "pairs_per_kb": 2.1, "pairs": 160, "eval_loss": 1.03,
         "kept_epoch": "1", "complete": 0.91, "short": 1.0, "decision": "refused", "minutes": 6.8,
         "coverage": {"golden_set": {"taught": 9, "items": 44}, "dev_set": {"taught": 7, "items": 27}}}
    row = _row(r)
    assert row.count("|") == HEADER.count("|") and "| 9/44, 7/27 |" in row and row.endswith("| not met |")
    assert "| n/a |" in _row({**r, "coverage": {}})
    dev = {"base_recall": 0.07, "tuned_recall": 0.1, "gain": 0.03, "ci_low": -0.05, "ci_high": 0.13,
           "fit": {"n": 30, "base_reproduced": 0, "tuned_reproduced": 8}}
    assert "| 7% -> 10%, +3 [-5, +13]; 0 -> 8 of 30 |" in _row({**r, "dev": dev})
    split = {"taught": {"n": 7, "base_recall": 0.0, "tuned_recall": 0.14}, "untaught": {"n": 20, "base_recall": 0.1, "tuned_recall": 0.1}}
    assert "| 7% -> 10%, +3 [-5, +13]; 0 -> 8 of 30; taught items 0% -> 14% |" in _row({**r, "dev": {**dev, "by_coverage": split}})
    assert _row({"sem": "sqlite", "seed": 42, "error": ["boom"], "minutes": 1.0}).count("|") == HEADER.count("|")
    # open book: the copy references and answer lengths, and issue 36's target on them
    refs = {**r, "baseline": 0.3, "tuned": 0.55, "gain": 0.25, "low": 0.1, "decision": "promoted", "copy_top1": 0.49,
            "copy_top2": 0.62, "answer_chars": 120.0, "copy_top2_chars": 190.0, "short": 0.97}
    row = _row(refs)
    assert "| 30% -> 55% | 49%, 62% | +25 points [+10, -1] | 120, 190 |" in row and row.endswith("| met |")
    assert _row({**refs, "copy_top1": 0.51}).endswith("| not met |")  # only 4 points over copy-top1
    assert _row({**refs, "answer_chars": 200.0}).endswith("| not met |")  # longer than copy-top2
    assert _row({**refs, "short": 0.9}).endswith("| not met |")
    assert "| 10% -> 3% | -, - |" in _row(r) and "| -, - |" in _row(r)  # closed book: no references


def test_the_outcome_bench_keeps_every_answer_of_both_models_side_by_side(tmp_path):
    import json

    import mlflow

    from bench.outcome import _keep_answers
    from opensem.judge.evaluate import TABLE

    mlflow.set_experiment("opensem-x")  # in this test's own store (conftest)
    run_ids = []
    for answers, scores in ((["It is blue.", "Ten."], [2, None]), (["It is red.", "Eleven."], [5, 1])):
        with mlflow.start_run() as run:
            mlflow.log_table({"id": ["q1", "q2"], "question": ["Colour?", "Count?"], "golden_answer": ["Red.", "Eleven."],
                              "answer": answers, "score": scores, "key_fact_recall": [0.0, 1.0]}, artifact_file=TABLE)
            run_ids.append(run.info.run_id)
    path = tmp_path / "x-answers.jsonl"
    _keep_answers(*run_ids, path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["id"], r["before"], r["after"], r["before_score"], r["after_score"]) for r in rows] == [
        ("q1", "It is blue.", "It is red.", 2, 5), ("q2", "Ten.", "Eleven.", None, 1)]  # an unscored answer stays None
