"""Progress that also reaches a log file.

Rich draws live bars and spinners only on a terminal; in CI, under `nohup` or in a SkyPilot log
it prints nothing until a step ends, so a long step looks like a hang. `LogLines` writes, when
the console is not a terminal, one plain line at most every `every_s` seconds: the phase,
done/total, the rate and the time left. Written here: rich has no non-terminal mode that prints
periodic lines, and this is a dozen lines.
"""

from __future__ import annotations

import time


class LogLines:
    def __init__(self, console, phase: str, total: int | None, unit: str = "", every_s: float = 5.0):
        self.console, self.phase, self.total, self.unit, self.every_s = console, phase, total, unit, every_s
        self.enabled = not console.is_terminal
        self.started = self.last = time.monotonic()
        self.done = 0
        if self.enabled:
            self._line(f"{phase}: started" + (f", {total} {unit}".rstrip() if total is not None else ""))

    def advance(self, n: int = 1, note: str = "") -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and now - self.last >= self.every_s:
            self.last = now
            self._line(self._status(now) + (f"; {note}" if note else ""))

    def finish(self, note: str = "") -> None:
        if self.enabled:
            counted = f", {self.done} {self.unit}".rstrip() if self.total is not None else ""
            self._line(f"{self.phase}: done{counted} in {time.monotonic() - self.started:.0f} s" + (f"; {note}" if note else ""))

    def _status(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        shown = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        left = ""
        if self.total is not None and rate > 0:
            left = f", about {(self.total - self.done) / rate:.0f} s left"
        return f"{self.phase}: {shown} {self.unit}, {rate:.1f}/s{left}".replace("  ", " ")

    def _line(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)
