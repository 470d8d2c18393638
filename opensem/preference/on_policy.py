"""On-policy rejections: the mistakes the SFT adapter really makes, as rejected answers.

The SFT adapter answers training questions exactly as they were asked in training (their
excerpts included), greedily; where its answer does not state the trained answer (`found`: 80%
of its content words), the row {prompt, chosen: the trained answer, rejected: its own answer}
joins the forge's preference rows. Asked only of training questions: nothing held out is seen.
"""

from __future__ import annotations

import random

from opensem.config import Config
from opensem.workspace import Sem


def on_policy_rows(sem: Sem, cfg: Config, model, tokenizer, n: int, seed: int = 0) -> list[dict]:
    from opensem.generate import answer_chats
    from opensem.io import read_jsonl
    from opensem.retrieval import found

    rows = [row["messages"] for row in read_jsonl(sem.processed_dir / "train.jsonl")]
    asked = random.Random(seed).sample(rows, min(n, len(rows)))
    prompts, trained = [r[:-1] for r in asked], [r[-1]["content"] for r in asked]
    answers = answer_chats(model, tokenizer, prompts, cfg.generation.max_new_tokens, cfg.generation.batch_size)
    model.train()
    return [{"prompt": prompt, "chosen": [{"role": "assistant", "content": want}], "rejected": [{"role": "assistant", "content": got}]}
            for prompt, want, got in zip(prompts, trained, answers) if got.strip() and not found(want, got)]
