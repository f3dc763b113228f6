"""The loss log of a run: one CSV row per optimizer step, under `<root>/_logs/`.

The file is `<project>-<YYYYmmdd-HHMMSS>.csv` (a category project `char/alice` writes
`char_alice-...`), so runs never overwrite each other and a spreadsheet or pandas opens it as is.
Rows are kept in memory and the whole file is rewritten atomically now and then (every
`flush_every_s` seconds, at each epoch end and when the run stops), so a crash leaves the last
complete file, never a torn line. A run of 10,000 steps is about 1 MB: rewriting it is cheap.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

from ..fileio import write_text

COLUMNS = ("step", "epoch", "loss", "avg_loss", "lr_unet", "lr_te", "it_s", "mem_gb", "time_s")


def log_path(logs_dir: str | Path, project_name: str, started: float | None = None) -> Path:
    """`<logs_dir>/<project>-<timestamp>.csv` for a run started at `started` (unix time)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started if started is not None else time.time()))
    return Path(logs_dir) / f"{project_name.replace('/', '_')}-{stamp}.csv"


class LossLog:
    """Collects per-step rows and writes them as CSV (columns `COLUMNS`)."""

    def __init__(self, path: str | Path, flush_every_s: float = 10.0):
        self.path = Path(path)
        self.flush_every_s = flush_every_s
        self.rows: list[dict[str, float | int]] = []
        self._last_flush = time.monotonic()

    def add(self, row: dict[str, float | int]) -> None:
        """One step's values; missing columns are written empty, unknown ones are ignored."""
        self.rows.append(row)
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def text(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: _fmt(v) for k, v in row.items()})
        return buf.getvalue()

    def flush(self) -> None:
        write_text(self.path, self.text())
        self._last_flush = time.monotonic()


def _fmt(value: float | str) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def read_log(path: str | Path) -> list[dict[str, str]]:
    """The rows of a loss CSV (strings, as csv gives them)."""
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
