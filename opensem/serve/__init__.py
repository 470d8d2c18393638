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

import sys

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


def serve(sem: Sem, cfg: Config, host: str = "127.0.0.1", port: int = 5001, alias: str = "champion") -> int:
    check_port(host, port)
    uri = model_uri(sem, cfg, alias)
    app = server_app(uri, f"{cfg.registry.model_prefix}{sem.name}", sem.name)
    import uvicorn

    print(f"serving {uri} on http://{host}:{port}: /v1/chat/completions (OpenAI) and /invocations (MLflow); "
          "Ctrl-C stops", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


def server_app(uri: str, name: str, sem_name: str):
    """MLflow's scoring app for the model at `uri`, with the OpenAI routes added; the model answers
    to its registered name and to the SEM's."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    from opensem.serve.openai_api import Expert, add_routes

    print(f"loading {uri} ...", file=sys.stderr, flush=True)
    model = mlflow.pyfunc.load_model(uri)
    app = scoring_server.init(model)
    add_routes(app, Expert(model.unwrap_python_model(), name, {name, sem_name}))
    return app
