"""`opensem infra up|down|status`: a team's shared services on one machine, one command each.

    PostgreSQL (Debian's package; a cluster of our own in <dir>/postgres, 127.0.0.1 only)
      database `mlflow`  <- `mlflow server` (tracking + registry), artifacts proxied into <dir>/artifacts
      database `optuna`  <- every sweep worker's study (sweep.storage)

The database password is made on the first `up`, kept in <dir>/db_password (mode 600) and never
put on a command line, in a URL that is printed, or in MLflow: the server gets it as PGPASSWORD
(libpq reads it), sweep workers as ${OPENSEM_DB_PASSWORD} in sweep.storage, which OpenSEM fills in
only when it opens the study. PostgreSQL refuses to run as root; as root, its programs run as the
`postgres` user that Debian's package creates.

Why by hand rather than docker compose: these machines have Debian's PostgreSQL and no registry
for images, and `initdb` + `pg_ctl` start a cluster in about a second.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from opensem.errors import OpenSEMError

USER = "opensem"
DATABASES = ("mlflow", "optuna")
PASSWORD_ENV = "OPENSEM_DB_PASSWORD"
_RUN_AS = "postgres"  # Debian's PostgreSQL package creates this user


@dataclass(frozen=True)
class Infra:
    """Where one set of services lives and listens."""

    dir: Path
    pg_port: int = 5433
    mlflow_port: int = 5000

    @property
    def pg_data(self) -> Path:
        return self.dir / "postgres"

    @property
    def password_file(self) -> Path:
        return self.dir / "db_password"

    @property
    def mlflow_pid_file(self) -> Path:
        return self.dir / "mlflow.pid"

    @property
    def mlflow_log(self) -> Path:
        return self.dir / "mlflow-server.log"

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    def storage_url(self, database: str = "optuna", password: str | None = f"${{{PASSWORD_ENV}}}") -> str:
        """The SQLAlchemy URL of one database; by default with the password as a ${VARIABLE}, with
        None without one (libpq then reads PGPASSWORD)."""
        user = USER if password is None else f"{USER}:{password}"
        return f"postgresql+psycopg2://{user}@127.0.0.1:{self.pg_port}/{database}"


def pg_bin(program: str) -> str:
    """A PostgreSQL server program: on PATH, or in Debian's versioned folder (not on PATH)."""
    found = shutil.which(program) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), reverse=True)), None)
    if not found:
        raise OpenSEMError(f"PostgreSQL's `{program}` was not found: install it (Debian/Ubuntu: apt-get install postgresql)")
    return found


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if not shutil.which("runuser"):
        raise OpenSEMError("PostgreSQL will not run as root and `runuser` is missing: run `opensem infra` as a normal user")
    return ["runuser", "-u", _RUN_AS, "--", *cmd]


def _run(cmd: list[str], what: str, env: dict | None = None) -> None:
    proc = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise OpenSEMError(f"{what} failed: {detail[0]}")


def _give_to_server_user(path: Path) -> None:
    """As root, the cluster's folder belongs to `postgres`, who must also be able to reach it."""
    if os.geteuid() != 0:
        return
    shutil.chown(path, _RUN_AS, _RUN_AS)
    probe = subprocess.run(["runuser", "-u", _RUN_AS, "--", "test", "-w", str(path)], capture_output=True)
    if probe.returncode != 0:
        raise OpenSEMError(
            f"the `{_RUN_AS}` user (PostgreSQL will not run as root) cannot reach {path}: "
            f"choose an --dir whose parent folders others may enter (chmod o+x), e.g. under /srv or /tmp"
        )


def _password(infra: Infra) -> str:
    if infra.password_file.exists():
        return infra.password_file.read_text().strip()
    password = secrets.token_urlsafe(24)
    tmp = infra.password_file.with_suffix(".tmp")
    tmp.write_text(password + "\n")
    tmp.chmod(0o600)
    tmp.rename(infra.password_file)
    return password


def _pg_running(infra: Infra) -> bool:
    if not (infra.pg_data / "PG_VERSION").exists():
        return False
    return subprocess.run(_as_server_user([pg_bin("pg_ctl"), "status", "-D", str(infra.pg_data)]), capture_output=True).returncode == 0


