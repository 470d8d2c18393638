"""Config layering, overrides and every error path, through the API and the CLI."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.config import Config, load_config, parse_override, resolve, split_overrides
from opensem.errors import ConfigError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_layers_apply_in_order(project):
    write(project / "configs/defaults.yaml", "training:\n  epochs: 2\n  batch_size: 4\n")
    write(project / "configs/sems/legal.yaml", "training:\n  epochs: 5\n")
    cfg = load_config(project, "legal", ["training.batch_size=16"])
    assert cfg.training.epochs == 5  # SEM file beats defaults.yaml
    assert cfg.training.batch_size == 16  # --set beats both
    assert cfg.training.learning_rate == Config().training.learning_rate  # untouched keys keep the schema default


def test_override_values_are_typed_yaml():
    assert parse_override("training.learning_rate=1e-4") == ("training.learning_rate", 1e-4)
    assert parse_override("lora.target_modules=[q_proj, v_proj]") == ("lora.target_modules", ["q_proj", "v_proj"])
    assert parse_override("training.packing=true") == ("training.packing", True)
    assert parse_override("training.run_name=") == ("training.run_name", None)
    assert split_overrides('training.epochs=1 model.system_prompt="Be brief."') == [
        "training.epochs=1",
        "model.system_prompt=Be brief.",
    ]


def test_digest_tracks_content(project):
    a = load_config(project, "legal")
    assert a.digest() == load_config(project, "legal").digest()
    assert a.digest() != load_config(project, "legal", ["lora.r=8"]).digest()


@pytest.mark.parametrize(
    "where, text, expected",
    [
        ("configs/defaults.yaml", "training:\n  learnin_rate: 0.1\n", "configs/defaults.yaml: unknown key 'training.learnin_rate'; did you mean 'learning_rate'?"),
        ("configs/sems/legal.yaml", "lora:\n  r: 0\n", "configs/sems/legal.yaml: lora.r = 0: input should be greater than 0"),
        ("configs/sems/legal.yaml", "trainig:\n  epochs: 1\n", "configs/sems/legal.yaml: unknown key 'trainig'; did you mean 'training'?"),
        ("configs/sems/legal.yaml", "training:\n  backend: gpu\n", "configs/sems/legal.yaml: training.backend = \"gpu\": input should be 'auto', 'unsloth' or 'hf'"),
        ("configs/sems/legal.yaml", "training: [1, 2\n", "configs/sems/legal.yaml: line 2"),
        ("configs/sems/legal.yaml", "- just a list\n", "configs/sems/legal.yaml: expected a mapping"),
    ],
)
def test_file_errors_name_file_key_and_value(project, where, text, expected):
    write(project / where, text)
    with pytest.raises(ConfigError) as exc:
        load_config(project, "legal")
    message = str(exc.value)
    assert message.startswith(expected), message
    assert "\n" not in message


@pytest.mark.parametrize(
    "override, expected",
    [
        ("training.learning_rate=-0.1", "--set training.learning_rate: training.learning_rate = -0.1: input should be greater than 0"),
        ("training.lr=1", "--set training.lr: unknown key 'training.lr'"),
        ("training.epochs=many", "--set training.epochs: training.epochs = \"many\": input should be a valid number"),
        ("nonsense", "--set 'nonsense': expected section.key=value"),
        ("training.run_name=../elsewhere", "--set training.run_name: training.run_name = \"../elsewhere\": use up to 90 letters"),
        ("sweep.study_name=my study", "--set sweep.study_name: sweep.study_name = \"my study\": use up to 90 letters"),
    ],
)
def test_override_errors(project, override, expected):
    with pytest.raises(ConfigError) as exc:
        load_config(project, "legal", [override])
    assert str(exc.value).startswith(expected), str(exc.value)


def test_cli_config_error_is_one_line_exit_2(project):
    result = CliRunner().invoke(app, ["config", "--sem", "legal", "--set", "lora.r=0"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "lora.r = 0" in lines[0]
    assert "Traceback" not in result.output


def test_cli_config_shows_resolved_values(project):
    result = CliRunner().invoke(app, ["config", "--sem", "legal", "--set", "training.epochs=7", "--overrides", "lora.r=4"])
    assert result.exit_code == 0, result.output
    assert "epochs: 7" in result.output and "r: 4" in result.output


def test_every_field_is_documented():
    def walk(model, prefix=""):
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                yield from walk(annotation, f"{prefix}{name}.")
            elif prefix:  # top-level fields are the sections themselves
                yield f"{prefix}{name}", field.description

    undocumented = [key for key, doc in walk(Config) if not doc]
    assert undocumented == []


def test_error_blames_the_layer_that_set_the_key_not_the_last_to_touch_its_section():
    layers = [("defaults.yaml", {"training": {"learnin_rate": 0.1}}),
              ("sems/x.yaml", {"training": {"epochs": 2}})]
    with pytest.raises(ConfigError, match=r"^defaults\.yaml: unknown key 'training\.learnin_rate'"):
        resolve(layers)
    layers = [("defaults.yaml", {"training": {"epochs": 2}}), ("sems/x.yaml", {"training": {"epochs": -1}})]
    with pytest.raises(ConfigError, match=r"^sems/x\.yaml: training\.epochs = -1"):
        resolve(layers)


@pytest.mark.parametrize(
    "url, refused",
    [
        ("postgresql+psycopg2://sweeper:hunter2@db/optuna", True),
        ("postgresql://sweeper@db/optuna?password=hunter2", True),  # libpq reads it from the query too
        ("postgresql://sweeper@db/optuna?sslmode=require&PASSWORD=hunter2", True),
        ("mysql+pymysql://sweeper@db/optuna?passwd=hunter2", True),
        ("postgresql://sweeper:${OPTUNA_DB_PASSWORD}@db/optuna", False),
        ("postgresql://sweeper@db/optuna?password=${OPTUNA_DB_PASSWORD}", False),
        ("postgresql://sweeper@db/optuna?sslmode=require", False),
    ],
)
def test_a_literal_storage_password_is_refused_and_not_echoed(project, url, refused):
    if not refused:
        assert load_config(project, "legal", [f"sweep.storage={url}"]).sweep.storage == url
        return
    with pytest.raises(ConfigError) as exc:
        load_config(project, "legal", [f"sweep.storage={url}"])
    assert "holds a password" in str(exc.value) and "hunter2" not in str(exc.value)


def test_about_questions_takes_its_modes_and_the_old_booleans(project):
    def about(value):
        return load_config(project, "legal", [f"experimental.about_questions={value}"]).experimental.about_questions

    assert load_config(project, "legal").experimental.about_questions == "off"
    assert about("every") == "every" and about("unmatched") == "unmatched"
    assert about("true") == "unmatched" and about("false") == "off" and about("off") == "off"  # YAML reads off as false
    with pytest.raises(ConfigError, match="about_questions"):
        about("always")


@pytest.mark.parametrize("override, message", [
    ("training.batch_size=true", "--set training.batch_size: training.batch_size = true: expected a number, not true"),
    ("training.epochs=.inf", "training.epochs = Infinity: expected a finite number"),
    ("training.learning_rate=.nan", "training.learning_rate = NaN: expected a finite number"),
    ("forge.chunk_overlap=400", "--set forge.chunk_overlap: forge.chunk_overlap (400) must be below forge.chunk_tokens (384)"),
])
def test_values_that_pydantic_would_bend_are_refused(project, override, message):
    with pytest.raises(ConfigError) as refused:
        load_config(project, "legal", [override])
    assert message in str(refused.value)
    assert load_config(project, "legal", ["forge.chunk_overlap=400", "forge.chunk_tokens=1000"]).forge.chunk_overlap == 400


def test_a_bad_value_is_refused_in_the_layer_that_wrote_it_even_where_a_later_one_wins(project):
    write(project / "configs/defaults.yaml", "recipe: smollm2/135m_lora_cpu\ntraining:\n  batch_size: -8\n")
    with pytest.raises(ConfigError, match=r"^configs/defaults.yaml: training.batch_size = -8: input should be greater than 0"):
        load_config(project, "legal")  # the recipe sets batch_size 8 above it


def test_a_key_given_twice_in_one_file_is_an_error(project):
    write(project / "configs/sems/legal.yaml", "training:\n  epochs: 2\n  batch_size: 4\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"configs/sems/legal.yaml: line 4: key 'epochs' is given twice \(lines 2 and 4\)"):
        load_config(project, "legal")


@pytest.mark.parametrize("old, new", [
    ("forge.teacher.yes_opener=false", "experimental.yes_opener"),
    ("training.cpt_mix_pairs=true", "experimental.cpt_mix_pairs"),
])
def test_a_setting_moved_under_experimental_names_its_new_key(project, old, new):
    """Settings measured and not adopted live under `experimental`; a config that still sets one
    under its old section is told the new name, not just "unknown key"."""
    with pytest.raises(ConfigError, match=f"is now '{new}'"):
        load_config(project, "legal", [old])
    assert getattr(load_config(project, "legal", [f"{new}={old.split('=')[1]}"]).experimental, new.split(".")[1]) is (old.endswith("true"))
