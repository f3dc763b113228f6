"""The trash: nothing LoRA Studio removes is ever deleted.

Every removal (a duplicate, a non-image file, an original replaced by a shrunk copy, the caption
files a bulk tag edit rewrote) is one *batch* under `<project>/.trash/<batch-id>/`: the files keep
their paths relative to the project folder, and `manifest.json` records where each came from and
why. `restore(batch)` puts a batch back; a file that has since reappeared at the original place
is itself moved to a new batch first, so even an undo loses nothing.

The manifest is written before the first file moves (the intent) and again, marked complete, after
the last: a batch cut short by a kill or a full disk, or one whose manifest is missing or torn, is
still listed, with a warning, from the files it holds, and restores them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import StudioError
from .fileio import write_text

TRASH_DIR = ".trash"
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class TrashBatch:
    batch_id: str  # folder name under .trash, sortable by time
    reason: str  # shown to the user: "duplicates", "tag edit: merge", ...
    created: float  # unix time
    files: tuple[str, ...]  # paths relative to the project folder, as they were before removal
    kept_original: bool  # True for copies (the originals stayed in place), False for moves
    new_files: tuple[str, ...] = ()  # files that did not exist before the edit: restoring removes them (to a new batch)
    complete: bool = True  # False: cut short, or its manifest is missing or torn (files = what the batch holds)

    def warning(self) -> str:
        if self.complete:
            return ""
        return ("This batch was cut short (or its record is damaged): it lists the files it holds, and restoring "
                "puts those back.")


def _new_batch_dir(project_dir: Path) -> Path:
    base = project_dir / TRASH_DIR
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        d = base / f"{stamp}-{n:03d}"
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise StudioError(f"Could not create a trash folder under {base}.", "Check that the folder is writable.")


def _relative(project_dir: Path, path: Path) -> Path:
    path = Path(os.path.abspath(path))
    try:
        return path.relative_to(os.path.abspath(project_dir))
    except ValueError:
        raise StudioError(
            f"{path} is not inside the project folder {project_dir}.",
            "Only files of the project can be moved to its trash.",
        ) from None


def _write_manifest(batch_dir: Path, batch: TrashBatch) -> None:
    write_text(batch_dir / MANIFEST, json.dumps(asdict(batch), indent=1))


def _stash(project_dir: Path, paths: Iterable[str | os.PathLike], reason: str, copy: bool) -> TrashBatch | None:
    project_dir = Path(project_dir)
    rels, absent = [], []
    for p in paths:
        p = Path(p)
        if not p.is_absolute():
            p = project_dir / p
        (rels if p.exists() else absent).append(_relative(project_dir, p))
    new_files = tuple(r.as_posix() for r in absent) if copy else ()  # a move of a missing file is a no-op
    if not rels and not new_files:
        return None
    batch_dir = _new_batch_dir(project_dir)
    files = tuple(r.as_posix() for r in rels)
    intent = TrashBatch(batch_dir.name, reason, time.time(), files, copy, new_files, complete=False)
    _write_manifest(batch_dir, intent)  # before anything moves: a kill from here on leaves a listed batch
    for rel in rels:
        dest = batch_dir / "files" / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copy2(project_dir / rel, dest)
        else:
            shutil.move(str(project_dir / rel), str(dest))
    batch = dataclasses.replace(intent, complete=True)
    _write_manifest(batch_dir, batch)
    return batch


def move_to_trash(project_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], reason: str) -> TrashBatch | None:
    """Move files (absolute, or relative to the project) into one new trash batch; None if none existed."""
    return _stash(Path(project_dir), paths, reason, copy=False)


def keep_copies(project_dir: str | os.PathLike, paths: Iterable[str | os.PathLike], reason: str) -> TrashBatch | None:
    """Copy files into one new trash batch before they are rewritten in place (the undo of bulk edits).

    Paths that do not exist yet are recorded as about to be created, so restoring the batch moves
    the files written there out of the way (into a new batch) and leaves the place empty, as before.
    """
    return _stash(Path(project_dir), paths, reason, copy=True)


def _held_files(batch_dir: Path) -> tuple[str, ...]:
    root = batch_dir / "files"
    return tuple(sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()))


def _read_batch(batch_dir: Path) -> TrashBatch | None:
    """A batch as its manifest records it; cut short or unreadable: as far as known, with the files it
    holds; None for a folder that holds nothing (made, then killed before the first move)."""
    try:
        data = json.loads((batch_dir / MANIFEST).read_text("utf-8"))
        data["files"] = tuple(data["files"])
        data["new_files"] = tuple(data.get("new_files", ()))
        batch = TrashBatch(**data)
    except (OSError, ValueError, TypeError, KeyError):
        batch = None
    if batch is not None and batch.complete:
        return batch
    held = _held_files(batch_dir)
    if batch is not None:  # the intent was written: the files it names that did move
        return dataclasses.replace(batch, files=tuple(f for f in batch.files if f in held))
    if not held:
        return None
    try:
        created = batch_dir.stat().st_mtime
    except OSError:
        created = 0.0
    return TrashBatch(batch_dir.name, "unknown (the batch's record is missing or damaged)", created, held, False,
                      complete=False)


def list_batches(project_dir: str | os.PathLike) -> list[TrashBatch]:
    """All batches of a project, newest first, those cut short or with a damaged manifest too."""
    base = Path(project_dir) / TRASH_DIR
    batches = []
    if base.is_dir():
        for d in base.iterdir():
            if d.is_dir() and not d.is_symlink():
                batch = _read_batch(d)
                if batch is not None:
                    batches.append(batch)
    return sorted(batches, key=lambda b: b.batch_id, reverse=True)


def restore(project_dir: str | os.PathLike, batch_id: str) -> TrashBatch | None:
    """Put a batch's files back where they were.

    Files now standing at those places are first moved to a new batch (returned), so a restore can
    itself be undone. The restored batch folder is removed once it is empty.
    """
    project_dir = Path(project_dir)
    batch_dir = project_dir / TRASH_DIR / batch_id
    batch = next((b for b in list_batches(project_dir) if b.batch_id == batch_id), None)
    if batch is None:
        raise StudioError(f"There is no trash batch {batch_id!r} in {project_dir / TRASH_DIR}.")
    displaced = move_to_trash(project_dir, [project_dir / f for f in batch.files + batch.new_files], f"replaced by restoring {batch_id}")
    for rel in batch.files:
        src = batch_dir / "files" / rel
        if src.exists():
            (project_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(src), str(project_dir / rel))
    if not _held_files(batch_dir):  # only the manifest and empty folders are left
        shutil.rmtree(batch_dir)
    return displaced
