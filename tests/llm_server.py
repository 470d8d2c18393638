"""A local HTTP server that speaks the OpenAI chat-completions and Anthropic messages APIs.

Tests (and bench/) point the real `openai` / `anthropic` SDKs at it through base_url. Nothing
is mocked inside the SDKs: retries, Retry-After, timeouts and parsing are theirs. Behaviour is
scripted per request with `push(...)`:
    "ok"            a valid reply with one grounded pair per prompt
    "429" / "429:N" rate limited, with Retry-After: N seconds (default 0)
    "500"           server error
    "401"           bad API key
    "malformed"     HTTP 200 whose content is not the requested JSON
    "slow:S"        wait S seconds, then reply "ok"
    "hold"          never reply until `release` is set (a request in flight when a client dies)
    "pairs:JSON"    reply with exactly these pairs (a JSON list of [question, answer])
    "verdict:N"     a judge reply with score N
    "empty"         HTTP 200 with no choices (OpenAI: `choices: []`; Anthropic: no content blocks)
    "refuse"        a refusal (OpenAI: `refusal` and no content; Anthropic: text, no tool call)
With `reject_json_schema` set it behaves as llama.cpp's server does: a `response_format` of type
json_schema gets HTTP 500, and {"type": "json_object", "schema": ...} is honoured.
Judge requests (schema "grade") get, by default, 5 when the graded answer contains the reference
answer and 2 otherwise.
When the script is empty every request gets `default` ("ok"), after `latency` seconds.
It runs on aiohttp in a background thread: one event loop serves many requests in flight
cheaply, so the server is not what limits a throughput benchmark.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import threading
import time
from collections import deque

from aiohttp import web


class FakeLLMServer:
    def __init__(self, latency: float = 0.0, port: int = 0):
        self.latency = latency
        self.default = "ok"
        self.reject_json_schema = False
        self.script: deque[str] = deque()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.log: list[dict] = []  # one entry per request: path, behaviour, status, prompt hash, time
        self.port = port  # 0: any free one
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    # -- control ------------------------------------------------------------------------------
    def __enter__(self) -> "FakeLLMServer":
        self._thread.start()
        self._ready.wait(30)
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def push(self, *behaviours: str) -> None:
        with self.lock:
            self.script.extend(behaviours)

    def successes(self) -> list[str]:
        """Prompt hashes of the requests that got a valid reply."""
        return [e["prompt"] for e in self.log if e["status"] == 200 and e["behaviour"] != "malformed"]

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        app.router.add_get("/v1/models", self._models)  # what a client polls to see the server is up
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=512)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    # -- replies ------------------------------------------------------------------------------
    @staticmethod
    async def _models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "served", "object": "model", "owned_by": "tests"}]})

    def _next(self) -> str:
        with self.lock:
            return self.script.popleft() if self.script else self.default

    @staticmethod
    def _pairs_for(prompt: str) -> list[list[str]]:
        passage = prompt.split('"""')[1] if prompt.count('"""') >= 2 else prompt
        heading = re.search(r"Section: (.*)", prompt)
        first = re.split(r"(?<=[.!?])\s+", re.sub(r"[*#]", "", passage).strip())[0]
        topic = heading.group(1).strip() if heading else "this passage"
        return [[f"What is the first point made in the section on {topic}?", first]]

    @staticmethod
    def _grade(prompt: str) -> int:
        reference = re.search(r"Reference answer: (.*)", prompt)
        graded = prompt.split('"""')[1] if prompt.count('"""') >= 2 else ""
        return 5 if reference and reference.group(1).strip().lower() in graded.lower() else 2

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        anthropic = request.path.endswith("/messages")
        if anthropic:
            prompt = " ".join(m["content"] for m in body.get("messages", []) if isinstance(m.get("content"), str))
        else:
            prompt = body["messages"][-1]["content"]
        behaviour = self._next()
        entry = {
            "path": request.path, "behaviour": behaviour, "status": 200, "time": time.time(),
            "prompt": hashlib.sha256(prompt.encode()).hexdigest(),
            "api_key": request.headers.get("x-api-key") or request.headers.get("authorization"),
            "format": (body.get("response_format") or {}).get("type"),
        }
        with self.lock:
            self.log.append(entry)  # logged on arrival, so a reply the client gave up on still counts
        if self.latency:
            await asyncio.sleep(self.latency)
        kind, _, arg = behaviour.partition(":")
        if self.reject_json_schema and entry["format"] == "json_schema":
            entry["status"] = 500
            return web.json_response({"error": {"code": 500, "type": "server_error",
                                                "message": "Unrecognized response_format type: json_schema"}}, status=500)
        if kind == "hold":
            entry["status"] = 0  # never answered
            while not self.release.is_set():
                await asyncio.sleep(0.05)
            raise web.HTTPServiceUnavailable()
        if kind == "slow":
            await asyncio.sleep(float(arg))
            kind = "ok"
        if kind in ("429", "500", "401"):
            entry["status"] = int(kind)
            headers = {"Retry-After": arg or "0"} if kind == "429" else {}
            error = {"type": "error", "error": {"type": "rate_limit_error" if kind == "429" else "api_error", "message": f"scripted {kind}"}}
            return web.json_response(error, status=int(kind), headers=headers)
        response_format = body.get("response_format") or {}
        schema_name = response_format.get("json_schema", {}).get("name") or (body.get("tools") or [{}])[0].get("name")
        if response_format.get("type") == "json_object":  # no name: tell the judge's schema by its fields
            schema_name = "grade" if "score" in response_format.get("schema", {}).get("properties", {}) else "record_pairs"
        refusal = None
        if kind == "malformed":
            pairs, pairs_json = None, "this is not JSON {"
        elif kind == "refuse":
            pairs, pairs_json, refusal = None, "", "I'm sorry, I can't help with grading this."
        elif schema_name == "grade":
            score = int(arg) if kind == "verdict" else self._grade(prompt)
            pairs = [("verdict", score)]  # marks a structured reply
            pairs_json = json.dumps({"score": score, "reason": f"scripted verdict {score}"})
        else:
            pairs = json.loads(arg) if kind == "pairs" else self._pairs_for(prompt)
            pairs_json = json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]})
        tin, tout = max(1, len(prompt) // 4), max(1, len(pairs_json) // 4)
        if kind == "empty":
            usage = {"input_tokens": tin, "output_tokens": 0} if anthropic else {"prompt_tokens": tin, "completion_tokens": 0, "total_tokens": tin}
            return web.json_response({"id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model"), "content": [],
                                      "stop_reason": "end_turn", "stop_sequence": None, "usage": usage} if anthropic else
                                     {"id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                                      "model": body.get("model"), "choices": [], "usage": usage})
        if anthropic:
            content = (
                [{"type": "text", "text": refusal or pairs_json}]
                if pairs is None
                else [{"type": "tool_use", "id": "toolu_1", "name": schema_name or "record_pairs", "input": json.loads(pairs_json)}]
            )
            return web.json_response({
                "id": "msg_1", "type": "message", "role": "assistant", "model": body.get("model"),
                "content": content, "stop_reason": "tool_use", "stop_sequence": None,
                "usage": {"input_tokens": tin, "output_tokens": tout},
            })
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant", "content": None if refusal else pairs_json, "refusal": refusal}}],
            "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout},
        })


if __name__ == "__main__":  # a stand-alone server in its own process: `llm_server.py [LATENCY [PORT]]`
    import sys

    with FakeLLMServer(latency=float(sys.argv[1]) if len(sys.argv) > 1 else 0.0, port=int(sys.argv[2]) if len(sys.argv) > 2 else 0) as srv:
        print(srv.url, flush=True)
        threading.Event().wait()
