"""Training recipes: the shipped files resolve and their headers run them; the recipe layer sits
between defaults.yaml and the SEM file; every way of naming a wrong one is one clear line."""

from __future__ import annotations

import shlex

import pytest
import yaml
from typer.testing import CliRunner

from opensem import recipes
from opensem.cli import app
from opensem.config import load_config, with_overrides
from opensem.errors import ConfigError
from opensem.workspace import known_sems

from conftest import REPO

SHIPPED = recipes.available(REPO)


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_shipped_recipes_are_found_and_named_by_the_rule():
    files = sorted(REPO.glob("configs/recipes/*/*.yaml"))
    assert len(files) >= 4 and len(SHIPPED) == len(files)  # a badly named file would be silently skipped
    assert {r.name for r in SHIPPED} >= {"smollm2/135m_lora_cpu", "qwen2.5/7b_qlora_cuda"}
    assert all(r.summary for r in SHIPPED)


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda r: r.name)
def test_each_recipe_resolves_with_every_sem_and_sets_the_base(recipe):
    layer = yaml.safe_load(recipe.path.read_text())
    for sem in [None, *known_sems(REPO)]:
        cfg = load_config(REPO, sem, [f"recipe={recipe.name}"])
        assert cfg.recipe == recipe.name
        assert cfg.model.base == layer["model"]["base"]
        assert cfg.training.learning_rate == layer["training"]["learning_rate"]
    # the name says what it does: a qlora recipe loads in 4 bits, a lora one does not
    assert bool(layer["training"].get("load_in_4bit")) == ("_qlora_" in recipe.name)


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda r: r.name)
def test_each_header_command_runs_the_recipe_it_sits_in(recipe, monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("OPENSEM_HOME", str(REPO))
    header = [line.lstrip("# ").strip() for line in recipe.path.read_text().splitlines() if line.startswith("#")]
    commands = [line for line in header if line.startswith("opensem train ")]
    assert commands, f"{recipe.name}: no `opensem train` command in the header"
    assert any(f'-P overrides="recipe={recipe.name}"' in line for line in header if line.startswith("mlflow run"))
    for command in commands:
        args = shlex.split(command)[2:]  # same options, shown by `opensem config` instead of trained
        result = CliRunner().invoke(app, ["config", *args])
        assert result.exit_code == 0, result.output
        assert f"recipe: {recipe.name}" in result.output


def test_the_sample_sem_trains_with_the_bundled_cpu_recipe():
    cfg = load_config(REPO, "legal")
    assert cfg.recipe == "smollm2/135m_lora_cpu"
    assert cfg.model.base == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (cfg.training.epochs, cfg.training.learning_rate) == (1, 1e-3)
    # open book, without continued pre-training: chosen on the real corpora's dev sets (README)
    assert (cfg.retrieval.enabled, cfg.retrieval.method, cfg.training.cpt_epochs) == (True, "hybrid", 0)


def test_open_book_is_a_project_setting_that_a_gpu_recipe_keeps():
    """Open or closed book belongs to the project (configs/defaults.yaml) or the SEM, not to a
    recipe: choosing a GPU recipe keeps the SEM open book, and no recipe mentions retrieval."""
    for recipe in sorted((REPO / "configs" / "recipes").glob("*/*.yaml")):
        assert "retrieval" not in yaml.safe_load(recipe.read_text()), recipe
        name = f"{recipe.parent.name}/{recipe.stem}"
        assert load_config(REPO, "legal", [f"recipe={name}"]).retrieval.enabled, name
    assert not load_config(REPO, "legal", ["retrieval.enabled=false"]).retrieval.enabled


@pytest.fixture
def tiny(project):
    write(project / "configs/recipes/tiny/1m_lora_cpu.yaml", "# tiny\ntraining:\n  epochs: 9\n  learning_rate: 0.5\n  batch_size: 2\n")
    write(project / "configs/recipes/tiny/2m_qlora_cuda.yaml", "# other\ntraining:\n  epochs: 1\n")
    write(project / "configs/defaults.yaml", "recipe: tiny/1m_lora_cpu\ntraining:\n  batch_size: 4\n  max_length: 99\n")
    write(project / "configs/sems/legal.yaml", "training:\n  epochs: 5\n")
    return project


def test_the_recipe_layer_sits_between_defaults_and_the_sem_file(tiny):
    cfg = load_config(tiny, "legal")
    assert cfg.training.batch_size == 2  # recipe beats defaults.yaml
    assert cfg.training.max_length == 99  # what the recipe leaves alone, defaults.yaml still sets
    assert cfg.training.learning_rate == 0.5
    assert cfg.training.epochs == 5  # the SEM file beats the recipe
    assert load_config(tiny, "legal", ["training.epochs=7"]).training.epochs == 7


def test_the_last_layer_that_names_a_recipe_picks_it(tiny):
    write(tiny / "configs/sems/legal.yaml", "recipe: tiny/2m_qlora_cuda\n")
    cfg = load_config(tiny, "legal")
    assert (cfg.recipe, cfg.training.epochs, cfg.training.batch_size) == ("tiny/2m_qlora_cuda", 1, 4)
    cfg = load_config(tiny, "legal", ["recipe=tiny/1m_lora_cpu"])
    assert (cfg.recipe, cfg.training.epochs) == ("tiny/1m_lora_cpu", 9)
    cfg = load_config(tiny, "legal", ["recipe=null"])  # no recipe at all
    assert (cfg.recipe, cfg.training.batch_size, cfg.training.learning_rate) == (None, 4, 3e-4)


@pytest.mark.parametrize(
    "where, text, message",
    [
        ("configs/sems/legal.yaml", "recipe: tiny/3m_lora_cpu\n",
         "configs/sems/legal.yaml: recipe = 'tiny/3m_lora_cpu': no configs/recipes/tiny/3m_lora_cpu.yaml; available: "),
        ("configs/sems/legal.yaml", "recipe: ../../etc/passwd\n",
         "configs/sems/legal.yaml: recipe = '../../etc/passwd': expected <model>/<size>_<method>_<device>"),
        ("configs/sems/legal.yaml", "recipe: 3\n", "configs/sems/legal.yaml: recipe = 3: expected <model>/<size>_<method>_<device>"),
        ("configs/recipes/tiny/1m_lora_cpu.yaml", "recipe: tiny/2m_qlora_cuda\n",
         "configs/recipes/tiny/1m_lora_cpu.yaml: a recipe cannot name another recipe"),
        ("configs/recipes/tiny/1m_lora_cpu.yaml", "training:\n  epochs: 0\n",
         "configs/recipes/tiny/1m_lora_cpu.yaml: training.epochs = 0: input should be greater than 0"),
    ],
)
def test_a_wrong_recipe_is_one_line_naming_the_file(tiny, where, text, message):
    write(tiny / where, text)
    write(tiny / "configs/sems/legal.yaml", (tiny / "configs/sems/legal.yaml").read_text().replace("training:\n  epochs: 5\n", ""))
    with pytest.raises(ConfigError) as caught:
        load_config(tiny, "legal")
    assert str(caught.value).startswith(message)


def test_the_cli_refuses_an_unknown_recipe_with_exit_code_2(tiny):
    result = CliRunner().invoke(app, ["config", "--sem", "legal", "--set", "recipe=tiny/1m_lora_gpu"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --set recipe: recipe = 'tiny/1m_lora_gpu'")


def test_a_recipe_cannot_be_swapped_in_after_resolution(tiny):
    with pytest.raises(ConfigError, match="'recipe' cannot be set here"):
        with_overrides(load_config(tiny, "legal"), {"recipe": "tiny/2m_qlora_cuda"}, "sweep.space")


def test_recipes_command_lists_them_and_marks_the_sems(tiny):
    write(tiny / "configs/sems/legal.yaml", "recipe: tiny/2m_qlora_cuda\n")
    result = CliRunner().invoke(app, ["recipes", "--sem", "legal"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "tiny/2m_qlora_cuda *" in result.output and "other" in result.output
    assert "tiny/1m_lora_cpu " in result.output and "tiny/1m_lora_cpu *" not in result.output


def test_training_on_another_device_than_the_recipes_warns():
    assert recipes.device_mismatch("qwen2.5/7b_qlora_cuda", "cpu").startswith("recipe qwen2.5/7b_qlora_cuda is written for cuda")
    assert recipes.device_mismatch("smollm2/135m_lora_cpu", "cpu") is None
    assert recipes.device_mismatch(None, "cuda") is None
