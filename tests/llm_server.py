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
When the script is empty every request gets `default` ("ok"), after `latency` seconds.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLLMServer:
    def __init__(self, latency: float = 0.0):
        self.latency = latency
        self.default = "ok"
        self.script: deque[str] = deque()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.log: list[dict] = []  # one entry per request: path, behaviour, status, prompt hash, time
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # -- control ------------------------------------------------------------------------------
    def __enter__(self) -> "FakeLLMServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def push(self, *behaviours: str) -> None:
        with self.lock:
            self.script.extend(behaviours)

    def successes(self) -> list[str]:
        """Prompt hashes of the requests that got a valid reply."""
        return [e["prompt"] for e in self.log if e["status"] == 200 and e["behaviour"] != "malformed"]

    # -- replies ------------------------------------------------------------------------------
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

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, status: int, body: dict | str, headers: dict | None = None) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def do_POST(self):  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                request = json.loads(self.rfile.read(length) or b"{}")
                anthropic = self.path.endswith("/messages")
                if anthropic:
                    prompt = " ".join(m["content"] for m in request.get("messages", []) if isinstance(m.get("content"), str))
                else:
                    prompt = request["messages"][-1]["content"]
                behaviour = server._next()
                entry = {
                    "path": self.path, "behaviour": behaviour, "status": 200, "time": time.time(),
                    "prompt": hashlib.sha256(prompt.encode()).hexdigest(), "api_key": self.headers.get("x-api-key") or self.headers.get("authorization"),
                }
                with server.lock:
                    server.log.append(entry)  # logged on arrival, so a reply the client gave up on still counts
                if server.latency:
                    time.sleep(server.latency)
                kind, _, arg = behaviour.partition(":")
                if kind == "hold":
                    entry["status"] = 0  # never answered
                    server.release.wait(120)
                    return
                if kind == "slow":
                    time.sleep(float(arg))
                    kind = "ok"
                if kind in ("429", "500", "401"):
                    entry["status"] = int(kind)
                    headers = {"Retry-After": arg or "0"} if kind == "429" else {}
                    error = {"type": "error", "error": {"type": "rate_limit_error" if kind == "429" else "api_error", "message": f"scripted {kind}"}}
                    return self._send(int(kind), error, headers)
                if kind == "malformed":
                    pairs_json = "this is not JSON {"
                    pairs = None
                else:
                    pairs = json.loads(arg) if kind == "pairs" else server._pairs_for(prompt)
                    pairs_json = json.dumps({"pairs": [{"question": q, "answer": a} for q, a in pairs]})
                tin, tout = max(1, len(prompt) // 4), max(1, len(pairs_json) // 4)
                if anthropic:
                    content = (
                        [{"type": "text", "text": pairs_json}]
                        if pairs is None
                        else [{"type": "tool_use", "id": "toolu_1", "name": "record_pairs", "input": json.loads(pairs_json)}]
                    )
                    return self._send(200, {
                        "id": "msg_1", "type": "message", "role": "assistant", "model": request.get("model"),
                        "content": content, "stop_reason": "tool_use", "stop_sequence": None,
                        "usage": {"input_tokens": tin, "output_tokens": tout},
                    })
                return self._send(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()), "model": request.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": pairs_json}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": tin, "completion_tokens": tout, "total_tokens": tin + tout},
                })

        return Handler
