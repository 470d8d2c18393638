"""`opensem baseline`: the vanilla base model answers the golden set (see evaluate.py)."""

from __future__ import annotations

from opensem.config import Config
from opensem.judge.evaluate import EvalResult, run_eval
from opensem.workspace import Sem


def run(sem: Sem, cfg: Config, limit: int | None = None) -> EvalResult:
    return run_eval(sem, cfg, "baseline", limit=limit)
