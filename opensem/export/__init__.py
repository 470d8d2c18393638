"""`opensem export`: a SEM's registered expert as one GGUF file, for llama.cpp, Ollama and LM Studio.

    opensem export --sem legal                  # the champion, q8_0, into exports/legal/
    opensem export --sem legal --quant q4_k_m   # smaller; needs a built llama-cpp-python

Steps: the registered model version (its adapter and settings, as MLflow stores them) -> the
adapter merged into its base (PEFT's merge_and_unload) with a plain chat template -> llama.cpp's
converter (export/llama_cpp.py) -> GGUF in the asked precision -> an Ollama Modelfile beside it
(export/modelfile.py). The folder appears whole or not at all, and its files are logged to
MLflow on the version's run (artifacts `export/<quant>/`), the version tagged with where.

Open book: an expert trained with retrieval answered with excerpts of its documents in the user
turn. A GGUF holds the weights, not the passages; the export says so, and copies the passages
(retrieval_passages.json) beside the GGUF for whoever puts a retriever in front of it.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.workspace import Sem

# transformers' {% generation %} markers (assistant-only loss in training) mean nothing to the
# Jinja engines of llama.cpp and llama-cpp-python: the exported template goes without them
GENERATION_MARKERS = re.compile(r"\{%-?\s*(end)?generation\s*-?%\}")


def export(sem: Sem, cfg: Config, alias: str = "champion", quant: str = "q8_0", out: Path | None = None, log: bool = True) -> dict:
    """Export the version `alias` names; returns what was written (also export.json in the folder).
    log=False leaves MLflow as it was (a benchmark's throw-away export)."""
    from opensem.adapters import logged_adapter
    from opensem.export.llama_cpp import LLAMA_CPP_PYTHON, QUANTS
    from opensem.registry import registered_version

    if quant not in QUANTS:
        raise OpenSEMError(f"--quant {quant!r} is not one of {', '.join(QUANTS)}")
    version = registered_version(sem, cfg, alias)
    name = f"{version.name}-v{version.version}"
    target = out or sem.root / "exports" / sem.name / f"{name}-{quant}"
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        work = Path(tmp)
        logged = download(version, work / "logged")
        settings = logged_settings(logged)
        merged = merge(logged_adapter(logged, f"models:/{version.name}/{version.version}"), settings["base_model"], sem, work / "merged")
        staged = work / "export"
        staged.mkdir()
        gguf = to_gguf(merged, staged / f"{name}.{quant}.gguf", quant, sem.root / "models" / "tools")
        passages = logged / "artifacts" / "retrieval_passages.json"
        if passages.is_file():
            shutil.copy2(passages, staged / passages.name)
        from opensem.export.modelfile import modelfile

        template = (merged / "chat_template.jinja").read_text(encoding="utf-8")
        (staged / "Modelfile").write_text(modelfile(gguf.name, template, settings.get("system_prompt"),
                                                    int(settings.get("max_new_tokens", 96)), passages.is_file()), encoding="utf-8")
        summary = {"model": version.name, "version": int(version.version), "alias": alias, "quant": quant, "gguf": gguf.name,
                   "bytes": gguf.stat().st_size, "base_model": settings["base_model"], "open_book": passages.is_file(),
                   "system_prompt": settings.get("system_prompt"), "max_new_tokens": int(settings.get("max_new_tokens", 96)),
                   "converter": f"llama.cpp's convert_hf_to_gguf.py from llama-cpp-python {LLAMA_CPP_PYTHON}"}
        (staged / "export.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    if log:
        log_export(version, target, quant)
    return summary | {"folder": str(target)}


def download(version, into: Path) -> Path:
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(f"models:/{version.name}/{version.version}", dst_path=str(into)))


def logged_settings(logged: Path) -> dict:
    """The settings the model was logged with (base model, system prompt, max_new_tokens)."""
    from mlflow.models import Model

    return dict(Model.load(str(logged)).flavors["python_function"].get("config") or {})


def merge(adapter: Path, base_model: str, sem: Sem, into: Path) -> Path:
    """The adapter merged into its base, saved as a Hugging Face folder in the base's own dtype,
    with the adapter's tokenizer and its chat template without training markers."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from opensem.models import chatml_byte_level, resolve_base_model

    base = resolve_base_model(base_model, sem.base_models_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    merged.save_pretrained(into)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter))
    tokenizer.chat_template = GENERATION_MARKERS.sub("", tokenizer.chat_template or "")
    chatml_byte_level(tokenizer)  # an adapter trained on an older build of the base carries its tokenizer
    tokenizer.save_pretrained(into)
    return into


def to_gguf(merged: Path, outfile: Path, quant: str, tools_dir: Path) -> Path:
    from opensem.export.llama_cpp import CONVERTER_TYPES, convert, converter, quantize

    script = converter(tools_dir)
    if quant in CONVERTER_TYPES:
        convert(script, merged, outfile, quant)
    else:
        f16 = outfile.with_name(outfile.stem + ".f16.tmp")
        convert(script, merged, f16, "f16")
        quantize(f16, outfile, quant)
        f16.unlink()
    return outfile


def log_export(version, folder: Path, quant: str) -> None:
    """The exported files on the version's run (artifacts export/<quant>/), and a tag on the
    version saying where they are."""
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    client.log_artifacts(version.run_id, str(folder), artifact_path=f"export/{quant}")
    uri = f"{mlflow.get_run(version.run_id).info.artifact_uri}/export/{quant}"
    client.set_model_version_tag(version.name, version.version, f"gguf_{quant}", uri)
