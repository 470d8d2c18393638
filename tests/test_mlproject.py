"""`mlflow run . -e <stage> --env-manager local` starts a tracked, tagged run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_mlflow_run_forge_makes_a_tagged_run(project, tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    result = subprocess.run(
        ["mlflow", "run", ".", "-e", "forge", "-P", "sem=legal", "-P", "overrides=forge.seed=7", "--env-manager", "local",
         "--experiment-name", "opensem-legal"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow.search_runs(experiment_names=["opensem-legal"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["opensem.sem"] == "legal" and run.data.tags["opensem.stage"] == "forge"
    assert run.data.tags["mlflow.project.entryPoint"] == "forge"
    assert run.data.params["forge.seed"] == "7"
