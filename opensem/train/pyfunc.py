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


def log_adapter_model(adapter_dir: Path, base_model: str, base_models_dir: Path, system_prompt: str, max_new_tokens: int, batch_size: int,
                      device: str = "auto", passages: Path | None = None):
    """Log the adapter folder (and the retrieval passages, if any) as a pyfunc model in the
    active run; returns the ModelInfo."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    import opensem

    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "question")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema([ParamSpec("max_new_tokens", "long", max_new_tokens)]),
    )
    with warnings.catch_warnings():  # MLflow nags about input examples and type hints; the signature is explicit
        warnings.simplefilter("ignore", UserWarning)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(MODEL_CODE),
            artifacts={"adapter": str(adapter_dir)} | ({"passages": str(passages)} if passages else {}),
            model_config={
                "base_model": base_model,
                "base_models_dir": str(base_models_dir),
                "system_prompt": system_prompt,
                "max_new_tokens": max_new_tokens,
                "batch_size": batch_size,
                "device": device,
            },
            code_paths=[str(Path(opensem.__file__).parent)],
            signature=signature,
            pip_requirements=["opensem", "torch", "transformers", "peft", "mlflow"],
        )
