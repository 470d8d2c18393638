"""What answers behind `opensem serve`'s OpenAI routes: the registered model in transformers (the
default), or its GGUF export in llama.cpp. Both ask exactly what evaluation asks (the system
prompt, the open-book excerpts, the question; greedy) and give the excerpts back as sources.

An expert has `name` (the id /v1/models lists), `names` (the ids a request may use), `created`,
`max_new_tokens` (the default answer length), `sources(question)` and `answer(question,
max_new_tokens, on_text=None)` -> {"text", "prompt_tokens", "completion_tokens", "stopped"},
calling on_text with each piece of text as it is generated when given. One answer at a time.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from pathlib import Path

from opensem.errors import OpenSEMError


class TransformersExpert:
    """The registered model as mlflow.pyfunc.load_model loads it (opensem/train/pyfunc_model.py)."""

    def __init__(self, python_model, name: str, names: set[str]):
        self.model = python_model  # the logged AdapterModel, loaded: model, tokenizer, retriever, settings
        self.name, self.names, self.created = name, names, int(time.time())
        self.max_new_tokens = python_model.max_new_tokens
        self.lock = threading.Lock()

    def chat(self, question: str) -> list[dict]:
        from opensem.generate import build_messages

        m = self.model
        return build_messages(question, m.system_prompt, m.retriever.context(question) if m.retriever else None)

    def sources(self, question: str) -> list[dict]:
        return self.model.retriever.sources(question) if self.model.retriever else []

    def answer(self, question: str, max_new_tokens: int, on_text=None) -> dict:
        from opensem.generate import answer_chat, answer_questions

        m = self.model
        with self.lock:
            if m.answer != "quote":
                return answer_chat(m.model, m.tokenizer, self.chat(question), max_new_tokens, text_streamer(m.tokenizer, on_text))
            # a sentence chosen among the excerpts (opensem/quote.py), handed over whole
            text = answer_questions(m.model, m.tokenizer, [question], m.system_prompt, max_new_tokens, 1, m.retriever,
                                    "quote", m.quote_sentences)[0]
        if on_text is not None:
            on_text(text)
        prompt = m.tokenizer.apply_chat_template(self.chat(question), add_generation_prompt=True)
        return {"text": text, "prompt_tokens": len(prompt), "completion_tokens": len(m.tokenizer(text)["input_ids"]), "stopped": True}


def text_streamer(tokenizer, on_text):
    """transformers' TextStreamer (it decodes generated tokens into whole printable pieces)
    handing each piece to on_text; None without on_text."""
    if on_text is None:
        return None
    from transformers import TextStreamer

    class Forward(TextStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                on_text(text)

    return Forward(tokenizer, skip_prompt=True, skip_special_tokens=True)


class LlamaCppExpert:
    """An `opensem export` folder served by llama.cpp (llama-cpp-python's server, in its own
    process on a free local port), with the export's passages retrieved in front of it."""

    def __init__(self, folder: Path, python: Path, name: str, names: set[str]):
        from opensem.retrieval import Retriever

        meta = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        self.name, self.names, self.created = name, names, int(time.time())
        self.system_prompt, self.max_new_tokens = meta.get("system_prompt"), int(meta.get("max_new_tokens", 96))
        passages = folder / "retrieval_passages.json"
        self.retriever = Retriever.load(passages) if passages.is_file() else None
        self.lock = threading.Lock()
        self.server, self.client = start_llama_server(folder / meta["gguf"], python)

    def sources(self, question: str) -> list[dict]:
        return self.retriever.sources(question) if self.retriever else []

    def answer(self, question: str, max_new_tokens: int, on_text=None) -> dict:
        from opensem.generate import build_messages

        messages = build_messages(question, self.system_prompt, self.retriever.context(question) if self.retriever else None)
        ask = {"model": "gguf", "messages": messages, "max_tokens": max_new_tokens, "temperature": 0.0}
        with self.lock:
            if on_text is None:
                done = self.client.chat.completions.create(**ask)
                return {"text": (done.choices[0].message.content or "").strip(), "prompt_tokens": done.usage.prompt_tokens,
                        "completion_tokens": done.usage.completion_tokens, "stopped": done.choices[0].finish_reason != "length"}
            pieces, finish = [], None
            for chunk in self.client.chat.completions.create(**ask, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    on_text(pieces[-1])
                finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
        return {"text": "".join(pieces).strip(), "prompt_tokens": 0, "completion_tokens": len(pieces), "stopped": finish != "length"}

    def close(self) -> None:
        self.server.terminate()
        self.server.wait(30)


def start_llama_server(gguf: Path, python: Path):
    """llama-cpp-python's OpenAI-compatible server on the GGUF (its chat template from the
    file), and an openai client for it; waits until it answers."""
    import socket

    import openai

    with socket.socket() as probe:  # a port nothing holds now, for the server to take
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [str(python), "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", "gguf", "--host", "127.0.0.1",
               "--port", str(port), "--n_ctx", "4096", "--verbose", "false"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise OpenSEMError(f"llama.cpp's server stopped on {gguf.name}: {server.stderr.read().strip()[-300:]}")
        try:
            client.models.list()
            return server, client
        except openai.APIConnectionError:
            time.sleep(0.5)
    server.terminate()
    raise OpenSEMError(f"llama.cpp's server did not start on {gguf.name} within 120 s")
