"""Open-book answering: the passages of a SEM's documents that best match a question.

With `retrieval.enabled`, every model OpenSEM compares (the baseline, the tuned adapter, the
served model) and every training pair the forge writes get the same prompt: the question, and in
the user turn the `top_k` passages of the SEM's documents that share the most words with it.
A 135M model does not hold 100 KB of facts in its weights (README, "Real corpora"); it can learn
to find the sentence in front of it that answers and to say it. The baseline reads the same
passages, so the gain the gate judges is what the fine-tune adds, not what retrieval adds.

Ranking (`retrieval.method`): `tfidf` is TF-IDF cosine similarity (scikit-learn), the words a
question shares with a passage; `hybrid` fuses that ranking with all-MiniLM-L6-v2's (the bundled
embedding model, opensem/embedding.py), which also finds a passage that says the same thing in
other words ("How big is a ROWID?" -> "a 64-bit signed integer"). Both are deterministic, so every
model reads exactly the same passages, and a few hundred passages need no vector store.

Units (`retrieval.unit`): `chunk` ranks and shows the documents cut into passages of
`passage_tokens`. `sentence` ranks single sentences (each led by its heading path) and shows each
of the top_k with `retrieval.window` sentences of its section either side: the sentence that
matches best stands in the middle of the first excerpt instead of somewhere in 256 tokens, and a
sentence already shown in a better excerpt is not shown again.

Lead sentence (`retrieval.lead_sentence`): under the excerpts, on a line of its own, the sentence
of those excerpts the retriever ranks first (what `copy-top1` answers with). The reader still has
to check it against the excerpts, find where it stands and say what follows it; where the
retriever's pick is wrong, the answer is elsewhere in the excerpts.
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict
from itertools import islice
from pathlib import Path
from typing import Callable

from opensem.errors import OpenSEMError

# the user turn: HEADER, the passages, then QUESTION and the question. In the user turn, not the
# system message: the base model answered 30% of debian-policy's dev key facts so against 18%
# (one run each, the dev set, before any training; the stronger baseline is the one to beat)
HEADER = "Answer from these excerpts of the documents."
QUESTION = "Question: "
LEAD = "Best-matching sentence: "


# reciprocal rank fusion (Cormack, Clarke and Buettcher, 2009): a passage scores the sum over the
# rankings of 1 / (RRF_K + its rank). Ranks, not scores, are fused because TF-IDF and embedding
# cosines are on different scales; 60 is the constant of the paper. Written here: it is two lines
# over the rankings, and no maintained library does only this without a search engine around it.
RRF_K = 60
METHODS = ("tfidf", "hybrid")
VECTORS_KEPT = 50_000  # remembered embeddings of questions and sentences, ~77 MB (see Retriever._encoded)
# how a sentence ends (a closing quote or bracket may follow the stop); a heading line does not
SENTENCE_END = tuple(".!?:;\"')\u201d\u2019")


class Retriever:
    """Ranks `passages` against a question. With sentence units `passages` are the sentences that
    are ranked, `shown[j]` the excerpt the model reads for sentence j, and `spans[j]` its place
    ([section, sentence, first, last]) so that a sentence already shown is not shown twice."""

    def __init__(self, passages: list[str], top_k: int, method: str = "tfidf",
                 shown: list[str] | None = None, spans: list[list[int]] | None = None, lead: bool = False,
                 origins: list[list[str]] | None = None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        if not passages:
            raise OpenSEMError("retrieval has no passages to search: the SEM's raw folder holds no readable documents")
        if method not in METHODS:
            raise OpenSEMError(f"retrieval.method {method!r} is not one of {', '.join(METHODS)}")
        self.passages, self.top_k, self.method = passages, top_k, method
        self.shown, self.spans, self.lead = shown or passages, spans, lead
        self.origins = origins  # [document, heading path] per passage: where an answer's source is
        # sublinear tf: a word repeated in one long passage should not outrank a rarer exact match;
        # bigrams let "primary key" or "build target" count as a phrase
        self._vectorizer = TfidfVectorizer(sublinear_tf=True, stop_words="english", ngram_range=(1, 2))
        self._matrix = self._vectorizer.fit_transform(passages)
        if method == "hybrid":
            from opensem.embedding import Embedder

            self._embedder = Embedder()
            self._embedded = self._embedder.encode(passages)
            self._vectors: OrderedDict[str, object] = OrderedDict()  # see _encoded

    @staticmethod
    def _ranking(scores):
        """Indices, best first (ties: the earlier one), as a numpy array: a big corpus has tens
        of thousands of passages to order for every question."""
        import numpy as np

        return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")

    def _rank(self, question: str, matrix, embedded) -> list[int]:
        """Rows of `matrix` (TF-IDF) and `embedded` (MiniLM; hybrid only), texts in one order,
        ranked against the question by this retriever's method, best first."""
        import numpy as np

        scores = (matrix @ self._vectorizer.transform([question]).T).toarray().ravel()
        ranking = self._ranking(scores)
        if self.method == "hybrid":
            dense = self._ranking((embedded @ self._encoded([question])[0]).numpy())
            fused = np.zeros(len(scores))
            # a text sharing no word with the question is not found by TF-IDF: no rank credit
            for order in (ranking[scores[ranking] > 0], dense):
                fused[order] += 1 / (RRF_K + np.arange(len(order), dtype=np.float64))
            ranking = self._ranking(fused)
        return ranking.tolist()

    def ranked(self, question: str):
        """Every excerpt the retriever can show for the question, best first (a generator: take
        what you need). With sentence units an excerpt whose sentence an earlier excerpt already
        showed is skipped."""
        return (self.shown[j] for j in self._ranked_rows(question))

    def _ranked_rows(self, question: str):
        """The passages' indices in the order `ranked` shows their excerpts."""
        ranking = self._rank(question, self._matrix, getattr(self, "_embedded", None))
        seen = set()
        for j in ranking:
            if self.spans is not None:
                section, sentence, first, last = self.spans[j]
                if (section, sentence) in seen:
                    continue
                seen |= {(section, i) for i in range(first, last + 1)}
            yield j

    def search(self, question: str) -> list[str]:
        """The top_k passages, best first."""
        return list(islice(self.ranked(question), self.top_k))

    def sources(self, question: str) -> list[dict]:
        """What `search` shows for the question, as sources to cite: each excerpt's document (its
        path under the SEM's raw folder; None for passages saved before origins were kept), its
        heading path, and its text without the heading line."""
        cited = []
        for j in islice(self._ranked_rows(question), self.top_k):
            document, heading = self.origins[j] if self.origins else (None, "")
            text = self.shown[j]
            if heading and text.startswith(heading + "\n"):
                text = text[len(heading) + 1:]
            cited.append({"document": document, "heading": heading, "text": text})
        return cited

    def top_sentences(self, question: str, n: int, excerpts: list[str] | None = None) -> list[str]:
        """The n sentences of the excerpts `search` shows for the question (or of `excerpts`) that
        this retriever ranks highest, verbatim and best first: what a reader that only copies
        would answer (the copy references, judge/references.py). Heading lines (no closing
        punctuation) are not sentences to copy; a sentence shown in two excerpts counts once."""
        found = [s for passage in (excerpts or self.search(question)) for s in excerpt_sentences(passage)]
        sentences = list(dict.fromkeys(s for s in found if s[-1] in SENTENCE_END)) or list(dict.fromkeys(found))
        if not sentences:
            return []
        embedded = self._encoded(sentences) if self.method == "hybrid" else None
        ranking = self._rank(question, self._vectorizer.transform(sentences), embedded)
        return [sentences[j] for j in ranking[:n]]

    def _encoded(self, texts: list[str]):
        """MiniLM rows for `texts`. Each distinct text is encoded once, the ones not seen before
        together in one batch, and remembered (the newest VECTORS_KEPT): the forge ranks the
        sentences of the same passages for many questions, and the same question several times.
        A dict of vectors by text, since no embedding library keeps one for its callers."""
        import torch

        missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        if missing:
            self._vectors.update(zip(missing, self._embedder.encode(missing).clone()))
        for text in texts:
            self._vectors.move_to_end(text)
        rows = torch.stack([self._vectors[t] for t in texts])
        while len(self._vectors) > VECTORS_KEPT:
            self._vectors.popitem(last=False)
        return rows

    def shown_text(self, question: str, excerpts: list[str]) -> str:
        """The excerpts as the model reads them: one after another, and with `lead` the top-ranked
        sentence among them on a line of its own below."""
        text = "\n\n".join(excerpts)
        top = self.top_sentences(question, 1, excerpts) if self.lead and excerpts else []
        return f"{text}\n\n{LEAD}{top[0]}" if top else text

    def context(self, question: str) -> str:
        return self.shown_text(question, self.search(question))

    def reading_context(self, question: str, answer: str, rng: random.Random, shuffle: bool,
                        distractor_pool: int) -> tuple[str, str | None]:
        """reading_excerpts as the model reads them (shown_text), and the answering excerpt."""
        excerpts, answering = self.reading_excerpts(question, answer, rng, shuffle, distractor_pool)
        return self.shown_text(question, excerpts), answering

    def reading_excerpts(self, question: str, answer: str, rng: random.Random, shuffle: bool,
                         distractor_pool: int) -> tuple[list[str], str | None]:
        """A training question's excerpts for reading practice (forge.reading), and the one that
        states the answer: the best-ranked excerpt that does (`found`), also when the retriever
        ranks it below top_k, with top_k - 1 other excerpts drawn from the best `distractor_pool`
        that do not, all in a random order when `shuffle`. Where no excerpt states the answer:
        the excerpts as at evaluation (`search`) and None."""
        answering, others = None, []
        for excerpt in self.ranked(question):
            if answering is None and found(answer, excerpt):
                answering = excerpt
            elif len(others) < max(distractor_pool, self.top_k - 1):
                others.append(excerpt)
            if answering is not None and len(others) >= max(distractor_pool, self.top_k - 1):
                break
        if answering is None:
            return self.search(question), None
        want = self.top_k - 1
        distractors = others[:want] if distractor_pool <= want else rng.sample(others, min(want, len(others)))
        excerpts = [answering, *distractors]
        if shuffle:
            rng.shuffle(excerpts)
        return excerpts, answering

    def save(self, path: Path) -> None:
        from opensem.io import atomic_write_json

        extra = {"shown": self.shown, "spans": self.spans} if self.spans is not None else {}
        extra |= {"origins": self.origins} if self.origins is not None else {}
        atomic_write_json(path, {"top_k": self.top_k, "method": self.method, "lead": self.lead, "passages": self.passages, **extra})

    @classmethod
    def load(cls, path: Path) -> Retriever:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        # files before `method` ranked by TF-IDF; files without `spans` hold chunks; without
        # `lead`, no lead sentence; without `origins`, sources name no document
        return cls(data["passages"], int(data["top_k"]), data.get("method", "tfidf"), data.get("shown"), data.get("spans"),
                   bool(data.get("lead", False)), data.get("origins"))


