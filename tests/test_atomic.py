"""Nothing lost, nothing silently wrong (issue 38): a stage's outputs replace the previous ones
whole or not at all, a teacher that fails is said so and stops the forge before it writes, and
training refuses a processed/ folder that is not one forge's complete output."""

from __future__ import annotations

import json
import socket

import mlflow
import pytest
from typer.testing import CliRunner

from llm_server import FakeLLMServer
from opensem.cli import app
from opensem.config import load_config
from opensem.errors import OpenSEMError
from opensem.forge import run as forge
from opensem.io import staged_folder
from opensem.workspace import new_sem
from test_forge import DOC  # the widget documents the forge tests use

pytestmark = pytest.mark.usefixtures("bundled_model_dir")



@pytest.fixture
def small(project):
    """A SEM with 3 documents (6 chunks) and no golden set, forged once with the extractive teacher."""
    sem = new_sem("small")
    (sem.raw_dir / ".gitkeep").unlink()
    for n in range(3):
        (sem.raw_dir / f"doc{n}.md").write_text(DOC.replace("Widget", f"Widget{n}").replace("widget", f"widget{n}"))
    sem.golden_set.unlink(missing_ok=True)
    return sem


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def openai_teacher(url: str, *extra: str) -> list[str]:
    return ["forge.teacher.provider=openai", "forge.teacher.model=m", f"forge.teacher.base_url={url}",
            "forge.teacher.max_retries=0", "forge.teacher.timeout_s=5", "forge.teacher.max_concurrency=1", *extra]


def newest_forge_run(sem_name: str):
    return mlflow.search_runs(experiment_names=[f"opensem-{sem_name}"], output_format="list",
                              filter_string="tags.`opensem.stage` = 'forge'", order_by=["attributes.start_time DESC"])[0]


