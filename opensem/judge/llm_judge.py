"""LLM-as-judge through the official openai / anthropic SDKs (opensem/llm.py does the calling,
caching and retrying). Each answer is scored 1-5 against the golden answer, its key facts and
rubric, with a one-sentence reason; `judge.repeats` independent calls, the median kept."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from string import Template
from typing import Any

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.judge.offline import Verdict, key_fact_recall
from opensem.llm import Budget, LLMClient, Malformed, decode_json

DEFAULT_PROMPT = Path(__file__).resolve().parents[1] / "templates" / "judge_prompt.txt"
SYSTEM = "You are a strict, fair grader of answers to domain questions. You reply with JSON only."
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"score": {"type": "integer"}, "reason": {"type": "string"}},
    "required": ["score", "reason"],
    "additionalProperties": False,
}


def parse_verdict(payload: Any) -> tuple[int, str]:
    data = decode_json(payload)
    if not isinstance(data, dict) or not isinstance(data.get("score"), (int, float)) or not 1 <= data["score"] <= 5:
        raise Malformed(f"expected {{'score': 1-5, 'reason': ...}}, got {str(data)[:120]}")
    return int(round(data["score"])), str(data.get("reason", "")).strip()


class LLMJudge:
    def __init__(self, cfg: Config, cache_dir: Path):
        j = cfg.judge
        path = Path(j.prompt_template) if j.prompt_template else DEFAULT_PROMPT
        if not path.is_file():
            raise OpenSEMError(f"judge.prompt_template {path} does not exist")
        self.template = path.read_text(encoding="utf-8")
        self.repeats = j.repeats
        self.concurrency = j.max_concurrency
        self.client_settings = dict(
            role="judge", provider=j.provider, model=j.model, base_url=j.base_url, api_key_env=j.api_key_env,
            max_retries=j.max_retries, timeout_s=j.timeout_s, max_tokens=j.max_tokens, temperature=0.0,
            prices=cfg.forge.prices, cache_dir=cache_dir, budget=Budget(None), response_format=j.response_format,
        )
        self.response_format_used: str | None = None  # openai: the JSON format the server took
        client = LLMClient(**self.client_settings)  # fails now on a missing key, before any generation
        self.name = f"llm:{client.name}"  # the same as evaluate.judge_name(cfg)
        client.close()
        self.cost_usd = 0.0

    def prompt(self, item, answer: str, repeat: int) -> str:
        text = Template(self.template).safe_substitute(
            question=item.question, reference=item.answer, key_facts="; ".join(item.key_facts),
            rubric=item.rubric or "-", answer=answer or "(empty answer)",
        )
        # Independent repeats must not be answered from each other's cache entry.
        return text if repeat == 0 else f"{text}\n(Independent assessment #{repeat + 1}.)"

    def judge(self, items, answers: list[str]) -> list[Verdict | None]:
        return asyncio.run(self._judge_all(items, answers))

    async def _judge_all(self, items, answers):
        # A client per call: its HTTP session belongs to this call's event loop (asyncio.run), and
        # an evaluation judges several times (the answers, then each control)
        client = LLMClient(**self.client_settings)
        gate = asyncio.Semaphore(self.concurrency)

        async def one(item, answer, repeat):
            async with gate:
                done = await client.complete(SYSTEM, self.prompt(item, answer, repeat), VERDICT_SCHEMA, "grade", parse_verdict)
            self.cost_usd += done.cost_usd
            return done.result

        try:
            results = await asyncio.gather(*(one(i, a, r) for i, a in zip(items, answers) for r in range(self.repeats)))
        finally:
            self.response_format_used = client.response_format_used or self.response_format_used
            await client.aclose()
            client.close()
        verdicts: list[Verdict | None] = []
        for k, (item, answer) in enumerate(zip(items, answers)):
            got = [r for r in results[k * self.repeats:(k + 1) * self.repeats] if r is not None]
            if not got:
                verdicts.append(None)  # refused or malformed every time: counted as a judge failure
                continue
            scores = sorted(s for s, _ in got)
            median = int(statistics.median_low(scores))
            reason = next(reason for s, reason in got if s == median)
            verdicts.append(Verdict(median, reason, key_fact_recall(answer, item.key_facts)))
        return verdicts
