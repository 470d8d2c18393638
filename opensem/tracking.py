"""The one place that opens MLflow runs (and mirrors them to Weights & Biases when enabled).

Every run gets: experiment <prefix><sem>, tags opensem.sem / opensem.stage /
opensem.config_digest / opensem.base_model, the resolved config as params and as an artifact.
MLflow itself records the git commit. Stages log through the `StageRun` handed to them, so
metrics reach W&B too without each stage knowing about it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.tags import EXPERIMENT_KIND, NOTE, TAG_BASE_MODEL, TAG_CONFIG_DIGEST, TAG_PROCESS, TAG_SEM, TAG_STAGE, TAG_WANDB_RUN
from opensem.workspace import Sem


def _source_commit(root: Path) -> dict[str, str]:
    """The project's own git commit (MLflow looks for one beside the running script, which is
    .venv/bin/opensem, inside a folder git ignores, and records none): {} outside a checkout."""
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return {}
    commit = done.stdout.strip()
    return {"mlflow.source.git.commit": commit} if done.returncode == 0 and len(commit) == 40 else {}


def _this_process() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


def close_dead_runs(sem: Sem) -> list[str]:
    """Mark KILLED the RUNNING runs of this SEM whose process on this machine is gone (kill -9,
    power loss): MLflow never hears of such an end, so without this they stay RUNNING for good.
    Runs of other machines are left alone (their processes cannot be seen from here)."""
    import socket

    import mlflow

    host = socket.gethostname()
    client = mlflow.MlflowClient()
    closed = []
    for run in mlflow.search_runs(experiment_ids=[e.experiment_id for e in client.search_experiments()], output_format="list",
                                  filter_string=f"tags.`{TAG_SEM}` = '{sem.name}' AND attributes.status = 'RUNNING'"):
        owner, _, pid = run.data.tags.get(TAG_PROCESS, "").rpartition(":")
        if owner == host and pid.isdigit() and not _alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def configure(cfg: Config, root: Path) -> str:
    """Point MLflow at the configured store and return its URI.

    Priority: tracking.tracking_uri > $MLFLOW_TRACKING_URI > sqlite mlflow.db in the project
    root (MLflow's own default, but anchored to the project rather than the current folder).
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import logging
    import warnings

    import mlflow

    # MLflow's INFO lines ("Creating initial MLflow database tables...") drown our output.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    # its store logs every database error with a traceback and then raises it: the CLI says the
    # ones a user can fix (a full disk) in one line, and any other keeps its traceback as it rises
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")

    uri = cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    if uri.startswith(("http://", "https://")):
        _check_server(uri)
    else:
        _check_local_store(uri)
    mlflow.set_tracking_uri(uri)
    return uri


# the databases MLflow's SQL store speaks (a driver may follow a '+'), and the hosted stores
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql", "databricks", "databricks-uc", "uc")


def _check_local_store(uri: str) -> None:
    """A store on this machine: a URI (not a bare path), in a folder that exists and can be
    written, said in one line before MLflow makes folders or prints a database traceback."""
    import urllib.parse

    fix = "set MLFLOW_TRACKING_URI to sqlite:///<folder>/mlflow.db, or unset it for the project's mlflow.db"
    scheme = urllib.parse.urlsplit(uri).scheme
    if not scheme:
        raise OpenSEMError(f"MLFLOW_TRACKING_URI={uri} is a path, not a URI; {fix}")
    if scheme == "sqlite":
        folder = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
    elif scheme == "file":  # MLflow makes the folder of a file store: try it here, where a failure is one line
        folder = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path))
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OpenSEMError(f"the tracking store's folder {folder} cannot be made ({exc.strerror}); {fix}") from None
    elif scheme.split("+")[0] in DATABASE_SCHEMES:
        return  # postgresql+psycopg2:// and other databases: MLflow's own errors name them
    else:
        raise OpenSEMError(f"MLFLOW_TRACKING_URI={uri}: MLflow keeps runs in no store of kind {scheme!r} "
                           f"(it takes http(s), sqlite, file, {', '.join(DATABASE_SCHEMES)}); {fix}")
    database = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if database is not None and database.is_file() and database.stat().st_size:
        with open(database, "rb") as f:
            header = f.read(16)
        if header != b"SQLite format 3\x00":  # every SQLite file opens with these 16 bytes
            raise OpenSEMError(f"the tracking database {database} is damaged (it does not start as an SQLite file does): "
                               f"move it away to start a new one (the runs in it are lost), or {fix}")
    if folder is None or str(folder) in ("", "."):
        return
    if not folder.is_dir():
        raise OpenSEMError(f"the tracking store's folder {folder} does not exist ({uri}): create it, or {fix}")
    if not os.access(folder, os.W_OK):
        raise OpenSEMError(f"the tracking store's folder {folder} cannot be written ({uri}); {fix}")
    if database is not None and database.exists() and not os.access(database, os.W_OK):
        raise OpenSEMError(f"the tracking database {database} cannot be written (read-only); make it writable, or {fix}")