def _init_cluster(infra: Infra, password: str) -> None:
    """initdb into a temporary folder, renamed when complete: a crash leaves no half cluster."""
    building = infra.pg_data.with_name("postgres.init")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(mode=0o700)
    _give_to_server_user(building)
    pwfile = building / "pwfile"  # initdb reads the superuser's password from a file, not argv
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, _RUN_AS, _RUN_AS)
    data = building / "data"
    _run([pg_bin("initdb"), "-D", str(data), "-U", USER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
          "--encoding=UTF8", "--locale=C"], "initdb")
    pwfile.unlink()
    with open(data / "postgresql.conf", "a") as conf:
        # TCP on loopback only; no Unix socket (its default folder may not exist or be writable)
        conf.write("\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
    # pg_ctl writes postmaster.pid etc. into the data folder, so it is the folder that moves
    data.rename(infra.pg_data)
    shutil.rmtree(building)


def _start_postgres(infra: Infra) -> None:
    log = infra.pg_data / "server.log"
    _run([pg_bin("pg_ctl"), "start", "-w", "-t", "60", "-D", str(infra.pg_data), "-l", str(log),
          "-o", f"-p {infra.pg_port}"], f"starting PostgreSQL on port {infra.pg_port} (see {log})")


def _create_databases(infra: Infra, password: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=infra.pg_port, user=USER, password=password, dbname="postgres")
    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        have = {row[0] for row in cur.fetchall()}
        for name in DATABASES:
            if name not in have:
                cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    # Optuna's tables made once here, so that sweep workers started together never race to make them
    from optuna.storages import RDBStorage

    RDBStorage(infra.storage_url("optuna", password)).engine.dispose()


def _pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
        try:
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
        except ChildProcessError:
            pass
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def _start_mlflow(infra: Infra, password: str, timeout_s: float = 180) -> None:
    """`mlflow server` on the `mlflow` database with proxied artifacts, detached from this process."""
    if _pid(infra.mlflow_pid_file) and _healthy(infra.tracking_uri):
        return
    artifacts = infra.dir / "artifacts"
    artifacts.mkdir(exist_ok=True)
    # job execution: MLflow's background workers for GenAI scorers (about ten processes, 2 GB), unused here
    env = os.environ | {"PGPASSWORD": password, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop(PASSWORD_ENV, None)
    cmd = [sys.executable, "-m", "mlflow", "server",
           "--backend-store-uri", infra.storage_url("mlflow", None),
           "--serve-artifacts", "--artifacts-destination", str(artifacts),
           "--host", "127.0.0.1", "--port", str(infra.mlflow_port), "--workers", "2"]
    with open(infra.mlflow_log, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    infra.mlflow_pid_file.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = infra.mlflow_log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise OpenSEMError(f"mlflow server exited with code {proc.returncode}: {tail[0]} (log: {infra.mlflow_log})")
        if _healthy(infra.tracking_uri):
            return
        time.sleep(0.5)
    raise OpenSEMError(f"mlflow server did not answer on {infra.tracking_uri} within {timeout_s:.0f} s (log: {infra.mlflow_log})")


def up(infra: Infra) -> None:
    """Start (making on the first call) PostgreSQL and the MLflow server; a second call is a no-op."""
    infra.dir.mkdir(parents=True, exist_ok=True)
    password = _password(infra)
    if not (infra.pg_data / "PG_VERSION").exists():
        _init_cluster(infra, password)
    if not _pg_running(infra):
        _start_postgres(infra)
    _create_databases(infra, password)
    _start_mlflow(infra, password)


def down(infra: Infra) -> list[str]:
    """Stop the MLflow server and PostgreSQL (data kept); the names of what was stopped."""
    stopped = []
    pid = _pid(infra.mlflow_pid_file)
    if pid:
        os.killpg(pid, signal.SIGTERM)  # the server's gunicorn/uvicorn workers are in its group
        for _ in range(100):
            if _pid(infra.mlflow_pid_file) is None:
                break
            time.sleep(0.1)
        else:
            os.killpg(pid, signal.SIGKILL)
        stopped.append("mlflow server")
    infra.mlflow_pid_file.unlink(missing_ok=True)
    if _pg_running(infra):
        _run([pg_bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(infra.pg_data)], "stopping PostgreSQL")
        stopped.append("PostgreSQL")
    return stopped


def status(infra: Infra) -> dict[str, bool]:
    return {"PostgreSQL": _pg_running(infra), "mlflow server": bool(_pid(infra.mlflow_pid_file)) and _healthy(infra.tracking_uri)}


def usage(infra: Infra) -> str:
    """What a team member runs to use the services (no secret in it)."""
    return (
        f"export MLFLOW_TRACKING_URI={infra.tracking_uri}\n"
        f"export {PASSWORD_ENV}=\"$(cat {infra.password_file})\"\n"
        f"opensem sweep --sem legal --set 'sweep.storage={infra.storage_url()}'"
    )
