"""One run at a time per project and operation, across processes (the tab, the CLI, the API).

Two trainings of one project would write the same `-01`, `-02`... files and move each other's
epochs to the trash; two bulk caption edits would each keep a trash copy of a file the other is
rewriting. `hold(folder, kind, what)` takes `<folder>/.cache/<kind>.lock` with the operating
system's file lock (flock; a byte-range lock on Windows), which the system itself releases when
the holder's process ends, however it ends: a lock of a killed run is simply free again, with no
stale file to judge. The file's text says who holds it, for the refusal's sentence.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import StudioError

LOCK_DIR = Path(".cache")
_WINDOWS_LOCK_AT = 1 << 30  # Windows: lock one byte far past the text, so the text stays readable


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_AT, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_AT, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def holder_of(path: Path) -> dict:
    """What a lock file says about its holder ({} when it says nothing readable)."""
    try:
        data = json.loads(path.read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def hold(folder: str | os.PathLike, kind: str, what: str) -> Iterator[Path]:
    """Hold `kind`'s lock of `folder` (a project folder) for the block, or raise a StudioError
    naming the run that holds it; `what` is how this run is named to the next one."""
    path = Path(folder) / LOCK_DIR / f"{kind}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if not _try_lock(fd):
            held = holder_of(path)
            since = time.strftime("%H:%M", time.localtime(held["started"])) if isinstance(held.get("started"), float) else "?"
            who = f"{held['what']} is" if isinstance(held.get("what"), str) else "Another run of this kind is"
            raise StudioError(f"{who} already running on this project (process {held.get('pid', '?')}, since {since}).",
                              "Wait for it to finish, or stop it first.")
        try:
            text = json.dumps({"what": what, "pid": os.getpid(), "started": time.time()}).encode()
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, text)
            yield path
        finally:
            os.ftruncate(fd, 0)  # the file stays (removing a locked file races the next taker)
            _unlock(fd)
    finally:
        os.close(fd)
