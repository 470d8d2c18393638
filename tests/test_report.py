"""The report's data numbers: counted in the forge's files, and a manifest edited to say
otherwise is said to disagree rather than printed as if true."""

from __future__ import annotations

import json

from opensem.report import checked_manifest


def forge_output(folder, train: int, test: int, rejected: list[str], manifest: dict) -> None:
    folder.mkdir(parents=True)
    row = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    (folder / "train.jsonl").write_text((row + "\n") * train)
    (folder / "test.jsonl").write_text((row + "\n") * test)
    (folder / "rejected.jsonl").write_text("".join(json.dumps({"reason": r}) + "\n" for r in rejected))
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_counts_the_manifest_states_truly_are_shown_without_a_word(tmp_path):
    forge_output(tmp_path / "p", 9, 1, ["duplicate", "echo"], {"train": 9, "test": 1, "pairs_kept": 10, "rejected": {"duplicate": 1, "echo": 1},
                                                                "chunks": 4})
    manifest, disagreements = checked_manifest(tmp_path / "p")
    assert disagreements == [] and manifest["train"] == 9 and manifest["chunks"] == 4


def test_edited_counts_are_replaced_by_what_the_files_hold_and_said(tmp_path):
    forge_output(tmp_path / "p", 9, 1, ["duplicate", "echo"], {"train": 900, "test": 1, "pairs_kept": 901, "rejected": {"duplicate": 0}})
    manifest, disagreements = checked_manifest(tmp_path / "p")
    assert manifest["train"] == 9 and manifest["pairs_kept"] == 10 and manifest["rejected"] == {"duplicate": 1, "echo": 1}
    assert "train: manifest.json says 900, the files hold 9" in disagreements and len(disagreements) == 3


def test_a_damaged_manifest_shows_no_numbers(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "manifest.json").write_text('{"train": 9')
    assert checked_manifest(tmp_path / "p") == ({}, ["manifest.json is damaged: its numbers are not shown"])
