"""Where a SEM's files live, and how a new SEM is scaffolded.

    data/<sem>/raw/                     documents you provide
    data/<sem>/processed/               forge output (train.jsonl, test.jsonl, manifest.json)
    evals/<sem>/golden_set.json         the golden question/answer set
    evals/<sem>/dev_set.json            optional: questions to choose settings by (opensem dev)
    configs/sems/<sem>.yaml             the SEM's config layer
    models/<sem>/adapters/<run_name>/   trained adapters
    models/base/<name>/                 base models built or cached locally
    reports/<sem>/                      reports

The project root is $OPENSEM_HOME, else the nearest folder at or above the current one that
holds configs/defaults.yaml, else the current folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from opensem.errors import OpenSEMError

SEM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def project_root() -> Path:
    if os.environ.get("OPENSEM_HOME"):
        home = Path(os.environ["OPENSEM_HOME"]).resolve()
        if not (home / "configs" / "defaults.yaml").is_file():
            raise OpenSEMError(f"OPENSEM_HOME={home} is not an OpenSEM project (no configs/defaults.yaml): "
                               f"point it at the project folder, or unset it to use the current folder")
        return home
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "configs" / "defaults.yaml").is_file():
            return folder
    return here


def check_sem_name(name: str) -> str:
    if not SEM_NAME.match(name or ""):
        raise OpenSEMError(
            f"invalid SEM name {name!r}: use lowercase letters, digits, '-' and '_', starting with a letter or digit (e.g. legal, med-v2)"
        )
    return name


@dataclass(frozen=True)
class Sem:
    """One SEM's paths inside a project."""

    root: Path
    name: str

    @property
    def config_file(self) -> Path:
        return self.root / "configs" / "sems" / f"{self.name}.yaml"

    @property
    def raw_dir(self) -> Path:
        return self.root / "data" / self.name / "raw"

    @property
    def processed_dir(self) -> Path:
        """The forge's outputs, one complete set (a set a kill left aside mid-swap is put back)."""
        from opensem.io import recover_folder

        folder = self.root / "data" / self.name / "processed"
        recover_folder(folder)
        return folder

    @property
    def cache_dir(self) -> Path:
        return self.root / "data" / self.name / "cache"

    @property
    def evals_dir(self) -> Path:
        return self.root / "evals" / self.name

    @property
    def golden_set(self) -> Path:
        return self.evals_dir / "golden_set.json"

    @property
    def dev_set(self) -> Path:
        """Optional: questions to choose settings by, so the golden set stays an unseen test
        (opensem/judge/dev.py)."""
        return self.evals_dir / "dev_set.json"

    @property
    def adapters_dir(self) -> Path:
        return self.root / "models" / self.name / "adapters"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports" / self.name

    @property
    def base_models_dir(self) -> Path:
        return self.root / "models" / "base"


def known_sems(root: Path) -> list[str]:
    return sorted(p.stem for p in (root / "configs" / "sems").glob("*.yaml"))


def open_sem(name: str, root: Path | None = None) -> Sem:
    """A SEM that exists (has configs/sems/<name>.yaml), or a one-line error saying how to make it."""
    root = root or project_root()
    check_sem_name(name)
    sem = Sem(root, name)
    if not sem.config_file.is_file():
        if not (root / "configs" / "defaults.yaml").is_file():
            raise OpenSEMError(f"{root} is not an OpenSEM project (no configs/defaults.yaml here or above): run opensem "
                               "inside a clone of the OpenSEM repository, or point OPENSEM_HOME at one")
        known = ", ".join(known_sems(root)) or "none yet"
        raise OpenSEMError(f"unknown SEM {name!r} in {root} (known: {known}); create it with `opensem new-sem {name}`")
    return sem


EXAMPLE_GOLDEN = {
    "about": (
        "Golden set: questions a user of this expert would ask, with checked answers. Replace the "
        "example item. Fields: id (unique), question, answer (the reference answer), key_facts (1-3 "
        "short strings or regexes that any correct answer must state: a term, a number, a rule), "
        "source (document it comes from; optional), tags (optional list), rubric (optional extra "
        "instructions for an LLM judge). Aim for 40+ items; never put them in data/<sem>/raw."
    ),
    "items": [
        {
            "id": "example-1",
            "question": "Replace me: what would a user ask about your domain?",
            "answer": "Replace me: the checked answer, stating the key fact first.",
            "key_facts": ["the key fact"],
            "source": "your-document.md",
            "tags": ["example"],
        }
    ],
}

SEM_CONFIG_TEMPLATE = """\
# SEM '{name}': settings that differ from configs/defaults.yaml.
# Every key is documented in opensem/config.py; `opensem config --sem {name}` shows the result.
#
#   opensem forge --sem {name}      # data/{name}/raw -> data/{name}/processed
#   opensem baseline --sem {name}   # score the base model on evals/{name}/golden_set.json
#   opensem train --sem {name}      # LoRA adapter -> models/{name}/adapters/<run_name>
#   opensem evaluate --sem {name}   # Baseline vs Fine-tuned
#
# recipe: qwen2.5/1.5b_lora_cuda   # base model + training settings; `opensem recipes` lists them
# model:
#   system_prompt: "You are a ... expert. State the key fact first."
# forge:
#   teacher:
#     provider: openai          # or anthropic / extractive / local
#     model: gpt-4o-mini
# training:
#   epochs: 3
"""


def new_sem(name: str, root: Path | None = None) -> Sem:
    """Scaffold data/<name>/raw, evals/<name>/golden_set.json and configs/sems/<name>.yaml."""
    root = root or project_root()
    if not (root / "configs" / "defaults.yaml").is_file():
        raise OpenSEMError(f"{root} is not an OpenSEM project (no configs/defaults.yaml here or above): run new-sem inside "
                           "a clone of the OpenSEM repository, or point OPENSEM_HOME at one")
    sem = Sem(root, check_sem_name(name))
    if sem.config_file.exists():
        raise OpenSEMError(f"SEM {name!r} already exists ({sem.config_file}); pick another name")
    for folder in (sem.raw_dir, sem.evals_dir, sem.config_file.parent):  # checked first: all three folders or none
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None and blocking.is_relative_to(root):
            raise OpenSEMError(f"{blocking} is a file, where new-sem makes a folder: move the file away, then run "
                               f"`opensem new-sem {name}` again")
    sem.raw_dir.mkdir(parents=True, exist_ok=True)
    (sem.raw_dir / ".gitkeep").touch()
    sem.evals_dir.mkdir(parents=True, exist_ok=True)
    if not sem.golden_set.exists():
        sem.golden_set.write_text(json.dumps(EXAMPLE_GOLDEN, indent=2) + "\n", encoding="utf-8")
    sem.config_file.parent.mkdir(parents=True, exist_ok=True)
    sem.config_file.write_text(SEM_CONFIG_TEMPLATE.format(name=name), encoding="utf-8")
    return sem
