"""The tag editor: bulk and per-image edits of a dataset folder's caption files, each undoable.

Every image (`.png .jpg .jpeg .webp .bmp`, in the dataset folder or any sub-folder) has its
caption in `<stem>.txt` beside it; an image without one has an empty caption. An edit applies one
pure operation from `tags.py` to the chosen captions and rewrites only the files whose tags
changed, atomically. Before writing, the previous versions are copied into one trash batch whose
reason starts with "tag edit: ", so `undo` puts the dataset back byte for byte, newest edit first.

File conventions, kept so an edit changes nothing but the tags:
- Text is UTF-8. A file that is not UTF-8 stops the edit with an error naming it (rather than
  guessing an encoding and writing back something different). A UTF-8 byte-order mark is kept.
- The trailing line break is kept as it was: `\\n`, `\\r\\n` or none. Files the editor creates
  get none, like the files the WD taggers and the Dataset Maker write.
- A file whose tag list does not change is not touched, even if its spacing is unusual.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import trash
from ..errors import StudioError
from ..fileio import clean_leftovers, write_text
from ..locks import hold
from . import tags as T
from .images import IMAGE_EXTS

if TYPE_CHECKING:
    import pandas as pd

CAPTION_EXTENSION = ".txt"
REASON_PREFIX = "tag edit: "  # marks the trash batches `undo` and `history` work on
DATASET_DIR = "dataset"  # the project layout's image folder (see project.py)
_BOM = "\ufeff"

PathArg = str | os.PathLike
TagOp = Callable[[list[str]], list[str]]
Selection = Iterable[PathArg] | None  # images (paths, or names relative to the dataset folder); None = all


# ----------------------------------------------------------------------------------------------
# Reading captions


@dataclass(frozen=True)
class Caption:
    """One image's caption as found on disk."""

    image: Path  # the image file
    path: Path  # its caption file, `<stem>.txt` beside it (may not exist)
    exists: bool  # False for an image without a caption file (an empty caption)
    body: str  # the caption text without BOM and trailing line break
    ending: str  # the trailing line break the file had: "", "\n" or "\r\n"
    bom: bool  # the file started with a UTF-8 byte-order mark

    @property
    def tags(self) -> list[str]:
        """The caption's tags, in order."""
        return T.parse_tags(self.body)

    def text_for(self, body: str) -> str:
        """The full file text for a new body, in this file's conventions."""
        return (_BOM if self.bom else "") + body + self.ending


def _dataset_dir(project_dir: Path, dataset_dir: str | os.PathLike | None) -> Path:
    return Path(dataset_dir) if dataset_dir is not None else Path(project_dir) / DATASET_DIR