def _check_server(uri: str) -> None:
    """Fail in seconds, with the fix, on a tracking server that is down (MLflow's own client
    would retry for minutes, then print a traceback)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    shown = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()  # no user:password
    try:
        with urllib.request.urlopen(f"{shown.rstrip('/')}/health", timeout=5):
            return
    except urllib.error.HTTPError:
        return  # something answered (an auth proxy, an older server): MLflow takes it from here
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise OpenSEMError(
            f"the MLflow tracking server {shown} does not answer ({reason}): start it (`opensem infra up`) "
            f"or point MLFLOW_TRACKING_URI / tracking.tracking_uri at one that runs"
        ) from None


@contextlib.contextmanager
def sqlite_creation_lock(uri: str) -> Iterator[None]:
    """Serialise the first opening of a SQLite store (MLflow's or Optuna's). Two processes that
    open a new database at once (two sweep workers on one machine) both create its tables, and
    one of them fails; a file lock beside the database lets the second find them made."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    path = Path(uri.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=600):
        yield


def experiment_name(cfg: Config, sem: Sem) -> str:
    return f"{cfg.tracking.experiment_prefix}{sem.name}"


def _describe_experiment(experiment_id: str, sem: Sem, cfg: Config) -> None:
    """The experiment's description in the UI: what the SEM is made from and judged by."""
    import mlflow

    judge = "the offline key-fact judge" if cfg.judge.provider == "offline" else f"{cfg.judge.provider}:{cfg.judge.model}"
    book = "open book (answers read retrieved passages)" if cfg.retrieval.enabled else "closed book"
    text = (f"OpenSEM expert **{sem.name}**: documents in `data/{sem.name}/raw`, golden set "
            f"`evals/{sem.name}/golden_set.json`, judged by {judge}, base `{cfg.model.base}`, {book}. "
            f"Runs are named `<sem> · <stage>`; `opensem report --sem {sem.name}` writes the comparison.")
    client = mlflow.MlflowClient()
    tags = client.get_experiment(experiment_id).tags
    if tags.get(NOTE) != text:
        _set_experiment_tag(client, experiment_id, NOTE, text)
    if EXPERIMENT_KIND not in tags:  # a kind a user chose in the UI stays
        _set_experiment_tag(client, experiment_id, EXPERIMENT_KIND, "finetuning")


def _set_experiment_tag(client: Any, experiment_id: str, key: str, value: str) -> None:
    """Set an experiment tag that workers started together may all be setting. MLflow's SQL store
    writes a tag as a read then an insert, so when two processes both read "absent", the later
    insert breaks the key's uniqueness and MLflow raises; the tag a racing worker wrote describes
    the same SEM, so it stays. A failure is raised when the key is still absent afterwards (nobody
    wrote it); an older description that could not be replaced stays, as it is only a label."""
    from mlflow.exceptions import MlflowException

    try:
        client.set_experiment_tag(experiment_id, key, value)
    except MlflowException:
        if key not in client.get_experiment(experiment_id).tags:
            raise


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


