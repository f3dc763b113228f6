"""Progress on a terminal: the CLI's view of `ProgressEvent`s (the UI has its own)."""

from __future__ import annotations

import sys
import time

from ..progress import ProgressEvent, format_duration


class ConsoleProgress:
    """A callable progress sink that draws `[#####     ]  42%  ETA 1:15  text` lines.

    On a terminal the bar redraws in place; otherwise (CI logs, pipes) it prints a line at most
    every `min_interval` seconds, so logs stay short. Log lines are always printed.
    """

    def __init__(self, stream=None, width: int = 30, min_interval: float = 2.0):
        self.stream = stream or sys.stderr
        self.width = width
        self.min_interval = min_interval
        self.start = time.monotonic()
        self._last_print = 0.0
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, event: ProgressEvent) -> None:
        if event.log:
            self._write(event.log, newline=True)
        if event.fraction is None and not event.text:
            return
        now = time.monotonic()
        done = event.fraction is not None and event.fraction >= 1.0
        if not self._tty and not done and now - self._last_print < self.min_interval:
            return
        self._last_print = now
        self._write(self.render(event, now - self.start), newline=not self._tty or done)

    def render(self, event: ProgressEvent, elapsed: float) -> str:
        if event.fraction is None:
            return event.text
        frac = min(max(event.fraction, 0.0), 1.0)
        eta = event.eta_s
        if eta is None and frac > 0:
            eta = elapsed * (1 - frac) / frac
        filled = int(round(frac * self.width))
        bar = "#" * filled + " " * (self.width - filled)
        return f"[{bar}] {frac * 100:5.1f}%  ETA {format_duration(eta)}  {event.text}".rstrip()

    def _write(self, line: str, newline: bool) -> None:
        if self._tty:
            self.stream.write("\r\x1b[2K" + line + ("\n" if newline else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
