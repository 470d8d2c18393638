"""`opensem serve`: answer questions over HTTP with a SEM's champion.

A thin wrapper around MLflow's own scoring server (`mlflow models serve`), so the request and
response formats are MLflow's documented ones:

    curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"dataframe_records": [{"question": "What is consideration?"}]}'
    -> {"predictions": ["Consideration is ..."]}
"""

from __future__ import annotations

import os
import subprocess
import sys

from opensem.config import Config
from opensem.errors import OpenSEMError
from opensem.workspace import Sem


def model_uri(sem: Sem, cfg: Config, alias: str) -> str:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from opensem.tracking import configure

    configure(cfg, sem.root)
    name = f"{cfg.registry.model_prefix}{sem.name}"
    try:
        MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        raise OpenSEMError(f"{name} has no version with alias {alias!r} yet: run `opensem pipeline --sem {sem.name}` "
                           f"(or evaluate + promote) until one is promoted") from None
    return f"models:/{name}@{alias}"


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
    import mlflow

    # MLflow starts `uvicorn` by name: make this environment's scripts findable even when the
    # virtualenv is not activated (e.g. `.venv/bin/opensem serve`).
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    env = dict(os.environ, MLFLOW_TRACKING_URI=mlflow.get_tracking_uri(), PATH=path)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local", "-h", host, "-p", str(port)]
    print(f"serving {uri} on http://{host}:{port}/invocations (Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        return subprocess.call(command, env=env)
    except KeyboardInterrupt:
        return 0
