"""The class MLflow loads for an OpenSEM adapter (logged as code: see pyfunc.py).

Loads the base model (resolved as training found it) plus the LoRA adapter, and answers
questions with the same prompt format and greedy decoding as evaluation (open book, from the
logged passages, when the adapter was trained with retrieval on).
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd
from mlflow.models import set_model


class AdapterModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from peft import PeftModel
        from transformers import AutoTokenizer

        from opensem.models import load_causal_lm, resolve_base_model
        from opensem.workspace import project_root

        conf = context.model_config or {}
        base_dir = Path(conf.get("base_models_dir") or project_root() / "models" / "base")
        base = resolve_base_model(conf["base_model"], base_dir)
        adapter = context.artifacts["adapter"]
        self.tokenizer = AutoTokenizer.from_pretrained(adapter)
        model = load_causal_lm(base, conf.get("device", "auto"))  # a GPU when the serving machine has one
        self.model = PeftModel.from_pretrained(model, adapter).eval()
        self.system_prompt = conf.get("system_prompt")
        self.max_new_tokens = int(conf.get("max_new_tokens", 96))
        self.batch_size = int(conf.get("batch_size", 8))
        self.answer = conf.get("answer", "free")  # models logged before quoted answers generate freely
        self.quote_sentences = int(conf.get("quote_sentences", 2))
        self.retriever = None
        if "passages" in context.artifacts:
            from opensem.retrieval import Retriever

            self.retriever = Retriever.load(Path(context.artifacts["passages"]))

    # pd.DataFrame: what the logged signature hands over. MLflow infers no schema from this hint
    # (the signature is explicit) and, with a hint present, no longer warns that one is missing.
    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[str]:
        from opensem.generate import answer_questions

        if hasattr(model_input, "columns"):
            column = "question" if "question" in model_input.columns else model_input.columns[0]
            questions = [str(q) for q in model_input[column]]
        elif isinstance(model_input, dict):
            questions = [str(q) for q in (model_input.get("question") or [])]
        else:
            questions = [str(q) for q in model_input]
        max_new = int((params or {}).get("max_new_tokens", self.max_new_tokens))
        return answer_questions(self.model, self.tokenizer, questions, self.system_prompt, max_new, self.batch_size, self.retriever,
                                self.answer, self.quote_sentences)


set_model(AdapterModel())
