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


class ServerExpert:
    """An OpenAI-compatible server in its own process, answering for the expert with its
    retrieval in front: llama.cpp's on a GGUF export (llama_cpp_expert), vLLM's on the base with
    the adapter as a LoRA module (vllm_expert). The excerpts go into the user turn exactly as
    evaluation puts them; the server applies the model's chat template and decodes greedily."""

    def __init__(self, command: list[str], port: int, served: str, retriever, system_prompt: str | None, max_new_tokens: int,
                 name: str, names: set[str], startup_s: float, what: str):
        self.name, self.names, self.created = name, names, int(time.time())
        self.retriever, self.system_prompt, self.max_new_tokens = retriever, system_prompt, max_new_tokens
        self.served, self.what = served, what  # the model id the server knows; what it serves, said on start
        self.lock = threading.Lock()
        self.server, self.client = start_server(command, port, startup_s, what)

    def sources(self, question: str) -> list[dict]:
        return self.retriever.sources(question) if self.retriever else []

    def answer(self, question: str, max_new_tokens: int, on_text=None) -> dict:
        from opensem.generate import build_messages

        messages = build_messages(question, self.system_prompt, self.retriever.context(question) if self.retriever else None)
        ask = {"model": self.served, "messages": messages, "max_tokens": max_new_tokens, "temperature": 0.0}
        with self.lock:
            if on_text is None:
                done = self.client.chat.completions.create(**ask)
                usage = done.usage
                return {"text": (done.choices[0].message.content or "").strip(), "prompt_tokens": usage.prompt_tokens if usage else 0,
                        "completion_tokens": usage.completion_tokens if usage else 0, "stopped": done.choices[0].finish_reason != "length"}
            pieces, finish = [], None
            for chunk in self.client.chat.completions.create(**ask, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    on_text(pieces[-1])
                finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
        return {"text": "".join(pieces).strip(), "prompt_tokens": 0, "completion_tokens": len(pieces), "stopped": finish != "length"}

    def close(self) -> None:
        self.server.terminate()
        try:
            self.server.wait(30)
        except subprocess.TimeoutExpired:
            self.server.kill()


def llama_cpp_expert(folder: Path, python: Path, name: str, names: set[str]) -> ServerExpert:
    """An `opensem export` folder served by llama-cpp-python's server, the export's passages
    retrieved in front of it."""
    meta = json.loads((folder / "export.json").read_text(encoding="utf-8"))
    port = free_port()
    command = [str(python), "-m", "llama_cpp.server", "--model", str(folder / meta["gguf"]), "--model_alias", "gguf",
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--verbose", "false"]
    return ServerExpert(command, port, "gguf", load_passages(folder / "retrieval_passages.json"), meta.get("system_prompt"),
                        int(meta.get("max_new_tokens", 96)), name, names, 120, str(folder / meta["gguf"]))


def vllm_command(vllm: str, base: str, adapter_dir: Path, port: int) -> list[str]:
    """`vllm serve` on the base model with the adapter as the LoRA module `expert`, its own
    tokenizer and chat template, and a LoRA rank limit that fits it (vLLM's default is 16)."""
    rank = int(json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8")).get("r", 16))
    template = adapter_dir / "chat_template.jinja"
    return [vllm, "serve", base, "--enable-lora", "--lora-modules", f"expert={adapter_dir}", "--max-lora-rank",
            str(max(16, rank)), "--tokenizer", str(adapter_dir), *(["--chat-template", str(template)] if template.is_file() else []),
            "--host", "127.0.0.1", "--port", str(port)]


def vllm_expert(logged: Path, settings: dict, base: str, vllm: str, name: str, names: set[str]) -> ServerExpert:
    """The registered model (downloaded to `logged`) served by vLLM on a GPU: the base with the
    adapter as a LoRA module, the logged passages retrieved in front of it."""
    port = free_port()
    from opensem.adapters import logged_adapter

    command = vllm_command(vllm, base, logged_adapter(logged, name), port)
    return ServerExpert(command, port, "expert", load_passages(logged / "artifacts" / "retrieval_passages.json"),
                        settings.get("system_prompt"), int(settings.get("max_new_tokens", 96)), name, names, 900,
                        f"{base} + LoRA adapter")


def load_passages(path: Path):
    from opensem.retrieval import Retriever

    return Retriever.load(path) if path.is_file() else None


def free_port() -> int:
    """A local port nothing holds now, for a server to take."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(command: list[str], port: int, startup_s: float, what: str):
    """The server process, and an openai client for it, once it answers /v1/models."""
    import openai

    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=600)
    deadline = time.time() + startup_s
    while time.time() < deadline:
        if server.poll() is not None:
            raise OpenSEMError(f"{Path(command[0]).name} stopped before serving {what}: {server.stderr.read().strip()[-300:]}")
        try:
            client.models.list()
            return server, client
        except openai.APIConnectionError:
            time.sleep(0.5)
    server.terminate()
    raise OpenSEMError(f"{Path(command[0]).name} did not start serving {what} within {startup_s:.0f} s")
