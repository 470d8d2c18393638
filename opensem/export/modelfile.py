"""An Ollama Modelfile for an exported GGUF: the chat template in Ollama's Go template syntax,
the stop token, greedy decoding and the SEM's system prompt, so `ollama create` gives the
answers evaluation measured (without the open book: see opensem/export/__init__.py)."""

from __future__ import annotations

from opensem.errors import OpenSEMError

# ChatML (SmolLM2, Qwen2.5: the bases OpenSEM's recipes ship) as Ollama writes it: the system
# message, each turn between <|im_start|>ROLE and <|im_end|>, then the assistant's turn opened.
CHATML_TEMPLATE = """{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
CHATML_STOP = "<|im_end|>"


def modelfile(gguf_name: str, chat_template: str, system_prompt: str | None, max_new_tokens: int, open_book: bool) -> str:
    """The Modelfile's text, for the GGUF file beside it."""
    if "<|im_start|>" not in chat_template:
        raise OpenSEMError("the Modelfile is written for ChatML chat templates (SmolLM2, Qwen2.5); this base uses "
                           "another: export with --no-modelfile and write its TEMPLATE by hand")
    lines = [
        "# Ollama: `ollama create NAME -f Modelfile`, then `ollama run NAME`.",
        *(["# Trained open book: the expert read excerpts of its documents with each question. They are not",
           "# inside the GGUF; put them in the user turn (opensem serve does) or expect lower accuracy."] if open_book else []),
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{CHATML_TEMPLATE}"""',
        *([f'SYSTEM """{system_prompt}"""'] if system_prompt else []),
        f'PARAMETER stop "{CHATML_STOP}"',
        "PARAMETER temperature 0",  # greedy, as evaluated
        f"PARAMETER num_predict {max_new_tokens}",
    ]
    return "\n".join(lines) + "\n"
