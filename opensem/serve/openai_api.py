"""OpenAI's chat-completions API in front of a SEM's expert, beside MLflow's `/invocations`.

    POST /v1/chat/completions   {"model": "opensem-legal", "messages": [{"role": "user", "content": "..."}]}
    GET  /v1/models

Any OpenAI client reaches the expert unchanged (`OpenAI(base_url="http://127.0.0.1:5001/v1",
api_key="unused")`). The expert answers the last user message the way it was evaluated: its own
system prompt, its open-book excerpts, greedy decoding; a client's system message, earlier turns
and sampling settings (temperature, top_p, seed) do not change the answer. The excerpts it read
come back in an extra top-level field, `sources` (document, heading, text), in the completion
and in the first chunk of a stream. Errors have OpenAI's body, {"error": {"message", "type",
"param", "code"}}, with a 4xx status.

The expert (engines.py: the registered model in transformers, its GGUF export in llama.cpp, or
vLLM on a GPU) answers one request at a time; concurrent clients queue.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

from fastapi import Request  # resolved by name in the routes' annotations: at module level
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict] | None = None

    def text(self) -> str:
        """The message's text; content parts of type "text" joined (images are not read)."""
        if isinstance(self.content, list):
            return "\n".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """The fields of OpenAI's request this endpoint reads; the others are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, gt=0, le=4096)
    max_completion_tokens: int | None = Field(None, gt=0, le=4096)
    n: int = Field(1, ge=1, le=1)  # greedy answers are all the same


class RequestError(Exception):
    """A request the endpoint refuses, with OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


def parse(body: bytes, expert) -> tuple[ChatRequest, str]:
    """The request and the question it asks (its last message, from the user), or a RequestError."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise RequestError(400, "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise RequestError(400, "the request body must be a JSON object with `model` and `messages`")
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise RequestError(400, f"{param}: {first['msg']}", param) from None
    if request.model not in expert.names:
        raise RequestError(404, f"The model `{request.model}` does not exist: this server serves `{expert.name}`",
                           "model", "model_not_found")
    last = request.messages[-1]
    if last.role != "user" or not last.text().strip():
        raise RequestError(400, "the last message must be the user's question, with text", "messages")
    return request, last.text().strip()


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion(expert, answer: dict, sources: list[dict]) -> dict:
    return {
        "id": completion_id(), "object": "chat.completion", "created": int(time.time()), "model": expert.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer["text"]}, "logprobs": None,
                     "finish_reason": "stop" if answer["stopped"] else "length"}],
        "usage": {"prompt_tokens": answer["prompt_tokens"], "completion_tokens": answer["completion_tokens"],
                  "total_tokens": answer["prompt_tokens"] + answer["completion_tokens"]},
        "sources": sources,
    }


def stream(expert, question: str, max_new_tokens: int, sources: list[dict]):
    """Server-sent events: a first chunk with the role and the sources, one chunk per piece of
    text as it is generated, a last one with the finish reason, then [DONE]. A sync generator:
    Starlette iterates it in its thread pool, so the event loop stays free."""
    import queue

    pieces: queue.Queue = queue.Queue()
    result: dict = {}
    done = object()

    def generate():
        try:
            result.update(expert.answer(question, max_new_tokens, pieces.put))
        finally:
            pieces.put(done)  # also after a failure, so the response ends

    threading.Thread(target=generate, daemon=True).start()
    ident, created = completion_id(), int(time.time())

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": expert.name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, sources=sources)
    while (piece := pieces.get()) is not done:
        if piece:
            yield chunk({"content": piece})
    yield chunk({}, "stop" if result.get("stopped", True) else "length")
    yield "data: [DONE]\n\n"


def add_routes(app, expert) -> None:
    """The OpenAI routes on a FastAPI app (MLflow's scoring app, beside its /invocations and
    /ping, or a bare one); `expert` is one of engines.py's."""
    from fastapi.responses import JSONResponse, StreamingResponse

    @app.exception_handler(RequestError)
    async def refused(_request: Request, error: RequestError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": expert.name, "object": "model", "created": expert.created, "owned_by": "opensem"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(http: Request):
        request, question = parse(await http.body(), expert)
        max_new = request.max_completion_tokens or request.max_tokens or expert.max_new_tokens
        sources = await asyncio.to_thread(expert.sources, question)
        if request.stream:
            return StreamingResponse(stream(expert, question, max_new, sources), media_type="text/event-stream")
        try:
            answer = await asyncio.to_thread(expert.answer, question, max_new)
        except Exception as e:  # the engine failed (a dead llama.cpp or vLLM server, memory): OpenAI's 500 body
            raise RequestError(500, f"the expert could not answer: {type(e).__name__}: {e}") from e
        return completion(expert, answer, sources)
