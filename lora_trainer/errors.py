"""Errors meant for people.

A `StudioError` is a problem the user can fix: its message says what is wrong (naming the file
or value) and `fix` says what to do. The UI and the CLI show both and never a traceback; anything
else that escapes a job is a bug, logged with its traceback and shown as a short apology.
"""

from __future__ import annotations


class StudioError(Exception):
    """A plain-language error: `message` names the file or value, `fix` says what to do."""

    def __init__(self, message: str, fix: str = ""):
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} {self.fix}".strip() if self.fix else self.message


class Cancelled(Exception):
    """Raised inside a job when the user pressed Cancel; the job stops cleanly."""
