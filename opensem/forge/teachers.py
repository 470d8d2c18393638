"""Teachers write question/answer pairs for a chunk.

    openai      the official `openai` SDK; any OpenAI-compatible server through base_url
    anthropic   the official `anthropic` SDK
    local       a transformers model on this machine
    extractive  no model at all (opensem/forge/extractive.py)

The API teachers are an `LLMClient` (opensem/llm.py: cache, budget, SDK retries, pricing,
structured output) plus the teacher prompt and the pairs schema.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel, ValidationError

from opensem.config import Config, TeacherConfig
from opensem.errors import OpenSEMError
from opensem.llm import Budget, Completion, LLMClient, Malformed, decode_json
from opensem.text.chunk import Chunk

DEFAULT_PROMPT = Path(__file__).resolve().parents[1] / "templates" / "teacher_prompt.txt"
SYSTEM = "You write faithful question/answer training pairs from a passage. You reply with JSON only."

PAIRS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pairs": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
                "required": ["question", "answer"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["pairs"],
    "additionalProperties": False,
}


class _QA(BaseModel):
    question: str
    answer: str


class _Reply(BaseModel):
    pairs: list[_QA]


def parse_pairs(payload: Any) -> list[tuple[str, str]]:
    """Validate a reply (JSON text or already-decoded object) against the pairs schema."""
    try:
        reply = _Reply.model_validate(decode_json(payload))
    except (ValidationError, TypeError) as exc:
        raise Malformed(str(exc)[:200]) from None
    return [(p.question.strip(), p.answer.strip()) for p in reply.pairs]


DEFAULT_PAIRS_PER_CHUNK = 3  # what an LLM teacher is asked for when forge.teacher.pairs_per_chunk is unset


def render_prompt(template: str, chunk: Chunk, n_pairs: int | None) -> str:
    # string.Template ($name) rather than str.format: documents are full of braces.
    return Template(template).safe_substitute(
        n_pairs=n_pairs or DEFAULT_PAIRS_PER_CHUNK, source=chunk.source, heading=chunk.heading or "-", chunk=chunk.text
    )


def _template(cfg: TeacherConfig) -> str:
    path = Path(cfg.prompt_template) if cfg.prompt_template else DEFAULT_PROMPT
    if not path.is_file():
        raise OpenSEMError(f"forge.teacher.prompt_template {path} does not exist")
    return path.read_text(encoding="utf-8")


class APITeacher:
    """An OpenAI or Anthropic model writing pairs through the shared LLMClient."""

    def __init__(self, cfg: TeacherConfig, prices, cache_dir: Path, budget: Budget):
        self.template = _template(cfg)
        self.client = LLMClient(
            role="forge.teacher", provider=cfg.provider, model=cfg.model, base_url=cfg.base_url,
            api_key_env=cfg.api_key_env, max_retries=cfg.max_retries, timeout_s=cfg.timeout_s,
            max_tokens=cfg.max_tokens, temperature=cfg.temperature, prices=prices, cache_dir=cache_dir, budget=budget,
            response_format=cfg.response_format,
        )
        self.name = self.client.name

    @property
    def http_requests(self) -> int:
        return self.client.http_requests

    @property
    def response_format_used(self) -> str | None:
        return self.client.response_format_used if self.client.provider == "openai" else None

    async def ask(self, chunk: Chunk, n_pairs: int | None) -> Completion:
        """A Completion whose result is the chunk's list of (question, answer) pairs."""
        return await self.client.complete(SYSTEM, render_prompt(self.template, chunk, n_pairs), PAIRS_SCHEMA, "record_pairs", parse_pairs)

    async def aclose(self) -> None:
        await self.client.aclose()

    def close(self) -> None:
        self.client.close()


class LocalTeacher:
    """A transformers model on this machine writes the pairs (free, slow, and only as good as
    the model: small models often fail the JSON schema, and those chunks are rejected)."""

    provider = "local"

    def __init__(self, cfg: TeacherConfig, model_dir: Path | str):
        from opensem.models import load_model_and_tokenizer

        self.cfg = cfg
        self.template = _template(cfg)
        self.model, self.tokenizer = load_model_and_tokenizer(model_dir)
        self.lock = asyncio.Lock()
        self.name = f"local:{cfg.model or Path(str(model_dir)).name}"

    async def ask(self, chunk: Chunk, n_pairs: int | None) -> Completion:
        prompt = render_prompt(self.template, chunk, n_pairs)
        async with self.lock:  # one generation at a time: the CPU is the bottleneck
            text, tin, tout = await asyncio.to_thread(self._generate, prompt)
        done = Completion(input_tokens=tin, output_tokens=tout, calls=1)
        try:
            done.result = parse_pairs(text)
        except Malformed as exc:
            done.error, done.detail = "malformed", str(exc)
        return done

    def _generate(self, prompt: str) -> tuple[str, int, int]:
        import torch

        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True).to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(
                **enc, max_new_tokens=self.cfg.max_tokens, do_sample=self.cfg.temperature > 0,
                temperature=self.cfg.temperature or None, pad_token_id=self.tokenizer.pad_token_id,
            )
        new = out[0, enc["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True), int(enc["input_ids"].shape[1]), int(new.shape[0])

    async def aclose(self) -> None:
        pass

    def close(self) -> None:
        pass


def make_teacher(cfg: Config, cache_dir: Path, budget: Budget, base_model_dir: Path | str | None = None):
    t = cfg.forge.teacher
    if t.provider == "extractive":
        from opensem.forge.extractive import ExtractiveTeacher

        x = cfg.experimental
        return ExtractiveTeacher(x.about_questions, x.yes_no_questions, x.yes_opener)
    if t.provider in ("openai", "anthropic"):
        if cfg.forge.max_cost_usd is not None and t.model not in cfg.forge.prices:
            # without a price every request counts as $0 and the cap could never stop anything
            # the model name may hold dots (qwen2.5-7b), which a dotted --set key would split: give the price as a mapping
            price = f'{{"{t.model}": {{input_per_mtok: 0.15, output_per_mtok: 0.6}}}}'
            raise OpenSEMError(
                f"forge.max_cost_usd is set but forge.prices has no price for {t.model!r}: give it in USD per million "
                f"tokens (0 for a free server) under forge: prices: in the SEM's config file, or --set 'forge.prices={price}'"
            )
        return APITeacher(t, cfg.forge.prices, cache_dir, budget)
    if t.provider == "local":
        return LocalTeacher(t, Path(t.model) if t.model and Path(t.model).is_dir() else base_model_dir)
    raise OpenSEMError(f"unknown forge.teacher.provider {t.provider!r}")  # the schema refuses it first
