"""Atomic file writes: a crash mid-save leaves the previous file intact.

Every file LoRA Studio writes goes to a temporary file in the same folder (so the rename stays on
one filesystem), is flushed to disk, and then replaces the target with `os.replace`, which is
atomic on POSIX and Windows. The new file gets the permissions the umask gives (a file it replaces
keeps its own), not the owner-only ones of a temp file. A temp file is named
`.<target>.<pid>.<random>.tmp`, so one left by a killed process is known as such and removed by
`clean_leftovers` when the same operation starts again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import StudioError

_LEFTOVER = re.compile(r"^\..+\.(\d+)\.[^.]+(\.tmp|\.part)$")  # temp_beside's names: atomic writes, downloads


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


UMASK = _umask()  # read once, at import (single-threaded), not during writes in threads


def temp_beside(target: Path, suffix: str = ".tmp") -> Path:
    """A new, empty temp file beside `target`, named so `clean_leftovers` knows its writer (the
    target's name shortened, so a 255-byte name still leaves room for the rest)."""
    short = target.name.encode("utf-8")[:120].decode("utf-8", "ignore")
    fd, tmp = tempfile.mkstemp(prefix=f".{short}.{os.getpid()}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    return Path(tmp)


def _final_mode(target: Path) -> int:
    try:
        return stat.S_IMODE(target.stat().st_mode)  # a replaced file keeps its permissions
    except OSError:
        return 0o666 & ~UMASK


def publish(tmp: Path, target: Path) -> None:
    """Make `tmp` durable, give it the target's permissions, and rename it over `target`."""
    with open(tmp, "rb+") as f:  # make the bytes durable before the rename publishes them
        os.fsync(f.fileno())
    os.chmod(tmp, _final_mode(target))
    os.replace(tmp, target)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (when in doubt: yes, so its file stays)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)  # POSIX: signal 0 only asks
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's live process
    return True


def _alive_windows(pid: int) -> bool:
    # Not os.kill: on Windows it terminates the process whatever the signal number.
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.GetLastError() == 5  # ERROR_ACCESS_DENIED: it exists, someone else's
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def clean_leftovers(*folders: str | os.PathLike) -> list[Path]:
    """Remove the temp files that a killed write left in `folders` (not recursive): only files of
    our own naming whose process is gone. Returns what was removed."""
    removed = []
    for folder in folders:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            m = _LEFTOVER.match(entry.name)
            if m and entry.is_file(follow_symlinks=False) and not _alive(int(m.group(1))):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target`, on error it vanishes.

    For writers that want a path rather than a file object (safetensors' `save_file`, PIL's `save`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = temp_beside(target)
    try:
        yield tmp_path
        publish(tmp_path, target)
    except (OSError, RuntimeError) as e:
        if no_room(e, target.parent):
            raise StudioError(f"There is no room on the disk to write {target}.",
                              f"Free some space on the disk that holds {target.parent}, then try again; "
                              "the file that was there is unchanged.") from None
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def no_room(e: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of room: a full disk or quota, the file size limit, or a writer
    (torch.save) that reports it as a RuntimeError while the disk is (nearly) full."""
    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)
    text = str(e)
    if "inline_container" in text or "file write failed" in text:  # torch.save's writer: an I/O failure
        return True
    try:
        return "write" in text.lower() and shutil.disk_usage(folder).free < 64 << 20
    except OSError:
        return False


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Atomically replace `target` with `data`."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Atomically replace `target` with `text` (UTF-8, newlines as given)."""
    write_bytes(target, text.encode("utf-8"))
