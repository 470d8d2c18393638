"""The OpenAI routes' own behaviour with a scripted engine (the engines themselves are exercised
with real models in test_serve.py and test_export.py): what a request is asked, how an engine's
failure is reported, and how streamed pieces arrive."""

from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.testclient import TestClient

from opensem.serve.openai_api import add_routes


class ScriptedExpert:
    """An engine that answers with what it was asked, in two pieces when streamed, or fails."""

    name, names, created, max_new_tokens = "opensem-x", {"opensem-x", "x"}, 0, 7

    def __init__(self, fail: bool = False):
        self.fail, self.asked = fail, []

    def sources(self, question: str) -> list[dict]:
        return [{"document": "a.md", "heading": "A", "text": "A is a."}]

    def answer(self, question: str, max_new_tokens: int, on_text=None) -> dict:
        self.asked.append((question, max_new_tokens))
        if self.fail:
            raise RuntimeError("the engine's server died")
        if on_text:
            on_text("Said: ")
            on_text(question)
        return {"text": f"Said: {question}", "prompt_tokens": 3, "completion_tokens": 2, "stopped": True}


def client(expert) -> TestClient:
    app = FastAPI()
    add_routes(app, expert)
    return TestClient(app)


def test_the_last_user_message_is_asked_with_its_text_parts_and_the_answer_length_asked():
    expert = ScriptedExpert()
    body = {"model": "x", "max_completion_tokens": 5, "temperature": 0.7, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "First?"}, {"role": "assistant", "content": "One."},
        {"role": "user", "content": [{"type": "text", "text": "What is A?"}, {"type": "image_url", "image_url": {"url": "x"}}]}]}
    done = client(expert).post("/v1/chat/completions", json=body).json()
    assert expert.asked == [("What is A?", 5)]
    assert done["choices"][0]["message"]["content"] == "Said: What is A?" and done["model"] == "opensem-x"
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5} and done["sources"][0]["document"] == "a.md"
    client(expert).post("/v1/chat/completions", json={"model": "opensem-x", "messages": [{"role": "user", "content": "B?"}]})
    assert expert.asked[-1] == ("B?", 7)  # the logged answer length by default


def test_a_stream_gives_the_sources_first_then_the_pieces_then_done():
    with client(ScriptedExpert()).stream("POST", "/v1/chat/completions",
                                         json={"model": "x", "stream": True, "messages": [{"role": "user", "content": "Q?"}]}) as r:
        events = [line.removeprefix("data: ") for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["sources"][0]["heading"] == "A" and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "Said: Q?"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_an_engine_that_fails_gets_an_openai_500_not_a_traceback():
    r = client(ScriptedExpert(fail=True)).post("/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "Q?"}]})
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error" and "server died" in r.json()["error"]["message"]
