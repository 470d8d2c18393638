"""Teachers write question/answer pairs for a chunk.

    openai      the official `openai` SDK; any OpenAI-compatible server through base_url
    anthropic   the official `anthropic` SDK, structured output through a forced tool call
    local       a transformers model on this machine
    extractive  no model at all (opensem/forge/extractive.py)

Every paid call goes through `PaidTeacher.ask`: answered from the on-disk cache when the same
request succeeded before (so a re-run or a restart after a crash repeats nothing), otherwise
sent with the SDK's own retries (exponential backoff with jitter, Retry-After honoured),
checked against the JSON schema (malformed replies are re-asked, then given up on), priced,
and only then cached. A `Budget` stops new requests before they could pass forge.max_cost_usd.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from pydantic import BaseModel, ValidationError

from opensem.config import Config, PriceConfig, TeacherConfig
from opensem.errors import OpenSEMError
from opensem.forge.chunk import Chunk

DEFAULT_PROMPT = Path(__file__).resolve().parents[1] / "templates" / "teacher_prompt.txt"
SYSTEM = "You write faithful question/answer training pairs from a passage. You reply with JSON only."
CACHE_VERSION = 1  # bump when the request format changes, so old cache entries are not reused

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


RESPONSE_FORMAT: dict[str, Any] = {"type": "json_schema", "json_schema": {"name": "qa_pairs", "strict": True, "schema": PAIRS_SCHEMA}}


class _QA(BaseModel):
    question: str
    answer: str


class _Reply(BaseModel):
    pairs: list[_QA]


@dataclass
class Reply:
    """What one chunk got from the teacher."""

    pairs: list[tuple[str, str]] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    requests: int = 0  # calls made (0 when answered from the cache); HTTP requests are counted by the teacher
    cached: bool = False
    error: str | None = None  # malformed | teacher_error | budget
    detail: str | None = None  # what went wrong, for rejected.jsonl


class Budget:
    """Reserve the worst-case cost of a request before sending it, settle the real cost after.

    Spending can therefore never pass the cap, even with many requests in flight."""

    def __init__(self, cap: float | None):
        self.cap = cap
        self.spent = 0.0
        self.reserved = 0.0
        self.exhausted = False

    def reserve(self, amount: float) -> bool:
        if self.cap is not None and self.spent + self.reserved + amount > self.cap:
            self.exhausted = True
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, actual: float) -> None:
        self.reserved -= reserved
        self.spent += actual


class Malformed(Exception):
    pass


def parse_pairs(payload: Any) -> list[tuple[str, str]]:
    """Validate a reply (JSON text or already-decoded object) against the pairs schema."""
    try:
        data = json.loads(_strip_fences(payload)) if isinstance(payload, str) else payload
        reply = _Reply.model_validate(data)
    except (json.JSONDecodeError, ValidationError, TypeError) as exc:
        raise Malformed(str(exc)[:200]) from None
    return [(p.question.strip(), p.answer.strip()) for p in reply.pairs]


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def render_prompt(template: str, chunk: Chunk, n_pairs: int) -> str:
    # string.Template ($name) rather than str.format: documents are full of braces.
    return Template(template).safe_substitute(
        n_pairs=n_pairs, source=chunk.source, heading=chunk.heading or "-", chunk=chunk.text
    )


class PaidTeacher:
    """Shared cache / budget / retry / pricing logic around one provider's `_send`."""

    provider = "?"
    api_key_default = ""

    def __init__(self, cfg: TeacherConfig, prices: dict[str, PriceConfig], cache_dir: Path, budget: Budget):
        if not cfg.model:
            raise OpenSEMError(f"forge.teacher.model is required for provider {cfg.provider} (e.g. --set forge.teacher.model=...)")
        self.cfg = cfg
        self.budget = budget
        self.price = prices.get(cfg.model)
        key_env = cfg.api_key_env or self.api_key_default
        self.api_key = os.environ.get(key_env)
        if not self.api_key:
            if cfg.base_url:  # local OpenAI-compatible servers (vLLM, Ollama) usually need no key
                self.api_key = "not-needed"
            else:
                raise OpenSEMError(
                    f"forge.teacher.provider={cfg.provider} needs an API key in ${key_env}: export {key_env}=... "
                    "(or set forge.teacher.api_key_env to the variable that holds it)"
                )
        template_path = Path(cfg.prompt_template) if cfg.prompt_template else DEFAULT_PROMPT
        if not template_path.is_file():
            raise OpenSEMError(f"forge.teacher.prompt_template {template_path} does not exist")
        self.template = template_path.read_text(encoding="utf-8")
        import diskcache

        self.cache = diskcache.Cache(str(cache_dir))
        self.http_requests = 0

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.cfg.model}"

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        if self.price is None:
            return 0.0
        return (input_tokens * self.price.input_per_mtok + output_tokens * self.price.output_per_mtok) / 1e6

    def cache_key(self, prompt: str) -> str:
        request = {
            "v": CACHE_VERSION,
            "provider": self.provider,
            "model": self.cfg.model,
            "base_url": self.cfg.base_url,
            "system": SYSTEM,
            "prompt": prompt,
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
        }
        return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()

    async def ask(self, chunk: Chunk, n_pairs: int) -> Reply:
        prompt = render_prompt(self.template, chunk, n_pairs)
        key = self.cache_key(prompt)
        hit = self.cache.get(key)
        if hit is not None:
            return Reply([tuple(p) for p in hit["pairs"]], hit["input_tokens"], hit["output_tokens"], 0.0, 0, cached=True)
        reply = Reply()
        for _ in range(self.cfg.max_retries + 1):  # re-ask on malformed output
            worst = self.cost(len(SYSTEM + prompt) // 2, self.cfg.max_tokens)  # generous: ~2 chars per token
            if not self.budget.reserve(worst):
                reply.error = "budget"
                return reply
            try:
                payload, tin, tout = await self._send(prompt)
            except OpenSEMError:
                self.budget.settle(worst, 0.0)
                raise
            except Exception as exc:  # the SDK already retried 429/5xx/timeouts; give this chunk up
                self.budget.settle(worst, 0.0)
                reply.error = "teacher_error"
                reply.requests += 1
                reply.detail = f"{type(exc).__name__}: {str(exc)[:300]}"
                return reply
            spent = self.cost(tin, tout)
            self.budget.settle(worst, spent)
            reply.requests += 1
            reply.input_tokens += tin
            reply.output_tokens += tout
            reply.cost_usd += spent
            try:
                reply.pairs = parse_pairs(payload)
            except Malformed as exc:
                reply.error, reply.detail = "malformed", str(exc)
                continue
            reply.error = None
            self.cache.set(key, {"pairs": reply.pairs, "input_tokens": tin, "output_tokens": tout})
            return reply
        return reply

    async def _send(self, prompt: str) -> tuple[Any, int, int]:
        """One logical call (the SDK retries inside it): (payload, input tokens, output tokens)."""
        raise NotImplementedError

    async def _count(self, request) -> None:
        """httpx event hook: every HTTP request, SDK retries included, is counted here."""
        self.http_requests += 1

    async def aclose(self) -> None:
        """Close the HTTP client inside the event loop that used it."""
        client = getattr(self, "client", None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        self.cache.close()


def _auth_error(exc: Exception, provider: str, env: str) -> OpenSEMError:
    return OpenSEMError(f"the {provider} teacher rejected the API key in ${env} ({type(exc).__name__}); check it and run forge again")


class OpenAITeacher(PaidTeacher):
    provider = "openai"
    api_key_default = "OPENAI_API_KEY"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import openai
        from openai.types.chat import ChatCompletion

        self.response_type = ChatCompletion  # imported here, not per call: the import alone takes ~1 s
        self.client = openai.AsyncOpenAI(
            api_key=self.api_key, base_url=self.cfg.base_url, max_retries=self.cfg.max_retries,
            timeout=self.cfg.timeout_s, http_client=openai.DefaultAioHttpClient(event_hooks={"request": [self._count]}),
        )

    async def _send(self, prompt: str) -> tuple[Any, int, int]:
        import openai

        body = {
            "model": self.cfg.model,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
            "temperature": self.cfg.temperature,
            "max_tokens": self.cfg.max_tokens,
            "response_format": RESPONSE_FORMAT,
        }
        try:
            # The SDK's generic `post` (its documented way to send a body as-is) rather than
            # `chat.completions.create`, whose typed transform walks every request node on every
            # call: ~4 ms of CPU each, which capped forge at ~100 requests/s. Retries, backoff,
            # Retry-After, timeouts and response parsing are the SDK's either way.
            response = await self.client.post("/chat/completions", cast_to=self.response_type, body=body)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise _auth_error(exc, self.provider, self.cfg.api_key_env or self.api_key_default) from None
        usage = response.usage
        content = response.choices[0].message.content if response.choices else None
        tokens_in, tokens_out = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        return content or "", tokens_in, tokens_out


class AnthropicTeacher(PaidTeacher):
    provider = "anthropic"
    api_key_default = "ANTHROPIC_API_KEY"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import anthropic
        from anthropic.types import Message

        self.response_type = Message
        self.client = anthropic.AsyncAnthropic(
            api_key=self.api_key, base_url=self.cfg.base_url, max_retries=self.cfg.max_retries,
            timeout=self.cfg.timeout_s, http_client=anthropic.DefaultAioHttpClient(event_hooks={"request": [self._count]}),
        )

    async def _send(self, prompt: str) -> tuple[Any, int, int]:
        import anthropic

        body = {
            "model": self.cfg.model,
            "max_tokens": self.cfg.max_tokens,  # (the current Messages API takes no temperature)
            "system": SYSTEM,
            "messages": [{"role": "user", "content": prompt}],
            "tools": [{"name": "record_pairs", "description": "Record the question/answer pairs.", "input_schema": PAIRS_SCHEMA}],
            "tool_choice": {"type": "tool", "name": "record_pairs"},
        }
        try:
            # Generic `post` for the same reason as OpenAITeacher._send: no per-call typed transform.
            response = await self.client.post("/v1/messages", cast_to=self.response_type, body=body)
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            raise _auth_error(exc, self.provider, self.cfg.api_key_env or self.api_key_default) from None
        tool = next((b for b in response.content if getattr(b, "type", "") == "tool_use"), None)
        text = next((b.text for b in response.content if getattr(b, "type", "") == "text"), "")
        payload = tool.input if tool is not None else text
        return payload, response.usage.input_tokens, response.usage.output_tokens


class LocalTeacher:
    """A transformers model on this machine writes the pairs (free, slow, and only as good as
    the model: small models often fail the JSON schema, and those chunks are rejected)."""

    provider = "local"

    def __init__(self, cfg: TeacherConfig, model_dir: Path | str):
        from opensem.models import load_model_and_tokenizer

        self.cfg = cfg
        self.template = (Path(cfg.prompt_template) if cfg.prompt_template else DEFAULT_PROMPT).read_text(encoding="utf-8")
        self.model, self.tokenizer = load_model_and_tokenizer(model_dir)
        self.lock = asyncio.Lock()
        self.name = f"local:{cfg.model or Path(str(model_dir)).name}"

    def cost(self, *_: int) -> float:
        return 0.0

    async def ask(self, chunk: Chunk, n_pairs: int) -> Reply:
        prompt = render_prompt(self.template, chunk, n_pairs)
        async with self.lock:  # one generation at a time: the CPU is the bottleneck
            text, tin, tout = await asyncio.to_thread(self._generate, prompt)
        reply = Reply(input_tokens=tin, output_tokens=tout, requests=1)
        try:
            reply.pairs = parse_pairs(text)
        except Malformed:
            reply.error = "malformed"
        return reply

    def _generate(self, prompt: str) -> tuple[str, int, int]:
        import torch

        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        enc = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
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

        return ExtractiveTeacher()
    if t.provider == "openai":
        return OpenAITeacher(t, cfg.forge.prices, cache_dir, budget)
    if t.provider == "anthropic":
        return AnthropicTeacher(t, cfg.forge.prices, cache_dir, budget)
    if t.provider == "local":
        return LocalTeacher(t, Path(t.model) if t.model and Path(t.model).is_dir() else base_model_dir)
    raise OpenSEMError(f"unknown forge.teacher.provider {t.provider!r}")  # the schema refuses it first
