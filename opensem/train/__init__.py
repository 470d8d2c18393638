"""Training Floor: LoRA / QLoRA from YAML.

data.py (check the forge output) -> hf_backend.py (transformers + PEFT + TRL) or
unsloth_backend.py (CUDA only) -> callbacks.py (metrics, SIGTERM) -> stage.py (run names,
resume, outputs) -> pyfunc.py (the adapter as an MLflow model). `run` is the stage entry point.
"""

from opensem.train.stage import run

__all__ = ["run"]
