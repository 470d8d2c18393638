"""`opensem serve` in its own process for a test: started on a free port, waited for until its
OpenAI routes answer, stopped with its process group (llama.cpp's or vLLM's server included)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def opensem_serve(sem_root, sem: str, *args: str, env: dict | None = None, timeout: float = 120):
    """Yields (an openai client for the server, its port)."""
    import openai

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "opensem", "serve", "--sem", sem, "--port", str(port), *args],
                              env=dict(os.environ, OPENSEM_HOME=str(sem_root), **(env or {})),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=timeout)
        deadline = time.time() + 180
        while True:
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                assert server.poll() is None and time.time() < deadline, server.stderr.read()[-2000:]
                time.sleep(0.5)
        yield client, port
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


BEASTS = ("# Zorblats\n\nA Zorblat is teal. Zorblats nest in the roofs of old barns.\n\n"
          "# Quimbles\n\nA Quimble has seven legs. It walks sideways.\n")


def beasts_sem(name: str, answer: str = "A Zorblat is teal."):
    """A new SEM whose one document is BEASTS and whose one training pair asks a Zorblat's colour:
    enough for an open-book adapter to train in seconds and answer with a source."""
    import json

    from opensem.workspace import new_sem

    sem = new_sem(name)
    sem.processed_dir.mkdir(parents=True)
    sem.raw_dir.mkdir(parents=True, exist_ok=True)
    (sem.raw_dir / "beasts.md").write_text(BEASTS)
    row = {"messages": [{"role": "user", "content": "What colour is a Zorblat?"}, {"role": "assistant", "content": answer}]}
    (sem.processed_dir / "train.jsonl").write_text(json.dumps(row) + "\n")
    return sem
