"""What several benchmarks share: a throw-away copy of the project, and a free port."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project_copy(tmp: Path, sem: str, documents: list[str] | None = None) -> Path:
    """configs/, evals/ and one SEM's raw documents (all, or the named ones) in tmp/project; the
    bundled base model linked, so it is converted once for every copy."""
    root = tmp / "project"
    for folder in ("configs", "evals"):
        shutil.copytree(ROOT / folder, root / folder)
    raw = ROOT / "data" / sem / "raw"
    if documents is None:
        shutil.copytree(raw, root / "data" / sem / "raw")
    else:
        (root / "data" / sem / "raw").mkdir(parents=True)
        for name in documents:
            shutil.copy(raw / name, root / "data" / sem / "raw" / name)
    (ROOT / "models" / "base").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir()
    os.symlink(ROOT / "models" / "base", root / "models" / "base")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