def find_images(dataset_dir: str | os.PathLike) -> list[Path]:
    """All images under the dataset folder (sub-folders included, hidden ones skipped), sorted."""
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise StudioError(f"The dataset folder {dataset_dir} does not exist.", "Import some images first.")
    images = []
    for root, dirs, files in os.walk(dataset_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        images += [Path(root) / f for f in files if f.lower().endswith(IMAGE_EXTS) and not f.startswith(".")]
    return sorted(images, key=lambda p: p.relative_to(dataset_dir).as_posix())


def read_caption_file(image: str | os.PathLike) -> Caption:
    """Read the caption beside one image (an empty caption if there is no file)."""
    image = Path(image)
    path = image.with_suffix(CAPTION_EXTENSION)
    if not path.is_file():
        return Caption(image, path, False, "", "", False)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StudioError(
            f"The caption file {path} is not UTF-8 text (byte {e.start} cannot be read).",
            "Open it in a text editor and save it as UTF-8, then try again.",
        ) from None
    bom = text.startswith(_BOM)
    text = text[1:] if bom else text
    ending = "\r\n" if text.endswith("\r\n") else "\n" if text.endswith("\n") else ""
    return Caption(image, path, True, text[: len(text) - len(ending)], ending, bom)


def load_captions(dataset_dir: str | os.PathLike) -> list[Caption]:
    """Every image's caption, one per caption file (`a.png` and `a.jpg` share `a.txt`), sorted by image."""
    seen: set[Path] = set()
    out = []
    for image in find_images(dataset_dir):
        cap = read_caption_file(image)
        if cap.path not in seen:
            seen.add(cap.path)
            out.append(cap)
    return out


def _select(captions: list[Caption], dataset_dir: Path, selection: Selection) -> list[Caption]:
    """The captions of the chosen images (paths, or names relative to the dataset folder)."""
    if selection is None:
        return captions
    by_key = {}
    for c in captions:
        for key in (c.image, c.path):
            by_key[os.path.normcase(os.path.abspath(key))] = c
    chosen: dict[Path, Caption] = {}
    for item in selection:
        p = Path(item)
        key = os.path.normcase(os.path.abspath(p if p.is_absolute() else dataset_dir / p))
        if key not in by_key:
            raise StudioError(
                f"{item} is not an image of the dataset {dataset_dir}.", "Pick images from the dataset list."
            )
        chosen[by_key[key].path] = by_key[key]
    return [c for c in captions if c.path in chosen]


# ----------------------------------------------------------------------------------------------
# Writing with undo


@dataclass(frozen=True)
class EditResult:
    """What one edit did."""

    changed: tuple[Path, ...]  # caption files written
    total: int  # captions the edit looked at
    batch_id: str | None  # trash batch holding the previous versions (None when nothing changed)
    reason: str  # the batch's reason, e.g. "tag edit: merge b, c into a"

    @property
    def message(self) -> str:
        """One plain sentence for the UI and the CLI."""
        what = self.reason[len(REASON_PREFIX) :]
        what = what[:1].upper() + what[1:]
        if not self.changed:
            return f"{what}: no caption file changed (of {self.total})."
        files = "caption file" if self.total == 1 else "caption files"
        return f"{what}: {len(self.changed)} of {self.total} {files} changed; undo restores them."


def rewrite_captions(project_dir: str | os.PathLike, new_text: dict[Path, str], reason: str) -> str | None:
    """Write caption files, keeping the previous versions as ONE trash batch first (files that did
    not exist too, so the undo removes them again); the batch id, None when nothing was to write.
    One bulk write per project at a time (locks.hold); temp files a killed write left are removed."""
    if not new_text:
        return None
    with hold(project_dir, "captions", "A caption edit"):
        clean_leftovers(*{p.parent for p in new_text})
        batch_id = trash.keep_copies(project_dir, list(new_text), reason).batch_id
        for path, text in new_text.items():
            write_text(path, text)
    return batch_id


def _write_all(project_dir: Path, new_text: dict[Path, str], total: int, reason: str) -> EditResult:
    return EditResult(tuple(new_text), total, rewrite_captions(project_dir, new_text, reason), reason)


def apply(
    project_dir: str | os.PathLike,
    op: TagOp,
    reason: str,
    dataset_dir: str | os.PathLike | None = None,
    selection: Selection = None,
) -> EditResult:
    """Apply one tag operation to every (or every selected) caption; write and keep only the changed ones."""
    project_dir = Path(project_dir)
    ds = _dataset_dir(project_dir, dataset_dir)
    captions = _select(load_captions(ds), ds, selection)
    new_text = {}
    for c in captions:
        before = c.tags
        after = op(before)
        if after != before:
            new_text[c.path] = c.text_for(T.join_tags(after))
    return _write_all(project_dir, new_text, len(captions), REASON_PREFIX + reason)


# ----------------------------------------------------------------------------------------------
# The bulk edits (each one sentence in the trash reason)


def _names(tags: Iterable[str]) -> str:
    return ", ".join(tags)


def activate(
    project_dir: PathArg, activation: Sequence[str], dataset_dir: PathArg | None = None, selection: Selection = None
) -> EditResult:
    """Put activation tag(s) at the front of every caption, in the given order, without duplicates."""
    activation = _required(T.split_tag_args(activation), "activation tag")
    return apply(
        project_dir, lambda t: T.add_activation(t, activation), f"activate {_names(activation)}", dataset_dir, selection
    )


def remove(
    project_dir: PathArg,
    tags: Sequence[str],
    dataset_dir: PathArg | None = None,
    selection: Selection = None,
    wildcards: bool = True,
) -> EditResult:
    """Remove tags from every caption; with `wildcards`, a tag containing `*` is a pattern."""
    tags = _required(T.split_tag_args(tags), "tag to remove")
    patterns = [t for t in tags if wildcards and "*" in t]
    exact = [t for t in tags if t not in patterns]
    return apply(
        project_dir, lambda t: T.remove_tags(t, exact, patterns), f"remove {_names(tags)}", dataset_dir, selection
    )


def merge(
    project_dir: PathArg,
    target: str,
    sources: Sequence[str],
    dataset_dir: PathArg | None = None,
    selection: Selection = None,
) -> EditResult:
    """Merge the source tags into `target`: each caption that had any of them has `target` once."""
    target_tags = T.parse_tags(target)
    if len(target_tags) != 1:
        raise StudioError(f"The merge target {target!r} must be exactly one tag.", "Give one tag without commas.")
    sources = _required(T.split_tag_args(sources), "tag to merge")
    merged = [s for s in dict.fromkeys(sources) if s != target_tags[0]] or sources
    reason = f"merge {_names(merged)} into {target_tags[0]}"
    return apply(project_dir, lambda t: T.merge_tags(t, target_tags[0], sources), reason, dataset_dir, selection)


def replace(
    project_dir: PathArg,
    old: str,
    new: str,
    if_any: Sequence[str] = (),
    if_all: Sequence[str] = (),
    substring: bool = False,
    dataset_dir: PathArg | None = None,
    selection: Selection = None,
) -> EditResult:
    """Replace tag `old` by `new` (comma-separated tags, or empty to remove) where the condition holds.

    With `substring`, `old` is replaced as text inside every tag instead (e.g. "_" -> " ").
    """
    if_any, if_all = T.split_tag_args(if_any), T.split_tag_args(if_all)
    cond = (f" if any of {_names(if_any)}" if if_any else "") + (f" if all of {_names(if_all)}" if if_all else "")
    if substring:
        if not old:
            raise StudioError("The text to replace is empty.", "Type the text to look for inside tags.")
        reason = f"replace text {old!r} -> {new!r}{cond}"
        return apply(project_dir, lambda t: T.replace_text(t, old, new, if_any, if_all), reason, dataset_dir, selection)
    old_tags = T.parse_tags(old)
    if len(old_tags) != 1:
        raise StudioError(f"The tag to replace {old!r} must be exactly one tag.", "Give one tag without commas.")
    new_tags = T.parse_tags(new)
    reason = f"replace {old_tags[0]} -> {_names(new_tags) or '(nothing)'}{cond}"
    return apply(
        project_dir, lambda t: T.replace_tag(t, old_tags[0], new_tags, if_any, if_all), reason, dataset_dir, selection
    )


def sort(
    project_dir: PathArg,
    by: T.SortKey = "alpha",
    activation: Sequence[str] = (),
    dataset_dir: PathArg | None = None,
    selection: Selection = None,
) -> EditResult:
    """Sort each caption's tags (alphabetically, or most frequent in the dataset first); activation tags stay first."""
    if by not in T.SORT_KEYS:
        raise StudioError(f"Unknown sort order {by!r}.", f"Use one of: {', '.join(T.SORT_KEYS)}.")
    activation = T.split_tag_args(activation)
    ds = _dataset_dir(Path(project_dir), dataset_dir)
    counts = T.tag_counts(c.tags for c in load_captions(ds)) if by == "freq" else None
    reason = f"sort {'alphabetically' if by == 'alpha' else 'by frequency'}"
    return apply(project_dir, lambda t: T.sort_tags(t, by, counts, activation), reason, dataset_dir, selection)


def dedupe(project_dir: PathArg, dataset_dir: PathArg | None = None, selection: Selection = None) -> EditResult:
    """Remove repeated tags within each caption, keeping the first occurrence."""
    return apply(project_dir, T.dedupe_tags, "remove duplicate tags", dataset_dir, selection)


def _required(tags: list[str], what: str) -> list[str]:
    if not tags:
        raise StudioError(f"No {what} was given.", f"Type at least one {what}.")
    return tags


# ----------------------------------------------------------------------------------------------
# One image


def _one(project_dir: Path, image: str | os.PathLike, dataset_dir) -> Caption:
    ds = _dataset_dir(project_dir, dataset_dir)
    found = _select(load_captions(ds), ds, [image])
    return found[0]


def read_caption(project_dir: PathArg, image: str | os.PathLike, dataset_dir: PathArg | None = None) -> str:
    """One image's caption text (empty if it has no caption file), without the trailing line break."""
    return _one(Path(project_dir), image, dataset_dir).body


def write_caption(
    project_dir: PathArg, image: str | os.PathLike, text: str, dataset_dir: PathArg | None = None
) -> EditResult:
    """Replace one image's caption with `text` as typed (undoable); nothing is written if it is unchanged."""
    project_dir = Path(project_dir)
    cap = _one(project_dir, image, dataset_dir)
    body = text.rstrip("\r\n")
    reason = REASON_PREFIX + f"caption of {cap.image.name}"
    if body == cap.body and (cap.exists or not body):
        return EditResult((), 1, None, reason)
    return _write_all(project_dir, {cap.path: cap.text_for(body)}, 1, reason)


# ----------------------------------------------------------------------------------------------
# Undo, history, frequencies


def history(project_dir: str | os.PathLike) -> list[trash.TrashBatch]:
    """The tag-edit batches that can still be undone, newest first."""
    return [b for b in trash.list_batches(project_dir) if b.kept_original and b.reason.startswith(REASON_PREFIX)]


def undo(project_dir: str | os.PathLike) -> trash.TrashBatch | None:
    """Restore the caption files the newest tag edit changed, byte for byte; None if there is none.

    The captions being replaced go to the trash themselves ("replaced by restoring ..."), so an
    undo loses nothing either.
    """
    batches = history(project_dir)
    if not batches:
        return None
    trash.restore(project_dir, batches[0].batch_id)
    return batches[0]


def frequencies(
    project_dir: str | os.PathLike,
    top: int | None = None,
    search: str = "",
    dataset_dir: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """The dataset's tag table (tag, count, share of images), most common first; see tags.frequency_table."""
    captions = load_captions(_dataset_dir(Path(project_dir), dataset_dir))
    return T.frequency_table([c.tags for c in captions], search=search, top=top)
