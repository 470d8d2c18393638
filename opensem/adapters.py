"""Trained adapters on disk (models/<sem>/adapters/<run_name>/): which one a stage takes, and
the checks before one is loaded: its weights readable and finite, its base model and retrieval
settings the ones it is asked under; and the adapter inside a logged MLflow model. Shared by
evaluate, dev, the preference stage, serving and export."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.retrieval import recorded, settings as retrieval_settings
from opensem.workspace import Sem

console = Console(stderr=True)


def read_metadata(path: Path) -> dict:
    """A JSON file the stages wrote ({} when absent); a damaged one is one line that names it."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise OpenSEMError(f"{path} is damaged (not the JSON training wrote): train that adapter again, "
                           "or pass --adapter with another one") from None


def resolve_adapter(sem: Sem, name: str | None) -> Path:
    """The named adapter, or the newest finished one."""
    if name:
        folder = sem.adapters_dir / name
        if folder.is_dir() and (folder / "adapter_model.safetensors").is_file() and not (folder / "adapter_config.json").is_file():
            raise OpenSEMError(f"adapter {name!r} in {sem.adapters_dir} is damaged: its adapter_config.json is missing; "
                               "train it again under a new training.run_name")
        if not (folder / "adapter_config.json").is_file():
            known = ", ".join(sorted(p.name for p in sem.adapters_dir.glob("*") if (p / "adapter_config.json").is_file())) or "none"
            raise OpenSEMError(f"no adapter {name!r} in {sem.adapters_dir} (trained: {known})")
        return folder
    finished = sorted((p for p in sem.adapters_dir.glob("*/training_metadata.json") if _finished_at(p)), key=_finished_at)
    if not finished:
        raise OpenSEMError(f"no trained adapter for {sem.name}: run `opensem train --sem {sem.name}` first, or pass --model models:/...")
    return finished[-1].parent


def _finished_at(metadata: Path) -> str | None:
    """When an adapter finished training, by its metadata; None (with a warning) for a damaged
    file, so that one broken adapter folder does not stop choosing among the others."""
    try:
        return str(json.loads(metadata.read_text(encoding="utf-8"))["finished"])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        console.print(f"[yellow]{metadata} is damaged: adapter {metadata.parent.name} left out (train it again, or delete the folder)[/yellow]")
        return None


def check_adapter_weights(folder: Path) -> None:
    """Refuse an adapter whose weights file cannot be read (truncated, overwritten) or holds
    numbers that are not finite: either answers nothing, and the comparison would print a
    collapse instead of saying why."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        return  # an older .bin adapter: PEFT reads it as it is
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise OpenSEMError(f"{weights} cannot be read ({str(e).splitlines()[0][:120]}): the adapter is damaged; "
                           "train it again under a new training.run_name") from None
    import torch

    broken = [name for name, w in tensors.items() if w.is_floating_point() and not bool(torch.isfinite(w).all())]
    if broken:
        raise OpenSEMError(f"{weights}: {len(broken)} of {len(tensors)} weight tensors hold numbers that are not finite "
                           f"(first: {broken[0]}); the adapter is damaged or its training diverged: train it again")


def check_asked_as_trained(folder: Path, cfg: Config) -> None:
    """An adapter only fits the base it was trained on, and the baseline it is compared with must
    be that base too: refuse to evaluate it under another model.base (another recipe), or with
    retrieval set otherwise than in training (open book against closed book)."""
    trained = read_metadata(folder / "training_metadata.json")
    base = trained.get("base_model")
    if base and base != cfg.model.base:
        how = f"--set recipe={trained['recipe']}" if trained.get("recipe") else f"--set model.base={base}"
        raise OpenSEMError(f"adapter {folder.name!r} was trained on {base}, but model.base here is {cfg.model.base}; "
                           f"evaluate it with the config it was trained with: {how}")
    # and asked as it was trained: open book (with passages) or not (metadata before retrieval: off)
    retrieval = recorded(trained.get("retrieval"))
    if trained and retrieval != retrieval_settings(cfg):
        how = " ".join(f"--set retrieval.{k}={v}" for k, v in retrieval.items()) if retrieval else "--set retrieval.enabled=false"
        raise OpenSEMError(f"adapter {folder.name!r} was trained with retrieval {retrieval or 'off'}, this config has it "
                           f"{'on' if cfg.retrieval.enabled else 'off'}; evaluate it as it was trained: {how}")


def check_adapter(folder: Path, cfg: Config) -> None:
    """Both checks before an adapter is loaded: asked as it was trained, weights sound."""
    check_asked_as_trained(folder, cfg)
    check_adapter_weights(folder)


def logged_adapter(model_dir: Path, model_uri: str) -> Path:
    """The adapter folder inside a downloaded OpenSEM model: where its MLmodel says MLflow keeps
    the `adapter` artifact (evaluate --model, export and the vLLM engine read it from there)."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    try:
        artifacts = Model.load(str(model_dir / "MLmodel")).flavors["python_function"].get("artifacts") or {}
        folder = model_dir / artifacts["adapter"]["path"]
    except (MlflowException, OSError, KeyError, TypeError):
        folder = None
    if folder is None or not (folder / "adapter_config.json").is_file():
        raise OpenSEMError(f"{model_uri!r} is not a model OpenSEM logged (it carries no adapter); "
                           "pass one that `opensem train` logged, e.g. models:/opensem-legal@champion")
    return folder
