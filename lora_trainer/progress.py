"""Progress events and cancellation: how long work talks to whoever watches it.

Long functions (scrape, dedupe, tag, train, grid) take `progress: ProgressFn` and
`cancel: CancelToken`. They know nothing of gradio, tqdm or the WebUI: `jobs.py` forwards the
events to the UI, the CLI prints them as a progress bar, tests collect them in a list.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Union

from .errors import Cancelled

Scalar = Union[int, float, str]


@dataclass(frozen=True)
class ProgressEvent:
    """One update from a running operation."""

    fraction: float | None = None  # 0..1 of the whole operation; None while unknown
    text: str = ""  # one plain line for people, e.g. "tagging 12/40 images"
    eta_s: float | None = None  # seconds left, when the operation knows better than elapsed/fraction
    extra: dict[str, Scalar] = field(default_factory=dict)  # e.g. step, epoch, loss, lr, it_s, mem_gb
    log: str = ""  # a line for the job's log only (warnings such as a skipped file)


ProgressFn = Callable[[ProgressEvent], None]


def no_progress(event: ProgressEvent) -> None:
    """The progress callback of callers that do not care."""


class CancelToken:
    """Set by whoever started the work; checked by the work at safe points."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Call at points where stopping leaves everything consistent."""
        if self._event.is_set():
            raise Cancelled()



def format_duration(seconds: float | None) -> str:
    """`75` -> "1:15", `3725` -> "1:02:05", None -> "?" (ETAs and elapsed times, CLI and tab alike)."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "?"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