def test_a_staged_folder_replaces_the_old_one_whole_or_not_at_all(tmp_path):
    target = tmp_path / "processed"
    target.mkdir()
    (target / "a.txt").write_text("old a")
    (target / "b.txt").write_text("old b")
    with pytest.raises(RuntimeError):
        with staged_folder(target) as out:
            (out / "a.txt").write_text("new a")
            raise RuntimeError("the stage failed after one file")
    assert snapshot(target) == {"a.txt": b"old a", "b.txt": b"old b"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["processed"]  # no staging left behind
    with staged_folder(target) as out:
        (out / "a.txt").write_text("new a")
    assert snapshot(target) == {"a.txt": b"new a"}  # b.txt of the old set does not linger
    # killed between the two renames: the old set is aside and nothing is in place; readers get it back
    target.rename(tmp_path / ".processed.previous")
    from opensem.io import recover_folder

    recover_folder(target)
    assert snapshot(target) == {"a.txt": b"new a"}


def test_jsonl_rows_are_written_as_they_come_and_a_failure_midway_keeps_the_old_file(tmp_path):
    """atomic_write_jsonl streams a generator of rows to the temporary file (nothing holds the
    whole file's text in memory) and renames it only when the generator is done; a generator
    that fails midway leaves the previous file and no temporary one."""
    from opensem.io import atomic_write_jsonl

    target, tmp = tmp_path / "rows.jsonl", tmp_path / ".rows.jsonl.tmp"
    target.write_text("old\n")
    on_disk_before_each_row = []

    def rows(fail_at: int | None = None):
        for i in range(5):
            on_disk_before_each_row.append(tmp.stat().st_size if tmp.exists() else 0)
            if i == fail_at:
                raise RuntimeError("the teacher went away")
            yield {"i": i, "text": "x" * 100_000}

    with pytest.raises(RuntimeError, match="went away"):
        atomic_write_jsonl(target, rows(fail_at=3))
    assert target.read_text() == "old\n" and not tmp.exists()
    assert on_disk_before_each_row[3] >= 2 * 100_000  # rows 0-2 had reached the file before row 3 was made

    on_disk_before_each_row.clear()
    atomic_write_jsonl(target, rows())
    assert [json.loads(line)["i"] for line in target.read_text().splitlines()] == [0, 1, 2, 3, 4] and not tmp.exists()


def test_a_teacher_that_cannot_be_reached_keeps_the_previous_forge_output(small, monkeypatch):
    assert forge(small, load_config(small.root, "small"))["pairs_kept"] > 0  # a good extractive forge
    before = snapshot(small.processed_dir)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    args = sum((["--set", o] for o in openai_teacher(f"http://127.0.0.1:{port}/v1")), [])
    result = CliRunner().invoke(app, ["forge", "--sem", "small", *args])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1, result.output
    assert "6 of 6 teacher requests failed" in errors[0] and "connection refused" in errors[0]
    assert "previous forge output is kept" in errors[0]
    assert snapshot(small.processed_dir) == before
    assert newest_forge_run("small").info.status == "FAILED"


def test_a_flaky_teacher_stops_the_forge_and_the_rerun_asks_only_for_what_failed(small, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        server.push("500", "ok", "500", "ok", "ok", "ok")  # two chunks fail; a 500 is no refusal of the format
        cfg = load_config(small.root, "small", openai_teacher(f"{server.url}/v1"))
        with pytest.raises(OpenSEMError, match=r"2 of 6 teacher requests failed after retries \(HTTP 500 InternalServerError 2"):
            forge(small, cfg)
        assert not small.processed_dir.exists()  # nothing written, not even a partial set
        assert {e["format"] for e in server.log} == {"json_schema"}  # the 500s did not switch the format
        failed_first = len(server.log)
        manifest = forge(small, cfg)  # the server is healthy now
    assert len(server.log) - failed_first == 2  # only the two chunks that failed were asked again
    assert manifest["cache_hits"] == 4 and manifest["teacher_response_format"] == "json_schema"
    # asked to keep a partial dataset, the forge does
    with FakeLLMServer() as server:
        server.push("500")
        cfg = load_config(small.root, "small", openai_teacher(f"{server.url}/v1", "forge.teacher.model=m2", "forge.max_failed_chunks=1"))
        partial = forge(small, cfg)
    assert partial["rejected"]["api_error"] == 1 and partial["pairs_kept"] > 0


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "test.jsonl").write_text((p / "test.jsonl").read_text() + (p / "train.jsonl").read_text().splitlines(True)[0]),
     "test.jsonl is not the file the forge wrote"),
    (lambda p: (p / "test.jsonl").unlink(), "test.jsonl is missing"),
    (lambda p: (p / "train.jsonl").write_text(""), "train.jsonl is not the file the forge wrote"),
    (lambda p: (p / "manifest.json").write_text((p / "manifest.json").read_text()[:40]), "manifest.json is damaged"),
])
def test_training_refuses_a_forge_output_that_is_not_one_forges_complete_set(small, damage, message):
    assert forge(small, load_config(small.root, "small"))["test"] > 0
    damage(small.processed_dir)
    result = CliRunner().invoke(app, ["train", "--sem", "small"])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and message in errors[0], result.output
    assert "opensem forge --sem small" in errors[0] and "Traceback" not in result.output


def test_training_takes_a_forge_output_that_matches_its_manifest(small):
    from opensem.train.data import check_forge_output

    manifest = forge(small, load_config(small.root, "small"))
    assert check_forge_output(small.processed_dir, "small")["digests"] == manifest["digests"]
    (small.processed_dir / "manifest.json").unlink()  # pairs without a manifest: nothing to check against
    assert check_forge_output(small.processed_dir, "small") is None


def test_a_forge_that_keeps_no_pairs_leaves_the_previous_output_and_says_where_the_rejections_are(small, monkeypatch):
    forge(small, load_config(small.root, "small"))
    before = snapshot(small.processed_dir)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer() as server:
        server.default = "malformed"
        with pytest.raises(OpenSEMError, match="forge kept no training pairs") as refused:  # every failure allowed
            forge(small, load_config(small.root, "small", openai_teacher(f"{server.url}/v1", "forge.max_failed_chunks=1000")))
    assert snapshot(small.processed_dir) == before
    kept_aside = small.cache_dir / "forge_rejected.jsonl"
    assert str(kept_aside) in str(refused.value)
    assert {json.loads(line)["reason"] for line in kept_aside.read_text().splitlines()} == {"unusable"}
