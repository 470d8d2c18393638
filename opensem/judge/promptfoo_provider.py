"""Promptfoo Python provider: answers a golden question with the OpenSEM model under test.

Referenced from evals/<sem>/promptfooconfig.yaml (written by `opensem evaluate --promptfoo`).
Answers are cached on disk per model and question, so promptfoo's per-test calls load the model
only on a cache miss; `opensem evaluate --promptfoo` fills the cache with the answers its own
evaluation just generated (same model, same prompt, same greedy decoding).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_loaded: dict = {}


def cache_key(model_id: str, question: str, max_new_tokens: int, answer: str = "free") -> str:
    """Free answers keep the key they had before quoted ones (generation.answer) existed."""
    mode = "" if answer == "free" else f"\0{answer}"
    return hashlib.sha256(f"{model_id}\0{question}\0{max_new_tokens}{mode}".encode()).hexdigest()


def answer_cache(project: str):
    import diskcache

    return diskcache.Cache(str(Path(project) / ".cache" / "promptfoo-answers"))


def _answer(conf: dict, question: str) -> str:
    from opensem.config import load_config
    from opensem.generate import answer_questions
    from opensem.workspace import open_sem

    key = (conf["sem"], conf.get("adapter"), conf.get("model_uri"))
    if key not in _loaded:
        sem = open_sem(conf["sem"], Path(conf["project"]))
        cfg = load_config(sem.root, sem.name)
        if conf.get("model_uri"):
            import mlflow

            _loaded[key] = ("pyfunc", mlflow.pyfunc.load_model(conf["model_uri"]), cfg)
        else:
            from peft import PeftModel

            from opensem.models import load_model_and_tokenizer, resolve_base_model
            from opensem.retrieval import for_sem

            model, tok = load_model_and_tokenizer(resolve_base_model(cfg.model.base, sem.base_models_dir))
            if conf.get("adapter"):
                model = PeftModel.from_pretrained(model, str(sem.adapters_dir / conf["adapter"]))
            _loaded[key] = ("hf", (model, tok, for_sem(sem, cfg, tok)), cfg)
    kind, model, cfg = _loaded[key]
    if kind == "pyfunc":
        import pandas as pd

        return model.predict(pd.DataFrame({"question": [question]}), params={"max_new_tokens": int(conf["max_new_tokens"])})[0]
    return answer_questions(model[0], model[1], [question], cfg.model.system_prompt, int(conf["max_new_tokens"]), 1, model[2],
                            conf.get("answer", "free"), int(conf.get("quote_sentences", 2)))[0]


def call_api(prompt: str, options: dict, context: dict) -> dict:
    conf = options.get("config", {})
    model_id = conf.get("model_uri") or f"adapter:{conf.get('adapter') or 'base'}"
    cache = answer_cache(conf["project"])
    key = cache_key(model_id, prompt, int(conf["max_new_tokens"]), conf.get("answer", "free"))
    answer = cache.get(key)
    if answer is None:
        answer = _answer(conf, prompt)
        cache.set(key, answer)
    return {"output": answer}
