"""`opensem` command line. Thin: parse, then call one function of the package.

Only typer and rich are imported at the top, so `opensem --help` is instant; torch,
transformers and mlflow are imported inside the commands that need them.
"""

from __future__ import annotations

import errno
import functools
import inspect
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console

from opensem.errors import Interrupted, OpenSEMError
from opensem.stages import STAGES

app = typer.Typer(
    name="opensem",
    help="OpenSEM: turn a folder of domain documents into a small expert model that beats its base.\n\n"
    "Typical flow for a SEM (a named expert, e.g. legal): forge -> baseline -> train -> evaluate -> promote, "
    "or all of it with `opensem pipeline --sem legal`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

SemOpt = Annotated[str, typer.Option("--sem", "-s", help="SEM name, e.g. legal (see configs/sems/).")]
SetOpt = Annotated[
    Optional[list[str]],
    typer.Option("--set", help="Override a config key, e.g. --set training.learning_rate=1e-4 (repeatable)."),
]
OverridesOpt = Annotated[
    str,
    typer.Option("--overrides", hidden=True, help='Space-separated overrides, as MLproject passes them: "a.b=1 c.d=x".'),
]


# what the operating system says when a file cannot grow, as the first words of the error line
DISK_REFUSED = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
                errno.EFBIG: "the file system refused a file that large"}
# SQLite's own words for a write that did not reach the disk
SQLITE_WRITE_FAILURES = ("disk I/O error", "database or disk is full")


def _chain(exc: BaseException):
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


def unwritable_store(exc: BaseException) -> tuple[str, str] | None:
    """(the tracking store's URI, SQLite's words) when `exc` is SQLite failing to write the store
    (MLflow and SQLAlchemy wrap sqlite3's error twice, and their tracebacks name neither the file
    nor the likely cause); None for anything else."""
    for e in _chain(exc):
        if type(e).__module__ == "sqlite3" and any(words in str(e) for words in SQLITE_WRITE_FAILURES):
            import mlflow

            return mlflow.get_tracking_uri(), str(e)
    return None