@dataclass
class StageRun:
    """Handle a stage logs through; mirrors metrics to W&B when that is on. A follower (a rank
    above 0 under torchrun) has no run: what it logs goes nowhere, and the stage skips its writes."""

    run_id: str
    experiment_id: str
    wandb_run: Any = None
    end_status: str = "FINISHED"  # a stage may end its run as KILLED (e.g. preempted, resumable)
    follower: bool = False
    _step: dict[str, int] = field(default_factory=dict)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None, dataset=None) -> None:
        """Metrics of this run; `model_id` and `dataset` also attach them to the logged model they
        judge and the dataset they were measured on (MLflow 3's logged-model metrics)."""
        if self.follower:
            return
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, run_id=self.run_id, model_id=model_id, dataset=dataset)
        if self.wandb_run is not None:
            self.wandb_run.log(dict(metrics), step=step)

    def log_params(self, params: dict[str, Any]) -> None:
        if self.follower:
            return
        import mlflow

        mlflow.log_params({k: _param_value(v) for k, v in params.items()}, run_id=self.run_id)
        if self.wandb_run is not None:
            self.wandb_run.config.update(params, allow_val_change=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.follower:
            return
        import mlflow

        for key, value in tags.items():
            mlflow.set_tag(key, str(value))

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.follower:
            return
        import mlflow

        mlflow.log_text(text, artifact_file, run_id=self.run_id)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.follower:
            return
        import mlflow

        mlflow.log_artifact(str(path), artifact_path, run_id=self.run_id)


def _param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."


@contextlib.contextmanager
def stage_run(
    sem: Sem,
    stage: str,
    cfg: Config,
    *,
    run_name: str | None = None,
    run_id: str | None = None,
    nested: bool = False,
    tags: dict[str, str] | None = None,
) -> Iterator[StageRun]:
    """Open (or resume, with `run_id`) a tracked run for one stage of one SEM.

    Launched by `mlflow run`, the run MLflow made for the entry point ($MLFLOW_RUN_ID) is used,
    so `mlflow run` shows one run, tagged like any other. Opened while another run is active
    (a pipeline's parent), the new run is its child. Under torchrun only rank 0 opens a run;
    the other ranks get a follower handle that logs nothing.
    """
    from opensem.distributed import world

    if not world().main:
        yield StageRun("", "", follower=True)
        return
    import mlflow

    with sqlite_creation_lock(configure(cfg, sem.root)):
        mlflow.MlflowClient().search_experiments(max_results=1)  # a new store makes its tables here
    close_dead_runs(sem)
    if stage not in ("promote", "report"):  # the stages whose models answer: say how they are asked
        from rich.console import Console

        from opensem.retrieval import describe

        Console(stderr=True).print(f"[dim]{sem.name} · {stage}: {describe(cfg)}[/dim]", highlight=False)
    nested = nested or mlflow.active_run() is not None  # inside `opensem pipeline`: a child of its run
    adopted = os.environ.get("MLFLOW_RUN_ID") if (run_id is None and mlflow.active_run() is None) else None
    if adopted or run_id:
        run = mlflow.start_run(run_id=adopted or run_id, nested=nested)
    else:
        parent = mlflow.active_run() if nested else None  # children live beside their parent
        # the id set_experiment returns, not the active experiment: MLflow 3.17's set_experiment, losing
        # the race to create it (workers started together), returns it without making it active
        experiment_id = parent.info.experiment_id if parent else mlflow.set_experiment(experiment_name(cfg, sem)).experiment_id
        if not parent:
            _describe_experiment(experiment_id, sem, cfg)
        # named by SEM and stage ("legal · baseline"), not MLflow's random two words
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name or f"{sem.name} · {stage}", nested=nested)
    handle = StageRun(run.info.run_id, run.info.experiment_id)
    try:
        mlflow.set_tags(
            {
                TAG_SEM: sem.name,
                TAG_STAGE: stage,
                TAG_CONFIG_DIGEST: cfg.digest(),
                TAG_BASE_MODEL: cfg.model.base,
                TAG_PROCESS: _this_process(),
                **_source_commit(sem.root),
                **(tags or {}),
            }
        )
        resolved = cfg.public_dump()  # URL credentials masked
        if not (adopted or run_id) or "model.base" not in mlflow.get_run(handle.run_id).data.params:
            handle.log_params(flatten(resolved))  # a resumed run keeps the params it has
        handle.log_text(cfg.to_yaml(), "config/resolved_config.yaml")
        if cfg.tracking.wandb.enabled:
            handle.wandb_run = _start_wandb(cfg, sem, stage, run.info.run_name or handle.run_id, resolved)
            mlflow.set_tag(TAG_WANDB_RUN, handle.wandb_run.id)
        yield handle
    except BaseException as exc:
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        _finish_wandb(handle, exit_code=1)
        mlflow.end_run(status=status)
        raise
    else:
        _finish_wandb(handle, exit_code=0)
        mlflow.end_run(status=handle.end_status)


def wandb_mode(cfg: Config) -> str:
    """tracking.wandb.mode, or for auto: $WANDB_MODE when exported (W&B's own switch wins over a
    key that happens to be set), else online with a WANDB_API_KEY and offline files without."""
    mode = cfg.tracking.wandb.mode
    if mode == "auto":
        exported = os.environ.get("WANDB_MODE", "").strip().lower()
        mode = exported if exported in ("online", "offline", "disabled") else "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


WANDB_INIT_TIMEOUT_S = 20  # W&B's own default waits 90 s for an unreachable server before failing


def _check_wandb_key() -> None:
    """A W&B key of the wrong shape is one line before any work (W&B's keys are 40 characters or more)."""
    key = os.environ.get("WANDB_API_KEY", "")
    if key and len(key.strip()) < 40:
        raise OpenSEMError(f"WANDB_API_KEY is {len(key.strip())} characters, not a W&B API key (40 or more): copy it again "
                           "from wandb.ai/authorize, or export WANDB_MODE=offline")


