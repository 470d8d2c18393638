"""Structured calls to hosted LLMs, shared by the forge teacher and the LLM judge.

    openai      the official `openai` SDK (and any OpenAI-compatible server through base_url),
                JSON-schema structured output; or, for servers that reject that (llama.cpp's
                answers HTTP 500), JSON mode with the schema attached (`response_format`)
    anthropic   the official `anthropic` SDK, structured output through a forced tool call

Every call goes through `LLMClient.complete`: answered from the on-disk cache when the same
request succeeded before (so a re-run, or a restart after a crash, repeats nothing and pays
nothing), otherwise sent with the SDK's own retries (exponential backoff with jitter, Retry-After
honoured, timeouts), parsed (a malformed reply is asked again, then given up on), priced, and
only then cached. A `Budget` stops new requests before they could pass a spending cap.
API keys are read from the environment and go nowhere else: not into the cache key, the logs,
or MLflow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from opensem.config import PriceConfig, mask_url_credentials
from opensem.errors import OpenSEMError

CACHE_VERSION = 1  # bump when the request format changes, so old cache entries are not reused
DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


def _refuses_format(exc) -> bool:
    """Is this HTTP error the server refusing response_format json_schema? A 400/422 is; a 5xx only
    when its message names the format (llama.cpp's server: 500 "Unrecognized response_format type:
    json_schema"), since an overloaded or failing server answers 500 to anything."""
    status = getattr(exc, "status_code", 0) or 0
    return status in (400, 422) or ("json_schema" in str(exc) or "response_format" in str(exc))


class Malformed(Exception):
    """A reply that does not fit the requested schema."""


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


@dataclass
class Completion:
    """One logical call: the parsed result (None if it failed), its usage, and why it failed."""

    result: Any = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0  # calls made (0 when answered from the cache); HTTP requests are counted by the client
    cached: bool = False
    error: str | None = None  # malformed | unusable | api_error | budget
    detail: str | None = None


def strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def decode_json(payload: Any) -> Any:
    """A reply payload (JSON text, or an already-decoded tool input) as Python data."""
    if not isinstance(payload, str):
        return payload
    try:
        return json.loads(strip_fences(payload))
    except json.JSONDecodeError as exc:
        raise Malformed(f"not JSON: {exc.msg}") from None


class LLMClient:
    def __init__(
        self,
        *,
        role: str,
        provider: str,
        model: str | None,
        base_url: str | None,
        api_key_env: str | None,
        max_retries: int,
        timeout_s: float,
        max_tokens: int,
        temperature: float,
        prices: dict[str, PriceConfig],
        cache_dir: Path,
        budget: Budget,
        response_format: str = "auto",
    ):
        if provider not in DEFAULT_KEY_ENV:
            raise OpenSEMError(f"{role}.provider={provider!r} is not an API provider (use openai or anthropic)")
        if not model:
            raise OpenSEMError(f"{role}.model is required for provider {provider} (e.g. --set {role}.model=gpt-4o-mini)")
        self.role, self.provider, self.model, self.base_url = role, provider, model, base_url
        self.shown_url = mask_url_credentials(base_url) if base_url else None  # what messages say
        self.max_retries, self.max_tokens, self.temperature = max_retries, max_tokens, temperature
        self.budget = budget
        self.price = prices.get(model)
        # openai only: the format asked for. "auto" is settled by the first request (json_schema
        # if the server takes it, else json_object); `response_format_used` says which, for the logs.
        self.response_format = response_format
        self.response_format_used: str | None = None if response_format == "auto" else response_format
        self._probe = asyncio.Lock()
        key_env = api_key_env or DEFAULT_KEY_ENV[provider]
        api_key = os.environ.get(key_env)
        if not api_key:
            if not base_url:
                raise OpenSEMError(
                    f"{role}.provider={provider} needs an API key in ${key_env}: export {key_env}=... "
                    f"(or set {role}.api_key_env to the variable that holds it)"
                )
            api_key = "not-needed"  # local OpenAI-compatible servers (vLLM, Ollama) usually need none
        odd = next((i for i, c in enumerate(api_key) if not c.isascii() or c.isspace()), None)
        if odd is not None:  # an HTTP header takes ASCII only: the SDK would fail on every request with a codec error
            raise OpenSEMError(f"${key_env} holds a character an API key cannot have (character {odd + 1} of {len(api_key)}: "
                               f"{'a space' if api_key[odd].isspace() else 'not ASCII, e.g. a typographic quote'}); "
                               f"export {key_env} again, copied without quotes or spaces")
        self.key_env = key_env
        self.http_requests = 0
        import diskcache

        self.cache = diskcache.Cache(str(cache_dir))
        hooks = {"request": [self._count]}
        if provider == "openai":
            import openai
            from openai.types.chat import ChatCompletion

            self._errors = (openai.AuthenticationError, openai.PermissionDeniedError)
            # what a server that cannot do json_schema answers it with (llama.cpp: 500, others 400/422)
            self._format_refused = (openai.BadRequestError, openai.UnprocessableEntityError, openai.InternalServerError)
            self.response_type = ChatCompletion  # imported once here: the import alone takes ~1 s
            self.client = openai.AsyncOpenAI(
                api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout_s,
                http_client=openai.DefaultAioHttpClient(event_hooks=hooks),  # the SDK's documented faster transport
            )
        else:
            import anthropic
            from anthropic.types import Message

            self._errors = (anthropic.AuthenticationError, anthropic.PermissionDeniedError)
            self.response_type = Message
            self.client = anthropic.AsyncAnthropic(
                api_key=api_key, base_url=base_url, max_retries=max_retries, timeout=timeout_s,
                http_client=anthropic.DefaultAioHttpClient(event_hooks=hooks),
            )

    @property
    def name(self) -> str:
        return f"{self.provider}:{self.model}"

    async def _count(self, request) -> None:
        """httpx event hook: every HTTP request, SDK retries included, is counted here."""
        self.http_requests += 1

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        if self.price is None:
            return 0.0
        return (input_tokens * self.price.input_per_mtok + output_tokens * self.price.output_per_mtok) / 1e6

    def cache_key(self, system: str, prompt: str, schema: dict) -> str:
        request = {
            "v": CACHE_VERSION, "provider": self.provider, "model": self.model, "base_url": self.base_url,
            "system": system, "prompt": prompt, "schema": schema, "temperature": self.temperature, "max_tokens": self.max_tokens,
        }
        return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()

    async def complete(self, system: str, prompt: str, schema: dict, schema_name: str, parse: Callable[[Any], Any]) -> Completion:
        key = self.cache_key(system, prompt, schema)
        hit = self.cache.get(key)
        if hit is not None:
            return Completion(parse(hit["payload"]), hit["input_tokens"], hit["output_tokens"], cached=True)
        done = Completion()
        for _ in range(self.max_retries + 1):  # ask again when the reply is malformed
            worst = self.cost((len(system) + len(prompt)) // 2, self.max_tokens)  # generous: ~2 characters per token
            if not self.budget.reserve(worst):
                done.error = "budget"
                return done
            try:
                payload, tokens_in, tokens_out = await self._send(system, prompt, schema, schema_name)
            except self._errors as exc:
                self.budget.settle(worst, 0.0)
                raise OpenSEMError(
                    f"the {self.provider} {self.role.split('.')[0]} rejected the API key in ${self.key_env} "
                    f"({type(exc).__name__}); check it and run again"
                ) from None
            except Exception as exc:  # the SDK already retried 429/5xx/timeouts; give this call up
                self.budget.settle(worst, 0.0)
                done.calls += 1
                done.error, done.detail = "api_error", self._describe(exc)
                return done
            spent = self.cost(tokens_in, tokens_out)
            self.budget.settle(worst, spent)
            done.calls += 1
            done.input_tokens += tokens_in
            done.output_tokens += tokens_out
            done.cost_usd += spent
            try:
                if payload in ("", None, {}, []):
                    raise Malformed("an empty reply (no choices or no content)")
                done.result = parse(payload)
            except Malformed as exc:
                done.error, done.detail = "malformed", str(exc)[:300]
                continue
            done.error = done.detail = None
            entry = {"payload": payload, "input_tokens": tokens_in, "output_tokens": tokens_out}
            await asyncio.to_thread(self.cache.set, key, entry)  # a SQLite write: off the event loop
            return done
        # empty or unparsable every time: a request that failed (forge.max_failed_chunks), not a
        # reply to filter, so that a server answering nothing stops the forge instead of shrinking it
        done.error, done.detail = "unusable", f"no usable reply in {done.calls} tries: {done.detail}"
        return done

    def _describe(self, exc: Exception) -> str:
        """One line for a failed request, its kind first ("connection refused: ..."): the SDKs
        report a refused or unreachable server as a connection error (or, through aiohttp, as a
        timeout), with the socket's own error as its cause."""
        where = self.shown_url or f"the {self.provider} API"
        cause = exc.__cause__ or exc.__context__
        while cause is not None and (cause.__cause__ or cause.__context__) is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, ConnectionRefusedError) or "Connect call failed" in str(cause or ""):
            return f"connection refused: nothing answers at {where} ({type(exc).__name__})"
        if type(exc).__name__ == "APITimeoutError" or _caused_by_timeout(exc):
            return (f"timed out: {where} did not answer within {self.client.timeout}s ({type(exc).__name__}); "
                    f"raise {self.role}.timeout_s for a slow server")
        if type(exc).__name__ == "APIConnectionError" or isinstance(cause, OSError):
            return f"connection failed: cannot reach {where} ({type(exc).__name__}: {str(cause or exc)[:200]})"
        status = getattr(exc, "status_code", None)
        return f"HTTP {status} {type(exc).__name__}: {str(exc)[:300]}" if status else f"{type(exc).__name__}: {str(exc)[:300]}"

    async def _send(self, system: str, prompt: str, schema: dict, schema_name: str) -> tuple[Any, int, int]:
        # The SDKs' generic `post` (their documented way to send a body as-is) rather than the
        # typed `create`, whose request transform walks every node of the body on every call:
        # ~4 ms of CPU each, which capped forge at ~100 requests/s on 2 cores. Retries, backoff,
        # Retry-After, timeouts and response parsing are the SDK's either way.
        if self.provider == "openai":
            if self.response_format_used is None:
                async with self._probe:  # the first request settles "auto" for all the others
                    if self.response_format_used is None:
                        return await self._probe_json_schema(system, prompt, schema, schema_name)
            return await self._send_openai(system, prompt, schema, schema_name, self.response_format_used)
        body = {
            "model": self.model,
            "max_tokens": self.max_tokens,  # (the current Messages API takes no temperature)
            "system": system,
            "messages": [{"role": "user", "content": prompt}],
            "tools": [{"name": schema_name, "description": f"Record the {schema_name}.", "input_schema": schema}],
            "tool_choice": {"type": "tool", "name": schema_name},
        }
        response = await self.client.post("/v1/messages", cast_to=self.response_type, body=body)
        tool = next((b for b in response.content if getattr(b, "type", "") == "tool_use"), None)
        text = next((b.text for b in response.content if getattr(b, "type", "") == "text"), "")
        return (tool.input if tool is not None else text), response.usage.input_tokens, response.usage.output_tokens

    async def _probe_json_schema(self, system: str, prompt: str, schema: dict, schema_name: str) -> tuple[Any, int, int]:
        """response_format auto: try json_schema once (with at most one retry, so a server that
        never takes it costs seconds, not the full backoff); on a refusal use json_object from now on."""
        probe_retries = min(1, self.max_retries)
        try:
            reply = await self._send_openai(system, prompt, schema, schema_name, "json_schema", max_retries=probe_retries)
        except self._format_refused as exc:
            if not _refuses_format(exc):  # a server error that says nothing of the format: no refusal, so
                left = self.max_retries - probe_retries  # the request gets the attempts it has left
                if left <= 0:
                    raise
                reply = await self._send_openai(system, prompt, schema, schema_name, "json_schema", max_retries=left - 1)
                self.response_format_used = "json_schema"
                return reply
            from rich.console import Console

            Console(stderr=True).print(
                f"[yellow]{self.role}[/yellow]: {self.shown_url or 'the server'} refused response_format json_schema "
                f"(HTTP {exc.status_code}); using json_object with the schema (set {self.role}.response_format to choose)",
                highlight=False, soft_wrap=True)
            self.response_format_used = "json_object"
            return await self._send_openai(system, prompt, schema, schema_name, "json_object")
        self.response_format_used = "json_schema"
        return reply

    async def _send_openai(self, system: str, prompt: str, schema: dict, schema_name: str, fmt: str,
                           max_retries: int | None = None) -> tuple[Any, int, int]:
        if fmt == "json_schema":
            response_format = {"type": "json_schema", "json_schema": {"name": schema_name, "strict": True, "schema": schema}}
        else:  # JSON mode; servers that constrain output by a schema (llama.cpp) read it from here
            response_format = {"type": "json_object", "schema": schema}
        body = {
            "model": self.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "response_format": response_format,
        }
        client = self.client if max_retries is None else self.client.with_options(max_retries=max_retries)
        response = await client.post("/chat/completions", cast_to=self.response_type, body=body)
        usage = response.usage
        content = response.choices[0].message.content if response.choices else None
        return content or "", (usage.prompt_tokens if usage else 0), (usage.completion_tokens if usage else 0)

    async def aclose(self) -> None:
        """Close the HTTP client inside the event loop that used it."""
        await self.client.close()

    def close(self) -> None:
        self.cache.close()


def _caused_by_timeout(exc: BaseException) -> bool:
    """Is a read or connect timeout anywhere in the exception's chain? Through aiohttp the SDKs
    report one as a connection error whose cause is a TimeoutError (an OSError, so it must be
    told apart from a refused or unreachable server first)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TimeoutError) or "Timeout" in type(exc).__name__:
            return True
        exc = exc.__cause__ or exc.__context__
    return False