def settings(cfg) -> dict | None:
    """The retrieval settings to record and compare (None: closed book). Chunk units leave out
    `unit` and `window` (which only sentence units read), and `lead_sentence` is left out when
    off, so what was recorded before they existed still compares equal."""
    if not cfg.retrieval.enabled:
        return None
    dumped = cfg.retrieval.model_dump()
    if not dumped["lead_sentence"]:
        del dumped["lead_sentence"]
    return dumped if dumped["unit"] == "sentence" else {k: v for k, v in dumped.items() if k not in ("unit", "window")}


def describe(cfg) -> str:
    """"open book: 2 passages of 256 tokens (hybrid)" or "closed book": how every model is asked,
    said by doctor and at the start of every stage."""
    r = cfg.retrieval
    if not r.enabled:
        return "closed book (retrieval.enabled=false)"
    unit = f"sentence windows of ±{r.window}" if r.unit == "sentence" else f"passages of {r.passage_tokens} tokens"
    return f"open book: {r.top_k} {unit} ({r.method} ranking)"


def recorded(settings_: dict | None) -> dict | None:
    """Settings as recorded by a forge, adapter or baseline; those written before
    `retrieval.method` existed ranked by TF-IDF."""
    return {"method": "tfidf", **settings_} if settings_ else None


