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
# optimizer state twice the adapter's size), the run's resume state or the loss plot.
LEFT_OUT = {"checkpoints", "opensem_run.json", "loss_curve.png", "retrieval_passages.json"}


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


def pinned_requirements() -> list[str]:
    """The package's own dependencies pinned to the versions installed here, the ones it was
    trained with (a CUDA or CPU build's local label dropped: indexes serve the plain version).
    OpenSEM itself travels as code with the model (code_paths), not as a requirement."""
    import re
    from importlib.metadata import PackageNotFoundError, requires, version

    pinned = []
    for requirement in requires("opensem") or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0]
        try:
            pinned.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pinned


def log_adapter_model(adapter_dir: Path, base_model: str, system_prompt: str, max_new_tokens: int, batch_size: int,
                      device: str = "auto", passages: Path | None = None, answer: str = "free", quote_sentences: int = 2):
    """Log the adapter (and the retrieval passages, if any) as a pyfunc model in the active run;
    returns the ModelInfo."""
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
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow nags about type hints; the signature is explicit
        adapter = portable_adapter(adapter_dir, base_model, Path(tmp) / "adapter")
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
            pip_requirements=pinned_requirements(),
        )
