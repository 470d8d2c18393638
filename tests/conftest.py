"""Shared fixtures. Tests run against a throw-away copy of the project (configs, sample SEM)
with its own SQLite MLflow store, so they never touch the developer's mlflow.db or data."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if "mlflow" in sys.modules:  # MLflow keeps the URI in a global: point it at this test's store
        sys.modules["mlflow"].set_tracking_uri(uri)
    yield

    if "mlflow" in sys.modules:  # never leak an active run into the next test
        import mlflow

        while mlflow.active_run():
            mlflow.end_run()


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A fresh project root holding the repo's configs and the sample SEM; cwd and OPENSEM_HOME point at it.

    models/base is shared with the repo so the bundled model is converted once, not per test.

    The copy answers closed book: the shipped project layer (configs/defaults.yaml) turns
    retrieval on, which makes every training and generation test read about ten times the tokens,
    and the SEMs tests scaffold have no documents to retrieve from. Tests of open book turn it on
    (test_retrieval.py); test_recipes.py checks that the shipped project has it on."""
    root = tmp_path / "project"
    shutil.copytree(REPO / "configs", root / "configs")
    defaults = root / "configs" / "defaults.yaml"
    shipped = defaults.read_text(encoding="utf-8")
    assert "retrieval:\n  enabled: true" in shipped, "conftest: defaults.yaml's retrieval block moved; update this fixture"
    defaults.write_text(shipped.replace("retrieval:\n  enabled: true", "retrieval:\n  enabled: false"), encoding="utf-8")
    shutil.copytree(REPO / "evals", root / "evals")
    shutil.copytree(REPO / "data" / "legal" / "raw", root / "data" / "legal" / "raw")
    (REPO / "models" / "base").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir()
    os.symlink(REPO / "models" / "base", root / "models" / "base")
    monkeypatch.setenv("OPENSEM_HOME", str(root))
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2, converted from its GGUF once and cached in the repo's models/base."""
    from opensem.models import BUNDLED_ID, resolve_base_model

    return Path(resolve_base_model(BUNDLED_ID, REPO / "models" / "base"))