def excerpt_sentences(excerpt: str) -> list[str]:
    """An excerpt's sentences in order, line by line (a heading line is one, without closing
    punctuation): what the copy references and reading practice's quoted answers quote from."""
    from opensem.text.reflow import split_sentences

    return [s.strip() for line in excerpt.splitlines() for s in split_sentences(line) if s.strip()]


def quotable_sentences(excerpt: str) -> list[str]:
    """The sentences of an excerpt an answer can quote: those of its lines that end as a sentence
    ends; a heading line ("Contracts > Offer", or "What is a contract? > Kinds") is left out whole,
    a question in it included."""
    from opensem.text.reflow import split_sentences

    lines = [line.strip() for line in excerpt.splitlines() if line.strip()]
    return [s.strip() for line in lines if line[-1] in SENTENCE_END for s in split_sentences(line) if s.strip()]


def found(answer: str, context: str, share: float = 0.8) -> bool:
    """Does the context hold the answer: at least `share` of its content words?"""
    from opensem.text.words import content_words

    wanted = content_words(answer)
    return bool(wanted) and len(wanted & content_words(context)) >= share * len(wanted)


def documents(raw_dir: Path, secrets: str = "allow"):
    """The documents as read, under the forge.secrets policy (text/secrets.py), so the passages
    a model reads hold what the forge's pairs hold: redacted where the forge redacts."""
    from opensem.text import secrets as credentials
    from opensem.text.ingest import ingest

    return credentials.checked(ingest(raw_dir)[0], secrets, raw_dir)


