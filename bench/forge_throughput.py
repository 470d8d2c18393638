"""Forge against a local OpenAI-compatible server with a fixed 200 ms latency.

    1. 32 requests in flight: requests/s as a fraction of the limit 32 / 0.2 s = 160/s (target >= 0.9)
    2. the same run again, from the cache: requests sent (target 0) and time as a fraction of run 1

Only the teacher phase is timed (what concurrency and the cache change); the real `openai` SDK
talks HTTP to the server, which runs in its own process as a hosted API would.

Measured on the 2-core CI VM (Nov 2026): a bare aiohttp client reaches 0.94 of the limit on this
harness; forge went from 0.43 to 0.92 with four changes: a server backlog that no longer drops
connections, the SDK's aiohttp transport (httpx alone cost ~6 ms of CPU per request here), the
SDK's generic `post` instead of the typed `create` (whose request transform cost ~4 ms per
call), and the cache's SQLite write moved off the event loop (it stalled every request in flight).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

LATENCY = 0.2
IN_FLIGHT = 32
CHUNKS = 640


def main() -> None:
    import os

    from rich.console import Console
    from rich.table import Table

    from opensem.config import resolve
    from opensem.text.chunk import Chunk
    from opensem.forge.stage import _ask_all
    from opensem.forge.teachers import Budget, make_teacher

    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    chunks = [Chunk(f"doc{i}#0", f"doc{i}", "Bench", f"Fact number {i} is that widget {i} weighs {i} grams.", 12) for i in range(CHUNKS)]
    # The server runs in its own process, as a remote API would: in this one it would share the GIL.
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "llm_server.py"), str(LATENCY)], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = resolve([("bench", {"forge": {"teacher": {
                "provider": "openai", "model": "gpt-4o-mini", "base_url": f"{url}/v1", "max_concurrency": IN_FLIGHT,
            }}})])

            async def run(teacher):
                # One request first, outside the clock: the SDK builds its response validators and
                # opens its connection pool on first use, a one-off cost that is not throughput.
                await teacher.client.complete("warm", "up", {"type": "object"}, "warmup", lambda payload: payload)
                before = teacher.http_requests
                start = time.perf_counter()
                replies = await _ask_all(teacher, chunks, 1, IN_FLIGHT)
                return time.perf_counter() - start, replies, teacher.http_requests - before

            def timed() -> tuple[float, int]:
                teacher = make_teacher(cfg, Path(tmp) / "cache", Budget(None))
                elapsed, replies, sent = asyncio.run(run(teacher))
                teacher.close()
                assert all(r.result for _, r in replies), "some requests failed"
                return elapsed, sent

            first, sent_first = timed()
            second, sent_second = timed()
    finally:
        server.terminate()

    limit = IN_FLIGHT / LATENCY
    rps = CHUNKS / first
    table = Table(title=f"forge throughput: {CHUNKS} chunks, {IN_FLIGHT} in flight, {LATENCY * 1000:.0f} ms latency")
    for col in ("measure", "value", "target"):
        table.add_column(col)
    table.add_row("requests/s (cold)", f"{rps:.1f} of {limit:.0f}", "")
    table.add_row("fraction of the limit", f"{rps / limit:.2f}", ">= 0.90")
    table.add_row("requests sent (cold / cached)", f"{sent_first} / {sent_second}", f"{CHUNKS} / 0")
    table.add_row("cached run time / cold run time", f"{second / first:.3f}", "small")
    Console().print(table)