def user_errors(fn):
    """Turn an OpenSEMError into one red line and exit code 2 (no traceback); the same for a file
    or folder the machine will not let a stage write (permissions, a file where a folder belongs,
    a full disk, also under the MLflow store); a SIGTERM that stopped work after a checkpoint into exit code 143."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except OpenSEMError as exc:
            err.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except (PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            err.print(f"[bold red]error:[/bold red] cannot write {exc.filename or 'a file'}: {exc.strerror}; make that folder "
                      "yours and writable (or remove what is in the way), then run the same command again", highlight=False,
                      soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in DISK_REFUSED:
                raise
            err.print(f"[bold red]error:[/bold red] {DISK_REFUSED[exc.errno]}{f' writing {exc.filename}' if exc.filename else ''}: "
                      "free some space, then run the same command again (finished stages' outputs are intact)",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Interrupted as exc:
            err.print(f"[yellow]interrupted:[/yellow] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(Interrupted.exit_code) from None
        except Exception as exc:  # last: the kinds above are Exceptions too
            store = unwritable_store(exc)
            if store is None:
                raise
            err.print(f"[bold red]error:[/bold red] the MLflow store {store[0]} could not be written ({store[1]}): "
                      "a full disk, most likely; free some space, then run the same command again (finished stages' "
                      "outputs are intact; a run this command began may stay RUNNING in the UI)",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    # typer's rich help prints a docstring's line breaks as they are; one line per paragraph
    # lets it wrap the text to the terminal instead
    if fn.__doc__:
        wrapper.__doc__ = "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(fn.__doc__).split("\n\n"))
    return wrapper


def _overrides(sets: list[str] | None, overrides: str) -> list[str]:
    from opensem.config import split_overrides

    return split_overrides(overrides) + list(sets or [])


def _stage_command(stage: str):
    @user_errors
    def command(sem: SemOpt, set_: SetOpt = None, overrides: OverridesOpt = "") -> None:
        from opensem.stages import run_stage

        run_stage(stage, sem, _overrides(set_, overrides))

    command.__name__ = stage
    command.__doc__ = STAGES[stage][1][0].upper() + STAGES[stage][1][1:] + "."
    return command


AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="Adapter run name (default: the newest finished one).")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Score only the first N golden items (a quick check; tagged partial).")]

for _stage in STAGES:
    if _stage in ("baseline", "evaluate", "promote", "prefer"):
        continue  # defined below: they take extra options
    # `set_` is exposed as --set; typer takes the option name from the Annotated declaration.
    app.command(_stage)(_stage_command(_stage))


@app.command("baseline")
@user_errors
def baseline(sem: SemOpt, limit: LimitOpt = None, set_: SetOpt = None, overrides: OverridesOpt = "") -> None:
    """Score the base model on the golden set (the control every adapter is compared with); checks the golden set first."""
    from opensem.stages import run_stage

    run_stage("baseline", sem, _overrides(set_, overrides), limit=limit)


@app.command("prefer")
@user_errors
def prefer(sem: SemOpt, adapter: Annotated[Optional[str], typer.Option("--adapter", help="The SFT adapter to continue (default: the newest finished one).")] = None,
           set_: SetOpt = None, overrides: OverridesOpt = "") -> None:
    """Preference training after SFT: TRL's DPO on the forge's chosen/rejected quotes, the SFT adapter frozen as the reference -> models/SEM/adapters/SFT-pref (settings: the `preference` section)."""
    from opensem.stages import run_stage

    run_stage("prefer", sem, _overrides(set_, overrides), adapter=adapter)


@app.command("evaluate")
@user_errors
def evaluate(
    sem: SemOpt,
    adapter: AdapterOpt = None,
    model: Annotated[Optional[str], typer.Option("--model", help="An MLflow model URI instead, e.g. models:/opensem-legal@champion.")] = None,
    limit: LimitOpt = None,
    promptfoo: Annotated[bool, typer.Option("--promptfoo", help="Also write and run Promptfoo regression tests.")] = False,
    set_: SetOpt = None,
    overrides: OverridesOpt = "",
) -> None:
    """Score a fine-tuned adapter on the golden set and print Baseline vs Fine-tuned, key-fact accuracy first."""
    from opensem.stages import run_stage

    run_stage("evaluate", sem, _overrides(set_, overrides), adapter=adapter, model=model, limit=limit, promptfoo=promptfoo)


@app.command("dev")
@user_errors
def dev(
    sem: SemOpt,
    adapter: AdapterOpt = None,
    out: Annotated[Optional[str], typer.Option("--out", help="Also write the result, every answer included, as JSON here.")] = None,
    fit: Annotated[int, typer.Option("--fit", min=0, help="Also ask this many training questions: how many trained answers the adapter reproduces (0: skip).")] = 30,
    set_: SetOpt = None,
    overrides: OverridesOpt = "",
) -> None:
    """Compare the base model and an adapter on the SEM's dev set (choose settings by it).

    The dev set (evals/SEM/dev_set.json) holds the
    questions to choose settings by, so the golden set stays an unseen test. Key-fact accuracy
    with the paired 95% interval, how many of its own training answers the adapter reproduces,
    and the accuracy on the items its training pairs teach against the others; nothing is
    registered."""
    from pathlib import Path

    from opensem.config import load_config
    from opensem.io import atomic_write_json
    from opensem.judge import dev as dev_set
    from opensem.stages import join_launcher
    from opensem.workspace import open_sem

    join_launcher("dev")
    s = open_sem(sem)
    result = dev_set.run(s, load_config(s.root, s.name, _overrides(set_, overrides)), adapter, fit)
    if out and result:  # under torchrun only rank 0 has a result
        atomic_write_json(Path(out), result)


@app.command("promote")
@user_errors
def promote(
    sem: SemOpt,
    run: Annotated[Optional[str], typer.Option("--run", help="The evaluate run to promote (default: the newest).")] = None,
    set_: SetOpt = None,
    overrides: OverridesOpt = "",
) -> None:
    """Register the evaluated adapter; move `champion` only if it beats the baseline and the champion."""
    from opensem.stages import run_stage

    run_stage("promote", sem, _overrides(set_, overrides), run=run)


@app.command("serve")
@user_errors
def serve(
    sem: SemOpt,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 5001,
    alias: Annotated[str, typer.Option("--alias", help="Registry alias to serve.")] = "champion",
    engine: Annotated[str, typer.Option("--engine", help="transformers (the registered model), llama.cpp (its GGUF "
                                                          "export; make setup-llama) or vllm (a CUDA GPU; make setup-vllm).")] = "transformers",
    export_dir: Annotated[Optional[str], typer.Option("--export-dir", help="With --engine llama.cpp: the export folder "
                                                                           "(default: the alias's newest under exports/SEM/).")] = None,
    set_: SetOpt = None,
) -> None:
    """Answer questions over HTTP with the SEM's champion: OpenAI's chat completions and MLflow's /invocations.

    Any OpenAI client works unchanged with base_url http://HOST:PORT/v1 and model opensem-SEM
    (GET /v1/models lists it); each answer carries the excerpts it read in `sources`. MLflow's
    scoring routes (/invocations, /ping) answer from the same loaded model. With --engine
    llama.cpp the GGUF that `opensem export` wrote answers instead, with --engine vllm vLLM on
    the base with the adapter as a LoRA module (OpenAI routes only), the excerpts still
    retrieved in front. See docs/pipeline-registry-serving.md."""
    from pathlib import Path

    from opensem.config import load_config
    from opensem.serve import serve as run_server
    from opensem.workspace import open_sem

    s = open_sem(sem)
    cfg = load_config(s.root, s.name, list(set_ or []))
    raise typer.Exit(run_server(s, cfg, host, port, alias, engine, Path(export_dir) if export_dir else None))


@app.command("export")
@user_errors
def export(
    sem: SemOpt,
    format_: Annotated[str, typer.Option("--format", help="Export format: gguf (llama.cpp, Ollama, LM Studio).")] = "gguf",
    quant: Annotated[str, typer.Option("--quant", help="GGUF precision: q8_0 (default), f16, or q4_k_m (needs a built "
                                                        "llama-cpp-python: make setup-llama).")] = "q8_0",
    alias: Annotated[str, typer.Option("--alias", help="Registry alias to export.")] = "champion",
    out: Annotated[Optional[str], typer.Option("--out", help="Folder to write (default exports/SEM/NAME-vN-QUANT).")] = None,
    set_: SetOpt = None,
) -> None:
    """Export the SEM's champion as a GGUF file with an Ollama Modelfile (llama.cpp's own converter).

    The adapter is merged into its base, converted by llama.cpp's convert_hf_to_gguf.py (from
    the pinned llama-cpp-python source release, downloaded once into models/tools/) and written
    with a Modelfile (chat template, stop token, system prompt, greedy decoding) and, for an
    open-book expert, its passages. The files are logged to MLflow on the version's run. See
    docs/export.md."""
    from pathlib import Path

    from opensem.config import load_config
    from opensem.export import export as run_export
    from opensem.workspace import open_sem

    if format_ != "gguf":
        raise OpenSEMError(f"--format {format_!r} is not one OpenSEM writes: use --format gguf")
    s = open_sem(sem)
    with err.status(f"exporting {s.name}'s {alias} as GGUF ({quant})"):
        done = run_export(s, load_config(s.root, s.name, list(set_ or [])), alias, quant, Path(out) if out else None)
    note = " Open book: the passages are not inside the GGUF (retrieval_passages.json beside it)." if done["open_book"] else ""
    typer.echo(f"exported {done['model']} v{done['version']} ({done['bytes'] / 1e6:.0f} MB, {quant}) -> {done['folder']}{note}")


@app.command("new-sem")
@user_errors
def new_sem(name: Annotated[str, typer.Argument(help="Short name: lowercase letters, digits, - and _.")]) -> None:
    """Scaffold a new SEM: data/NAME/raw/, evals/NAME/golden_set.json, configs/sems/NAME.yaml."""
    from opensem.workspace import new_sem as scaffold

    sem = scaffold(name)
    out.print(f"[green]Created SEM '{sem.name}'[/green]")
    for path in (sem.raw_dir, sem.golden_set, sem.config_file):
        out.print(f"  {path.relative_to(sem.root)}")
    out.print(f"Next: put documents in {sem.raw_dir.relative_to(sem.root)}/, write the golden set, then `opensem forge --sem {name}`.")


golden_app = typer.Typer(help="Golden-set tools: check that key facts tell right answers from wrong ones; measure how many of the asked facts the training pairs state.", no_args_is_help=True)
app.add_typer(golden_app, name="golden")


@golden_app.command("check")
@user_errors
def golden_check(sem: SemOpt, set_: SetOpt = None) -> None:
    """Lint the SEM's golden set: do its key facts tell right answers from wrong ones?

    Errors (exit 2): an item's own answer misses a key fact, a key fact is in its own question,
    or another item's answer states all of an item's facts. Warnings: loose short tokens,
    yes/no-only and single-fact items. Baseline, evaluate and pipeline run it first."""
    from opensem.config import load_config
    from opensem.golden_lint import run as lint
    from opensem.workspace import open_sem

    s = open_sem(sem)
    if not lint(s, load_config(s.root, s.name, list(set_ or []))).ok:
        raise typer.Exit(2)


@golden_app.command("coverage")
@user_errors
def golden_coverage(
    sem: SemOpt,
    list_: Annotated[bool, typer.Option("--list", help="Name the dev set's items whose facts the documents state but no training answer does.")] = False,
    out_file: Annotated[Optional[str], typer.Option("--out", help="Also write every item's coverage as JSON here.")] = None,
) -> None:
    """Do the forge's training answers state the facts the golden and dev sets ask about?

    Per set: items whose key facts one training answer states (the most the pairs teach directly) and
    items whose key facts one sentence of the documents states. No model runs."""
    from pathlib import Path

    from rich.table import Table

    from opensem import coverage
    from opensem.errors import OpenSEMError
    from opensem.io import atomic_write_json
    from opensem.workspace import open_sem

    s = open_sem(sem)
    found = coverage.from_processed(s)
    if not found:
        raise OpenSEMError(f"no golden or dev set to measure in {s.evals_dir}")
    table = Table(title=f"fact coverage: {s.name}", caption="key facts matched as the judge matches them; choose by the dev set")
    for column in ("set", "items", "taught (one training answer)", "in the documents (one sentence)", "in the documents, not taught"):
        table.add_column(column)
    for name, rows in found.items():
        c = coverage.summarise(rows)
        table.add_row(name, str(c["items"]), f"{c['taught']} ({c['taught_share']:.0%})",
                      f"{c['in_documents']} ({c['in_documents_share']:.0%})", str(c["missed"]))
    out.print(table)
    if list_:
        if "dev_set" not in found:
            err.print("[yellow]no dev set: --list names dev items only (the golden set's stay a test nothing is chosen by)[/yellow]")
        for r in found.get("dev_set", []):
            if r.in_documents == 1 and r.taught < 1:
                out.print(f"  {r.id}: {r.question}", highlight=False, markup=False)
    if out_file:
        atomic_write_json(Path(out_file), coverage.as_json(found))


infra_app = typer.Typer(
    help="A team's shared services on this machine: PostgreSQL + `mlflow server` (tracking, registry, "
    "proxied artifacts) and the database sweep workers share.",
    no_args_is_help=True,
)
app.add_typer(infra_app, name="infra")
InfraDirOpt = Annotated[str, typer.Option("--dir", help="Where the database, artifacts, logs and password live.")]
PgPortOpt = Annotated[int, typer.Option("--pg-port", help="PostgreSQL's port on 127.0.0.1.")]
MlflowPortOpt = Annotated[int, typer.Option("--mlflow-port", help="The MLflow server's port on 127.0.0.1.")]


def _infra(dir_: str, pg_port: int, mlflow_port: int):
    from pathlib import Path

    from opensem.infra import Infra

    return Infra(Path(dir_).resolve(), pg_port, mlflow_port)


@infra_app.command("up")
@user_errors
def infra_up(dir_: InfraDirOpt = ".opensem-infra", pg_port: PgPortOpt = 5433, mlflow_port: MlflowPortOpt = 5000) -> None:
    """Start PostgreSQL and the MLflow server (made on the first call), then print what to export."""
    from opensem import infra

    where = _infra(dir_, pg_port, mlflow_port)
    with err.status("starting PostgreSQL and mlflow server (about 20 s)"):
        infra.up(where)
    err.print(f"[green]up[/green]: PostgreSQL on 127.0.0.1:{pg_port}, MLflow on {where.tracking_uri} (data in {where.dir})")
    out.print(infra.usage(where), highlight=False, markup=False, soft_wrap=True)


@infra_app.command("down")
@user_errors
def infra_down(dir_: InfraDirOpt = ".opensem-infra", pg_port: PgPortOpt = 5433, mlflow_port: MlflowPortOpt = 5000) -> None:
    """Stop the MLflow server and PostgreSQL; their data stays in --dir for the next `up`."""
    from opensem import infra

    stopped = infra.down(_infra(dir_, pg_port, mlflow_port))
    out.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@infra_app.command("status")
@user_errors
def infra_status(dir_: InfraDirOpt = ".opensem-infra", pg_port: PgPortOpt = 5433, mlflow_port: MlflowPortOpt = 5000) -> None:
    """Say whether PostgreSQL and the MLflow server are running (exit 1 if either is not)."""
    from opensem import infra

    state = infra.status(_infra(dir_, pg_port, mlflow_port))
    for name, running in state.items():
        out.print(f"{name}: {'running' if running else 'stopped'}")
    if not all(state.values()):
        raise typer.Exit(1)


@app.command("config")
@user_errors
def show_config(sem: SemOpt, set_: SetOpt = None, overrides: OverridesOpt = "") -> None:
    """Print the resolved config of a SEM (defaults -> recipe -> SEM file -> overrides) and its digest."""
    from opensem.config import load_config
    from opensem.workspace import open_sem

    s = open_sem(sem)
    cfg = load_config(s.root, s.name, _overrides(set_, overrides))
    out.print(cfg.to_yaml(), end="", highlight=False, markup=False, soft_wrap=True)
    err.print(f"[dim]config digest {cfg.digest()}[/dim]")


@app.command("recipes")
@user_errors
def list_recipes(sem: Annotated[Optional[str], typer.Option("--sem", "-s", help="Mark the recipe this SEM uses.")] = None) -> None:
    """List the training recipes (configs/recipes/<model>/<size>_<method>_<device>.yaml); pick one with --set recipe=NAME."""
    from rich.table import Table

    from opensem import recipes
    from opensem.config import load_config
    from opensem.workspace import open_sem, project_root

    root = open_sem(sem).root if sem else project_root()
    chosen = load_config(root, sem).recipe
    table = Table(title="opensem recipes", caption="use one: opensem train --sem NAME --set recipe=RECIPE")
    table.add_column("recipe", no_wrap=True)
    table.add_column("what it is")
    for recipe in recipes.available(root):
        table.add_row(recipe.name + (" *" if recipe.name == chosen else ""), recipe.summary)
    out.print(table)
    if chosen:
        err.print(f"[dim]* used by {'SEM ' + sem if sem else 'configs/defaults.yaml'}[/dim]")


@app.command("doctor")
@user_errors
def doctor(
    sem: Annotated[Optional[str], typer.Option("--sem", "-s", help="Use this SEM's config.")] = None, set_: SetOpt = None
) -> None:
    """Describe this machine: CPU/GPU, the training plan, tracking store, W&B mode, credentials (names only)."""
    from rich.table import Table

    from opensem.config import load_config
    from opensem.doctor import collect
    from opensem.workspace import open_sem, project_root

    root = open_sem(sem).root if sem else project_root()
    cfg = load_config(root, sem, list(set_ or []))
    table = Table(title="opensem doctor", show_lines=False)
    for column in ("section", "item", "value"):
        table.add_column(column)
    for row in collect(cfg, root):
        table.add_row(*row)
    out.print(table)


def main(argv: list[str] | None = None) -> None:
    app(args=argv if argv is not None else sys.argv[1:], prog_name="opensem")


if __name__ == "__main__":
    main()