def passages(raw_dir: Path, count_tokens: Callable[[str], int], passage_tokens: int, secrets: str = "allow") -> list[str]:
    """The documents cut into passages of at most passage_tokens, each led by its heading path."""
    return located_passages(raw_dir, count_tokens, passage_tokens, secrets)[0]


def located_passages(raw_dir: Path, count_tokens: Callable[[str], int], passage_tokens: int,
                     secrets: str = "allow") -> tuple[list[str], list[list[str]]]:
    """`passages`, and each one's [document, heading path]."""
    from opensem.text.chunk import chunk_document

    chunks = [c for doc in documents(raw_dir, secrets) for c in chunk_document(doc, count_tokens, passage_tokens, 0)]
    return [f"{c.heading}\n{c.text}" if c.heading else c.text for c in chunks], [[c.source, c.heading] for c in chunks]


def sentence_windows(raw_dir: Path, count_tokens: Callable[[str], int], passage_tokens: int,
                     window: int, secrets: str = "allow") -> tuple[list[str], list[str], list[list[int]], list[list[str]]]:
    """Every sentence of the documents led by its heading path (what is ranked), the excerpt shown
    for it (the sentence with `window` sentences of its section either side, fewer where that
    would pass passage_tokens), its span [section, sentence, first, last], and its [document,
    heading path]."""
    from opensem.text.chunk import sections
    from opensem.text.reflow import split_sentences

    docs = documents(raw_dir, secrets)
    ranked, shown, spans, origins = [], [], [], []

    def led(heading: str, text: str) -> str:
        return f"{heading}\n{text}" if heading else text

    located = ((doc.name, s) for doc in docs for s in sections(doc.text))
    for section, (document, (heading, paragraphs)) in enumerate(located):
        sentences = [x for paragraph in paragraphs for x in split_sentences(paragraph)]
        for i, sentence in enumerate(sentences):
            for w in range(window, -1, -1):  # the widest window that fits
                first, last = max(0, i - w), min(len(sentences) - 1, i + w)
                text = led(heading, " ".join(sentences[first:last + 1]))
                if w == 0 or count_tokens(text) <= passage_tokens:
                    break
            ranked.append(led(heading, sentence))
            shown.append(text)
            spans.append([section, i, first, last])
            origins.append([document, heading])
    return ranked, shown, spans, origins


def for_sem(sem, cfg, tokenizer) -> Retriever | None:
    """The SEM's retriever when retrieval is on (passages measured in the base model's tokens)."""
    r = cfg.retrieval
    if not r.enabled:
        return None
    if not sem.raw_dir.is_dir():
        raise OpenSEMError(f"retrieval.enabled needs the SEM's documents in {sem.raw_dir}; add them, "
                           "or --set retrieval.enabled=false")
    from opensem.text.chunk import token_counter

    count = token_counter(tokenizer)
    if r.unit == "sentence":
        ranked, shown, spans, origins = sentence_windows(sem.raw_dir, count, r.passage_tokens, r.window, cfg.forge.secrets)
        return Retriever(ranked, r.top_k, r.method, shown, spans, r.lead_sentence, origins)
    texts, origins = located_passages(sem.raw_dir, count, r.passage_tokens, cfg.forge.secrets)
    return Retriever(texts, r.top_k, r.method, lead=r.lead_sentence, origins=origins)
