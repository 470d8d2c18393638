"""Training recipes: one YAML per base model and method, a config layer under the SEM file.

A recipe lives at ``configs/recipes/<model>/<size>_<method>_<device>.yaml`` (for example
``smollm2/135m_lora_cpu``) and sets what belongs to the base model rather than to the domain:
the model id, the LoRA shape, learning rate, epochs, batch and precision. A SEM picks one with
``recipe: <name>`` in its file (or ``configs/defaults.yaml`` for all SEMs), and any command can
switch it with ``--set recipe=<name>``. Its header comment shows the exact command to run it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from opensem.errors import ConfigError

# <model>/<size>_<method>_<device>: the name alone tells what a recipe trains, how, and where
NAME = re.compile(r"^(?P<model>[a-z0-9][a-z0-9.\-]*)/(?P<size>[a-z0-9.]+)_(?P<method>lora|qlora)_(?P<device>cpu|cuda|mps)$")


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    summary: str
    """The first line of the header comment."""


def recipes_dir(root: Path) -> Path:
    return root / "configs" / "recipes"


def available(root: Path) -> list[Recipe]:
    """Every recipe under configs/recipes, sorted by name."""
    found = []
    for path in sorted(recipes_dir(root).glob("*/*.yaml")):
        name = f"{path.parent.name}/{path.stem}"
        if NAME.match(name):
            found.append(Recipe(name, path, _summary(path)))
    return found


def find(root: Path, name: object, source: str) -> Recipe:
    """The recipe called `name`, or a one-line error naming the layer that asked for it."""
    if isinstance(name, str) and NAME.match(name):
        path = recipes_dir(root) / f"{name}.yaml"
        if path.is_file():
            return Recipe(name, path, _summary(path))
        problem = f"no configs/recipes/{name}.yaml"
    else:
        problem = "expected <model>/<size>_<method>_<device>, e.g. smollm2/135m_lora_cpu"
    names = ", ".join(r.name for r in available(root)) or "none"
    raise ConfigError(f"{source}: recipe = {name!r}: {problem}; available: {names} (`opensem recipes` lists them)")


def _summary(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return ""


def device_mismatch(name: str | None, device: str) -> str | None:
    """A warning when the recipe was written for another device than the one training will use."""
    match = NAME.match(name or "")
    if not match or match["device"] == device:
        return None
    return f"recipe {name} is written for {match['device']}, but training runs on {device} here: expect other speed and memory use"
