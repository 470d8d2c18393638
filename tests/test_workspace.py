"""SEM names, scaffolding and lookup."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from opensem.cli import app
from opensem.errors import OpenSEMError
from opensem.workspace import check_sem_name, open_sem, project_root


@pytest.mark.parametrize("name", ["legal", "med-v2", "a", "x_1", "0day"])
def test_good_names(name):
    assert check_sem_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", "Legal", "-x", "_x", "a b", "x" * 65, "é"])
def test_bad_names_are_refused(name):
    with pytest.raises(OpenSEMError, match="invalid SEM name"):
        check_sem_name(name)


def test_new_sem_scaffolds_a_workspace_the_stages_accept(project):
    result = CliRunner().invoke(app, ["new-sem", "demo"])
    assert result.exit_code == 0, result.output
    sem = open_sem("demo")
    assert sem.raw_dir.is_dir()
    golden = json.loads(sem.golden_set.read_text())
    item = golden["items"][0]
    assert {"id", "question", "answer", "key_facts"} <= set(item)
    assert "key_facts" in golden["about"]
    assert sem.config_file.read_text().startswith("# SEM 'demo'")
    shown = CliRunner().invoke(app, ["config", "--sem", "demo"])
    assert shown.exit_code == 0, shown.output


def test_new_sem_refuses_existing_and_bad_names(project):
    again = CliRunner().invoke(app, ["new-sem", "legal"])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = CliRunner().invoke(app, ["new-sem", "../escape"])
    assert bad.exit_code == 2 and "invalid SEM name" in bad.output
    assert not (project.parent / "escape").exists()


def test_unknown_sem_says_how_to_create_it(project):
    result = CliRunner().invoke(app, ["forge", "--sem", "nope"])
    assert result.exit_code == 2
    assert "opensem new-sem nope" in result.output and "known: debian-policy, legal, sqlite" in result.output


def test_project_root_is_found_from_a_subfolder(project, monkeypatch):
    monkeypatch.delenv("OPENSEM_HOME")
    monkeypatch.chdir(project / "data" / "legal" / "raw")
    assert project_root() == project.resolve()
