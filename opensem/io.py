"""Small file helpers: every output is written to a temporary name and renamed when complete,
so a crash never leaves a half-written file where a finished one is expected; a stage with
several outputs writes them into a staging folder that replaces the old one whole."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_lines(path, [text])


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object a line, each written as `rows` yields it: a generator of rows is never
    held whole in memory (the forge's rows with their excerpts run to gigabytes on big corpora)."""
    atomic_write_lines(path, (json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def atomic_write_lines(path: Path, pieces: Iterable[str]) -> None:
    """Write the pieces in turn to a temporary name and rename it to `path` once all are on disk;
    an error while they are produced leaves `path` as it was and no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(pieces)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _aside(target: Path, what: str) -> Path:
    return target.with_name(f".{target.name}.{what}")


def recover_folder(target: Path) -> None:
    """Put back the previous outputs of a stage killed while swapping its new ones in (between
    the two renames of staged_folder), so readers find the last complete set."""
    previous = _aside(target, "previous")
    if not target.exists() and previous.is_dir():
        os.rename(previous, target)


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """An empty folder beside `target` to write a stage's outputs into. When the block ends
    without an error it replaces `target` whole; on any error (or a kill) `target` is left exactly
    as it was and the staging folder is removed (or, after a kill, on the next call).

    Two renames (target aside, staging in), not one atomic swap: Linux's RENAME_EXCHANGE has no
    portable Python API. A kill between them leaves only the previous folder aside, which
    recover_folder puts back, so readers never see a mix of old and new files."""
    if target.exists() and not target.is_dir():
        from opensem.errors import OpenSEMError

        raise OpenSEMError(f"{target} is a file, where this stage writes a folder: move the file away, then run the same "
                           "command again")
    recover_folder(target)
    staging, previous = _aside(target, "staging"), _aside(target, "previous")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)
    if target.exists():
        os.rename(target, previous)
    os.rename(staging, target)
    shutil.rmtree(previous, ignore_errors=True)
