"""`opensem serve`: a SEM's champion over HTTP, in the two APIs clients speak.

- OpenAI's chat completions (openai_api.py): any OpenAI client, chat UI or agent framework,
  with the excerpts the answer came from in `sources`:

      curl -s http://127.0.0.1:5001/v1/chat/completions -H 'Content-Type: application/json' \\
           -d '{"model": "opensem-legal", "messages": [{"role": "user", "content": "What is consideration?"}]}'

- MLflow's scoring server (its own app, `mlflow.pyfunc.scoring_server`), as `mlflow models
  serve` answers:

      curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
           -d '{"dataframe_records": [{"question": "What is consideration?"}]}'
      -> {"predictions": ["Consideration is ..."]}

One process: the registered model is loaded once with `mlflow.pyfunc.load_model` and both APIs
answer with it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.workspace import Sem


def model_uri(sem: Sem, cfg: Config, alias: str) -> str:
    from opensem.registry import registered_version

    version = registered_version(sem, cfg, alias)
    return f"models:/{version.name}@{alias}"


def check_port(host: str, port: int) -> None:
    """A port the server can listen on, said in one line before any model loads."""
    import socket

    if not 0 < port < 65536:
        raise OpenSEMError(f"--port {port} is not a TCP port: pick one from 1 to 65535 (default 5001)")
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, port))
    except OSError as e:
        raise OpenSEMError(f"cannot listen on {host}:{port} ({e.strerror or e}): another program holds the port or the "
                           "address is not this machine's; pick another with --port or --host") from None


ENGINES = ("transformers", "llama.cpp", "vllm")


def serve(sem: Sem, cfg: Config, host: str = "127.0.0.1", port: int = 5001, alias: str = "champion",
          engine: str = "transformers", export_dir: Path | None = None) -> int:
    if engine not in ENGINES:
        raise OpenSEMError(f"--engine {engine!r} is not one of {', '.join(ENGINES)}")
    check_port(host, port)
    import uvicorn

    if engine == "transformers":
        uri = model_uri(sem, cfg, alias)
        app = server_app(uri, f"{cfg.registry.model_prefix}{sem.name}", sem.name)
        print(f"serving {uri} on http://{host}:{port}: /v1/chat/completions (OpenAI) and /invocations (MLflow); "
              "Ctrl-C stops", file=sys.stderr, flush=True)
        uvicorn.run(app, host=host, port=port, log_level="warning")
        return 0
    with tempfile.TemporaryDirectory() as tmp:  # vLLM's copy of the registered model lives while it serves
        expert = gguf_expert(sem, cfg, alias, export_dir) if engine == "llama.cpp" else vllm_expert(sem, cfg, alias, Path(tmp))
        print(f"serving {expert.what} ({engine}) on http://{host}:{port}: /v1/chat/completions (OpenAI); Ctrl-C stops",
              file=sys.stderr, flush=True)
        try:
            uvicorn.run(bare_app(expert), host=host, port=port, log_level="warning")
        finally:
            expert.close()
    return 0


def server_app(uri: str, name: str, sem_name: str):
    """MLflow's scoring app for the model at `uri`, with the OpenAI routes added; the model answers
    to its registered name and to the SEM's."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    from opensem.serve.engines import TransformersExpert
    from opensem.serve.openai_api import add_routes

    print(f"loading {uri} ...", file=sys.stderr, flush=True)
    model = mlflow.pyfunc.load_model(uri)
    app = scoring_server.init(model)
    add_routes(app, TransformersExpert(model.unwrap_python_model(), name, {name, sem_name}))
    return app


def bare_app(expert):
    """A FastAPI app with the OpenAI routes and /ping, for an expert another server answers for."""
    from fastapi import FastAPI

    from opensem.serve.openai_api import add_routes

    app = FastAPI()
    app.get("/ping")(lambda: {"status": "ok"})
    add_routes(app, expert)
    return app


def gguf_expert(sem: Sem, cfg: Config, alias: str, export_dir: Path | None):
    """llama.cpp on the alias's GGUF export (or the folder given)."""
    from opensem.export.llama_cpp import llama_python
    from opensem.serve.engines import llama_cpp_expert

    python = llama_python()
    if python is None:
        raise OpenSEMError("--engine llama.cpp needs a built llama-cpp-python: `make setup-llama` "
                           "(or pip install 'llama-cpp-python[server]'), or serve with --engine transformers")
    folder = export_dir or exported_folder(sem, cfg, alias)
    if not (folder / "export.json").is_file():
        raise OpenSEMError(f"{folder} is not an `opensem export` folder (no export.json): export first, "
                           f"`opensem export --sem {sem.name}`")
    name = f"{cfg.registry.model_prefix}{sem.name}"
    return llama_cpp_expert(folder, python, name, {name, sem.name})


def vllm_expert(sem: Sem, cfg: Config, alias: str, work: Path):
    """vLLM (a GPU machine's; `make setup-vllm`) on the registered model: base + LoRA adapter."""
    import shutil

    from opensem.export import download, logged_settings
    from opensem.models import resolve_base_model
    from opensem.registry import registered_version
    from opensem.serve import engines
    from opensem.workspace import project_root

    vllm = os.environ.get("VLLM") or shutil.which("vllm") or str(project_root() / ".venv-vllm" / "bin" / "vllm")
    if not Path(vllm).is_file():
        raise OpenSEMError("--engine vllm needs vLLM, on a CUDA GPU machine: `make setup-vllm` (or set VLLM to its "
                           "executable), or serve with --engine transformers")
    version = registered_version(sem, cfg, alias)
    logged = download(version, work / "logged")
    settings = logged_settings(logged)
    base = str(resolve_base_model(settings["base_model"], sem.base_models_dir))
    return engines.vllm_expert(logged, settings, base, vllm, version.name, {version.name, sem.name})


def exported_folder(sem: Sem, cfg: Config, alias: str) -> Path:
    """The export of the version `alias` names under exports/SEM/ (q8_0 first, then f16, then
    any), or one line saying how to make one."""
    from opensem.registry import registered_version

    version = registered_version(sem, cfg, alias)
    stem = f"{version.name}-v{version.version}-"
    found = {p.name.removeprefix(stem): p for p in (sem.root / "exports" / sem.name).glob(f"{stem}*") if (p / "export.json").is_file()}
    for quant in ("q8_0", "f16", *sorted(found)):
        if quant in found:
            return found[quant]
    raise OpenSEMError(f"{version.name} v{version.version} ({alias}) has no GGUF export yet: "
                       f"`opensem export --sem {sem.name}` first (or --export-dir FOLDER)")
