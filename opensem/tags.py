"""The MLflow tag names that tie OpenSEM's runs together, in one place.

Stages find each other through these: evaluate finds its baseline by the comparability tags,
promote finds the evaluation and the model it judged, the report and `bench outcome` read the
decision. Changing a name orphans every run recorded before it, so a name here changes only
with a way to read the old one.
"""

# every run (opensem/tracking.py)
TAG_SEM = "opensem.sem"
TAG_STAGE = "opensem.stage"
TAG_CONFIG_DIGEST = "opensem.config_digest"
TAG_BASE_MODEL = "opensem.base_model"
TAG_PROCESS = "opensem.process"  # host:pid of the process that runs it, to close it if that process dies
TAG_WANDB_RUN = "wandb.run_id"  # the mirrored W&B run
NOTE = "mlflow.note.content"  # what MLflow's UI shows as a run's or an experiment's description
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow's name for what an experiment is: ours fine-tune

# baseline and evaluate runs (opensem/judge/evaluate.py): a baseline and an evaluation compare
# only when the five of COMPARABLE agree
TAG_GOLDEN = "opensem.golden_digest"
TAG_JUDGE = "opensem.judge"
TAG_PROMPT = "opensem.prompt_digest"
TAG_ANSWERED_ON = "opensem.answered_on"
COMPARABLE = (TAG_GOLDEN, TAG_JUDGE, TAG_BASE_MODEL, TAG_PROMPT, TAG_ANSWERED_ON)
TAG_PARTIAL = "opensem.partial"  # "true": --limit answered part of the golden set; never gated
TAG_MODEL = "opensem.model_under_test"
TAG_OPEN_BOOK = "opensem.open_book"  # "true": answered with passages, so the copy references were scored
TAG_UNRELIABLE = "opensem.judge_unreliable"
TAG_UNRELIABLE_REASON = "opensem.judge_unreliable_reason"
TAG_GOLDEN_LINT = "opensem.golden_lint"
TAG_JUDGE_FORMAT = "opensem.judge_response_format"
TAG_BASELINE_RUN = "opensem.baseline_run_id"  # on an evaluation: the baseline it was compared with
TAG_CANDIDATE_URI = "opensem.candidate_model_uri"  # on an evaluation: the logged model promote would register

# train runs (opensem/train/stage.py)
TAG_RUN_NAME = "opensem.run_name"
TAG_MODEL_URI = "opensem.model_uri"
TAG_KEPT_EPOCH = "opensem.kept_epoch"
TAG_STOPPED_EARLY = "opensem.stopped_early"

# promote runs and model versions (opensem/registry.py)
TAG_EVAL_RUN = "opensem.eval_run_id"
TAG_DECISION = "opensem.decision"  # promoted | refused
TAG_DECISION_REASONS = "opensem.decision_reasons"
TAG_MODEL_VERSION = "opensem.model_version"

# sweep trials (opensem/sweep.py)
TAG_STUDY = "opensem.study"
TAG_TRIAL = "opensem.trial"
