"""The golden set: checked questions and answers that every evaluation of a SEM uses.

File: evals/<sem>/golden_set.json, either a list of items or {"about": "...", "items": [...]}.
Item: id, question, answer, key_facts (1+ case-insensitive regular expressions that a correct
answer must match; plain words work as they are), optional rubric, tags, source, and asserts
(extra promptfoo assertions for `opensem evaluate --promptfoo`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from opensem.errors import OpenSEMError


class GoldenItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    key_facts: list[str] = Field(min_length=1)
    rubric: str | None = None
    tags: list[str] = []
    source: str | None = None
    asserts: list[dict] = []  # extra promptfoo assertions, e.g. {"type": "icontains", "value": "six"}

    @field_validator("id", "question", "answer")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("key_facts")
    @classmethod
    def _regexes(cls, facts: list[str]) -> list[str]:
        for fact in facts:
            if not fact.strip():
                raise ValueError("a key fact must not be blank")
            try:
                re.compile(fact)
            except re.error as exc:
                raise ValueError(f"key fact {fact!r} is not a valid regular expression ({exc})") from None
        return facts


def load_golden(path: Path) -> list[GoldenItem]:
    if not path.is_file():
        raise OpenSEMError(f"golden set {path} not found: write it (see `opensem new-sem` for the format)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise OpenSEMError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    raw = data.get("items") if isinstance(data, dict) else data
    if not isinstance(raw, list) or not raw:
        raise OpenSEMError(f"{path}: expected a non-empty list of items (or {{\"items\": [...]}})")
    items: list[GoldenItem] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        label = f"item {index + 1}" + (f" (id {entry.get('id')!r})" if isinstance(entry, dict) and entry.get("id") else "")
        try:
            item = GoldenItem.model_validate(entry)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "item"
            raise OpenSEMError(f"{path}: {label}: {field}: {err['msg']}") from None
        if item.id in seen:
            raise OpenSEMError(f"{path}: {label}: duplicate id {item.id!r}; ids must be unique")
        seen.add(item.id)
        items.append(item)
    return items


def golden_digest(items: list[GoldenItem]) -> str:
    canonical = json.dumps([i.model_dump() for i in items], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_golden_for_scoring(path: Path) -> list[GoldenItem]:
    """The golden set, refused while it still holds the placeholder that `opensem new-sem` wrote."""
    items = load_golden(path)
    if any(i.id.startswith("example-") for i in items):
        raise OpenSEMError(f"{path} still holds the example item from `opensem new-sem`; replace it with real questions")
    return items