def _start_wandb(cfg: Config, sem: Sem, stage: str, name: str, resolved: dict) -> Any:
    # Keep W&B's files in the project rather than the home folder (its default caches).
    for var, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", ".cache/wandb"), ("WANDB_DATA_DIR", ".cache/wandb-data")):
        path = sem.root / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault(var, str(path))
    os.environ.setdefault("WANDB_SILENT", "true")
    mode = wandb_mode(cfg)
    if mode == "online":
        _check_wandb_key()
    import wandb

    try:
        return _wandb_init(wandb, cfg, sem, stage, name, resolved, mode)
    except Exception as exc:  # wandb raises its own errors, and plain ones for a network it cannot reach
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise OpenSEMError(f"W&B could not start an {mode} run ({type(exc).__name__}: {first}): check WANDB_API_KEY and "
                           "the network, or export WANDB_MODE=offline (or --set tracking.wandb.enabled=false)") from None


def _wandb_init(wandb, cfg: Config, sem: Sem, stage: str, name: str, resolved: dict, mode: str) -> Any:
    return wandb.init(
        project=cfg.tracking.wandb.project,
        entity=cfg.tracking.wandb.entity,
        name=name,
        group=sem.name,
        job_type=stage,
        tags=[sem.name, stage],
        config=resolved,
        mode=mode,
        dir=str(sem.root),
        reinit="create_new",
        settings=wandb.Settings(init_timeout=WANDB_INIT_TIMEOUT_S),
    )


def _finish_wandb(handle: StageRun, exit_code: int) -> None:
    if handle.wandb_run is not None:
        handle.wandb_run.finish(exit_code=exit_code)
        handle.wandb_run = None


def stage_runs(sem: Sem, stage: str, extra: str = "", max_results: int = 100) -> list:
    """Finished runs of one stage of one SEM, newest first, across all experiments (a run made by
    `mlflow run` lives in the experiment it was given). `extra` adds filter clauses."""
    import mlflow

    return mlflow.search_runs(
        experiment_ids=[e.experiment_id for e in mlflow.search_experiments()], output_format="list",
        max_results=max_results, order_by=["attributes.start_time DESC"],
        filter_string=f"tags.`{TAG_SEM}` = '{sem.name}' AND tags.`{TAG_STAGE}` = '{stage}' AND attributes.status = 'FINISHED'{extra}",
    )


def log_jsonl_dataset(path: Path, name: str, context: str, run_id: str | None = None, source: Path | None = None) -> str:
    """Log a JSONL file as an MLflow dataset input (name, digest, schema, profile); returns the
    digest. `source`: where the file will live, when it is read from a staging folder."""
    import mlflow
    import pandas as pd

    frame = pd.read_json(path, lines=True)
    frame = frame.map(lambda v: v if isinstance(v, (str, int, float, bool)) or v is None else _json(v))
    dataset = mlflow.data.from_pandas(frame, source=str(source or path), name=name)
    # MLflow's SQL store adds a dataset by check-then-insert: two sweep workers logging the same
    # dataset at once (seen against a PostgreSQL-backed server) collide on its unique key and the
    # loser gets an error. Sent again, the row exists and is only linked to the run.
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random

    for attempt in Retrying(retry=retry_if_exception(_lost_insert_race), stop=stop_after_attempt(4),
                            wait=wait_random(0.1, 1.0), reraise=True):
        with attempt:
            mlflow.log_input(dataset, context=context)
    return dataset.digest


def _lost_insert_race(exc: BaseException) -> bool:
    return "duplicate key value violates unique constraint" in str(exc) or "UNIQUE constraint failed" in str(exc)


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


def log_golden_dataset(sem: Sem, items: list, digest: str):
    """The golden set as the run's evaluation dataset input (MLflow's Datasets column and the
    logged model's "datasets used"); returns the dataset to attach metrics to."""
    import mlflow
    import pandas as pd

    frame = pd.DataFrame([{"id": i.id, "question": i.question, "answer": i.answer, "key_facts": _json(i.key_facts),
                           "tags": ",".join(i.tags)} for i in items])
    dataset = mlflow.data.from_pandas(frame, source=str(sem.golden_set), name=f"{sem.name}-golden-{digest[:8]}", targets="answer")
    mlflow.log_input(dataset, context="evaluation")
    return dataset


def logged_model_id(model_uri: str | None) -> str | None:
    """The MLflow 3 logged-model id behind a model URI (models:/m-..., a registry alias or
    version, runs:/...), or None where it has none (a model logged before MLflow 3)."""
    if not model_uri:
        return None
    if model_uri.startswith("models:/m-"):
        return model_uri.removeprefix("models:/").split("/")[0]
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.models.get_model_info(model_uri).model_id
    except (MlflowException, OSError, AttributeError):
        return None
