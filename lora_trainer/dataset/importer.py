"""Bring images into a project's dataset folder: from a folder, a zip, or a list of uploaded files.

Every image is checked with Pillow before it is written (`images.inspect_image`): truncated,
corrupt and decompression-bomb files are refused with a reason. The real format decides the
extension (a PNG named `.jpg` arrives as `.png`). CMYK images are converted to RGB (they would
train with wrong colours); formats kohya does not read (GIF, TIFF, ...) are converted to PNG.
Transparency is kept: a PNG with alpha (RGBA, LA, or a palette with a transparent colour) is
stored as it is; only converting to JPEG (the optional shrink's `to_jpeg`) flattens it onto
white. Captions (`<stem>.txt`, or kohya's `<stem>.caption`, saved as `.txt`) travel with their
image. Other files are listed and left where they are.

Nothing is overwritten: a name already taken in the dataset gets a `_1`, `_2`, ... suffix; the
same bytes under the same name count as already present. Zip members with absolute or `..`
paths are refused (zip-slip). A folder keeps its sub-folders (kohya's `10_name` repeat folders);
uploaded files land at the top of the dataset folder.

`shrink_images` scales images down to a maximum side (optionally as JPEG) and keeps every
original in the project's trash, restorable. `scan_dataset` counts what a dataset holds.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image

from ..errors import StudioError
from ..fileio import atomic_path, clean_leftovers, write_bytes, write_text
from ..paths import NAME_MAX_BYTES, inside
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from ..trash import keep_copies, move_to_trash
from .images import (
    CAPTION_EXT,
    CAPTION_EXTS,
    IMAGE_EXTS,
    BadImage,
    ImageInfo,
    has_alpha,
    inspect_image,
    is_caption_name,
    is_image_name,
    iter_files,
    to_rgb,
    upright,
)

# Extensions tried as images besides IMAGE_EXTS: Pillow reads them and they are converted to PNG.
CONVERTIBLE_EXTS = (".gif", ".tif", ".tiff", ".jfif", ".jpe")
JPEG_QUALITY = 95  # for the rare re-encode of a CMYK JPEG: visually lossless

# ----------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Rejected:
    path: str  # as the user knows it: the file, or "archive.zip:member"
    reason: str


@dataclass
class ShrinkSummary:
    resized: list[Path] = field(default_factory=list)
    converted: list[Path] = field(default_factory=list)  # new .jpg files whose original was another format
    skipped: list[Rejected] = field(default_factory=list)
    trash_batch: str | None = None  # the batch holding the originals (trash.restore undoes the shrink)


class ImportOrigins:
    """Which source file each imported picture came from (md5 of the source bytes -> its path in
    the dataset), kept in `<project>/.cache/import-origins.json`. A picture that was shrunk or
    stored as JPEG no longer has its source's bytes; without this, importing the same folder
    again would add it once more as `a_1.png`, `a_2.png`..."""

    FILE = Path(".cache") / "import-origins.json"

    def __init__(self, project_dir: Path, dataset_dir: Path):
        self.path, self.dataset_dir = project_dir / self.FILE, dataset_dir
        try:
            data = json.loads(self.path.read_text("utf-8"))
            self.known: dict[str, str] = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
        except (OSError, ValueError, AttributeError):
            self.known = {}
        self.earlier = dict(self.known)  # two equal files in one import both arrive, as before

    def find(self, md5: str) -> Path | None:
        """Where an earlier import put the picture with these source bytes, if it is still there."""
        rel = self.earlier.get(md5)
        if rel is None:
            return None
        try:
            path = inside(self.dataset_dir, rel, "A recorded import")
        except StudioError:
            return None
        return path if path.is_file() else None

    def record(self, md5: str, path: Path) -> None:
        self.known[md5] = path.relative_to(self.dataset_dir).as_posix()

    def follow_conversions(self) -> None:
        """After a shrink stored `a.png` as `a.jpg`: point its record at the new file."""
        for md5, rel in list(self.known.items()):
            path = self.dataset_dir / rel
            if not path.exists() and path.with_suffix(".jpg").is_file():
                self.known[md5] = path.with_suffix(".jpg").relative_to(self.dataset_dir).as_posix()

    def save(self) -> None:
        write_text(self.path, json.dumps(self.known, indent=0, sort_keys=True))


def _printable(name: str) -> str:
    """A name as one line: control characters (a newline in a file name) shown escaped."""
    return name if name.isprintable() else repr(name)[1:-1]


# Picture formats that are left alone, with the reason and the way to bring them in.
UNREAD_PICTURES = {
    ".svg": "a vector drawing, not pixels; export it as PNG at the size you want to train on",
    ".heic": "HEIC (iPhone photos) is not readable here; export as JPEG (Photos: Most Compatible) or convert it",
    ".heif": "HEIF is not readable here; convert it to JPEG or PNG",
    ".avif": "AVIF is not readable by this Pillow; convert it to PNG or JPEG",
    ".gif": "GIFs are often animations and have only 256 colours; save the frames you want as PNG",
    ".psd": "a layered Photoshop file; export the flattened picture as PNG",
    ".tif": "TIFF is not imported; save it as PNG",
    ".tiff": "TIFF is not imported; save it as PNG",
    ".jxl": "JPEG XL is not readable here; convert it to PNG or JPEG",
}


@dataclass
class ImportSummary:
    images: dict[str, int] = field(default_factory=dict)  # imported images per dataset sub-folder ("." = top)
    captions: dict[str, int] = field(default_factory=dict)
    imported: list[Path] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)  # "a.jpg: a PNG file, saved as a.png"
    renamed: list[str] = field(default_factory=list)  # "a.png -> a_1.png (name taken)"
    already_present: int = 0  # identical file already at that name
    rejected: list[Rejected] = field(default_factory=list)
    others: list[str] = field(default_factory=list)  # not images nor captions: left alone
    trashed_others: list[str] = field(default_factory=list)
    trash_batches: list[str] = field(default_factory=list)
    shrink: ShrinkSummary | None = None

    def lines(self) -> list[str]:
        """The summary as plain lines for the CLI and the UI."""
        n_img, n_cap = sum(self.images.values()), sum(self.captions.values())
        out = [f"imported {n_img} images and {n_cap} captions"]
        for folder in sorted(set(self.images) | set(self.captions)):
            out.append(f"  {folder}: {self.images.get(folder, 0)} images, {self.captions.get(folder, 0)} captions")
        if self.already_present:
            out.append(f"{self.already_present} images were already in the dataset")
        out += [f"fixed: {f}" for f in self.fixed]
        out += [f"renamed: {r}" for r in self.renamed]
        out += [f"rejected: {_printable(r.path)}: {r.reason}" for r in self.rejected]
        if self.others:
            out.append(f"{len(self.others)} other files left alone: " + ", ".join(self.others[:10]) + (" ..." if len(self.others) > 10 else ""))
            for ext, why in sorted({Path(o).suffix.lower(): UNREAD_PICTURES.get(Path(o).suffix.lower()) for o in self.others}.items()):
                if why:
                    out.append(f"  {ext}: {why}")
        if self.trashed_others:
            out.append(f"moved {len(self.trashed_others)} other files from the dataset folder to the trash")
        if self.shrink:
            out.append(f"shrunk {len(self.shrink.resized)} images, converted {len(self.shrink.converted)} to JPEG; originals in the trash")
        return out


# ----------------------------------------------------------------------------------------------
# Sources: a folder, a zip, single files -> items with a relative path and a reader


@dataclass(frozen=True)
class _Item:
    rel: PurePosixPath  # where it goes, relative to the dataset folder
    origin: str  # how to name it to the user
    size: int
    read: Callable[[], bytes]


def _zip_items(path: Path, dataset_dir: Path, summary: ImportSummary, stack: contextlib.ExitStack) -> Iterator[_Item]:
    try:
        zf = stack.enter_context(zipfile.ZipFile(path))  # stays open until the import is done
    except (zipfile.BadZipFile, OSError) as e:
        summary.rejected.append(Rejected(str(path), f"not a readable zip ({e})"))
        return
    for info in zf.infolist():
        if info.is_dir():
            continue
        origin = f"{path.name}:{info.filename}"
        name = info.filename.replace("\\", "/")  # older Windows zip tools write backslashes
        try:
            inside(dataset_dir, name, "The archive member")
        except StudioError as e:
            summary.rejected.append(Rejected(origin, e.message))
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            summary.rejected.append(Rejected(origin, "a symbolic link: refused"))
            continue
        rel = PurePosixPath(name)
        if any(p.startswith(".") or p == "__MACOSX" for p in rel.parts):
            summary.others.append(origin)  # macOS resource forks and hidden files
            continue
        yield _Item(rel, origin, info.file_size, lambda info=info: zf.read(info))


def _file_item(path: Path, rel: PurePosixPath) -> _Item:
    return _Item(rel, str(path), path.stat().st_size, path.read_bytes)


def _items(sources: Sequence[Path], dataset_dir: Path, summary: ImportSummary, stack: contextlib.ExitStack) -> Iterator[_Item]:
    for src in sources:
        src = Path(src)
        if not src.exists():
            raise StudioError(f"{src} does not exist.", "Check the path of the folder, zip or image to import.")
        if _inside(src, dataset_dir):
            raise StudioError(f"{src} is already inside the dataset folder {dataset_dir}.", "Import from another folder.")
        if src.is_dir() and _inside(dataset_dir, src):
            raise StudioError(f"The dataset folder {dataset_dir} is inside {src}.", "Import a folder that does not contain the dataset.")
        if src.is_dir():
            refused: list[tuple[Path, str]] = []
            for f in iter_files(src, refused):
                if f.name.startswith("."):
                    summary.others.append(str(f))
                    continue
                yield _file_item(f, PurePosixPath(f.relative_to(src).as_posix()))
            summary.rejected.extend(Rejected(str(f), why) for f, why in refused)
        elif src.suffix.lower() == ".zip":
            yield from _zip_items(src, dataset_dir, summary, stack)
        else:
            yield _file_item(src, PurePosixPath(src.name))


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------------------------
# One image: check, fix, name


def _prepare(data: bytes, info: ImageInfo) -> tuple[bytes, str, str]:
    """(bytes to store, extension, what was fixed or "") for a checked image."""
    if info.mode == "CMYK":
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
        buf = io.BytesIO()
        if info.format == "JPEG":
            rgb.save(buf, "JPEG", quality=JPEG_QUALITY)
            return buf.getvalue(), ".jpg", "CMYK converted to RGB"
        rgb.save(buf, "PNG")
        return buf.getvalue(), ".png", "CMYK converted to RGB, saved as PNG"
    if info.ext is not None:
        return data, info.ext, ""
    with Image.open(io.BytesIO(data)) as im:  # GIF (first frame), TIFF, ...
        im = im.convert("RGBA" if has_alpha(im) else "RGB")
        buf = io.BytesIO()
        im.save(buf, "PNG")
    return buf.getvalue(), ".png", f"{info.format} converted to PNG"


def _stem_taken(folder: Path, stem: str) -> bool:
    """True if any image or caption with this stem exists (kohya pairs captions by stem)."""
    return any((folder / (stem + e)).exists() for e in IMAGE_EXTS + CAPTION_EXTS)


def _free_stem(folder: Path, stem: str) -> str:
    """`stem_1`, `stem_2`...: the first free one, the stem shortened where the name would pass the
    file system's 255 bytes with its longest extension."""
    longest_ext = max(len(e) for e in IMAGE_EXTS + CAPTION_EXTS)
    n = 1
    while True:
        suffix = f"_{n}"
        room = NAME_MAX_BYTES - longest_ext - len(suffix)
        candidate = stem.encode("utf-8")[:room].decode("utf-8", "ignore") + suffix
        if not _stem_taken(folder, candidate):
            return candidate
        n += 1


def _same_bytes(path: Path, data: bytes) -> bool:
    return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data


# ----------------------------------------------------------------------------------------------
# Import


@dataclass(frozen=True)
class ShrinkOptions:
    max_side: int  # px: longer sides are scaled down to this
    to_jpeg: bool = False  # also store non-JPEG images as JPEG (alpha flattened onto white)
    quality: int = 95  # JPEG quality


@dataclass(frozen=True)
class ImportOptions:
    max_pixels: int | None = None  # refuse larger images; None: Pillow's limit (about 89 megapixels)
    max_file_bytes: int = 512 << 20  # refuse larger files (a zip member can claim anything)
    max_caption_bytes: int = 1 << 20  # a caption is a line of tags; a larger one is not a caption
    trash_others: bool = False  # move non-image, non-caption files already in the dataset folder to the trash
    shrink: ShrinkOptions | None = None  # scale the imported images down afterwards


def import_into_dataset(
    sources: Path | str | Sequence[Path | str],
    dataset_dir: str | os.PathLike,
    project_dir: str | os.PathLike | None = None,
    options: ImportOptions = ImportOptions(),
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> ImportSummary:
    """Import folders, zips and image files into `dataset_dir` (see the module docstring).

    project_dir: where the trash lives (default: the dataset folder's parent, the project layout).
    A cancel stops between files; every file written so far is complete.
    """
    dataset_dir = Path(dataset_dir)
    project_dir = Path(project_dir) if project_dir is not None else dataset_dir.parent
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    sources = [Path(s) for s in sources]
    dataset_dir.mkdir(parents=True, exist_ok=True)
    clean_leftovers(dataset_dir)  # what a killed import left
    summary = ImportSummary()

    origins = ImportOrigins(project_dir, dataset_dir)
    try:
        with contextlib.ExitStack() as stack:  # zips stay open while their members are read
            items = list(_items(sources, dataset_dir, summary, stack))
            _import_items(items, dataset_dir, options, summary, progress, cancel, origins)
    finally:  # a cancel keeps the record of what did arrive
        origins.save()

    if options.trash_others:
        others = [f for f in iter_files(dataset_dir) if not (is_image_name(f.name) or is_caption_name(f.name))]
        batch = move_to_trash(project_dir, others, "import: not an image or caption")
        if batch is not None:
            summary.trashed_others = list(batch.files)
            summary.trash_batches.append(batch.batch_id)
    if options.shrink is not None and summary.imported:
        summary.shrink = shrink_images(summary.imported, project_dir, options.shrink, progress, cancel)
        if summary.shrink.trash_batch:
            summary.trash_batches.append(summary.shrink.trash_batch)
        origins.follow_conversions()
        origins.save()
    progress(ProgressEvent(1.0, summary.lines()[0]))
    return summary


def _import_items(
    items: list[_Item], dataset_dir: Path, options: ImportOptions, summary: ImportSummary, progress: ProgressFn, cancel: CancelToken | None,
    origins: ImportOrigins,
) -> None:
    captions: dict[tuple[str, str], _Item] = {}  # (folder, stem) -> its caption; .txt wins over .caption
    for i in items:
        if is_caption_name(i.rel.name):
            key = (str(i.rel.parent), i.rel.stem)
            if key not in captions or i.rel.suffix.lower() == CAPTION_EXT:
                captions[key] = i
    images = [i for i in items if i.rel.suffix.lower() in IMAGE_EXTS + CONVERTIBLE_EXTS]
    placed: set[int] = set()  # ids of the items that found a place (images and their captions)

    for n, item in enumerate(images):
        progress(ProgressEvent(n / max(1, len(images)), f"importing {n + 1}/{len(images)}: {item.rel.name}"))
        if cancel is not None:
            cancel.raise_if_cancelled()
        placed.add(id(item))
        dest = _import_one(item, dataset_dir, options, summary, origins)
        cap = captions.get((str(item.rel.parent), item.rel.stem))
        if dest is None or cap is None:
            continue
        placed.add(id(cap))
        cap_dest = dest.with_suffix(CAPTION_EXT)
        if cap.size > options.max_caption_bytes:
            summary.rejected.append(Rejected(cap.origin, f"{cap.size} bytes is too large for a caption (the limit is {options.max_caption_bytes})"))
            continue
        text = _read(cap, summary)
        if text is not None and not cap_dest.exists():  # an image already present keeps its caption
            write_bytes(cap_dest, text)
            folder = str(item.rel.parent)
            summary.captions[folder] = summary.captions.get(folder, 0) + 1

    caption_ids = {id(c) for c in captions.values()}
    for i in items:
        if id(i) in placed:
            continue
        note = " (a caption without an imported image)" if id(i) in caption_ids else ""
        summary.others.append(i.origin + note)


def _read(item: _Item, summary: ImportSummary) -> bytes | None:
    """The item's bytes, or None with the reason in `summary` (a damaged or encrypted zip member,
    a file that vanished or can not be read)."""
    try:
        return item.read()
    except zipfile.BadZipFile as e:  # "Bad CRC-32", a truncated member
        why = f"damaged in the archive ({e})"
    except (RuntimeError, NotImplementedError) as e:  # encrypted, or a compression zipfile lacks
        why = f"can not be read from the archive ({e})"
    except OSError as e:
        why = f"can not be read ({e.strerror or e})"
    summary.rejected.append(Rejected(item.origin, why))
    return None


def _import_one(item: _Item, dataset_dir: Path, options: ImportOptions, summary: ImportSummary,
                origins: ImportOrigins) -> Path | None:
    """Check, fix and write one image; return where it is now (None if refused)."""
    if item.size > options.max_file_bytes:
        summary.rejected.append(Rejected(item.origin, f"{item.size} bytes is larger than the limit of {options.max_file_bytes}"))
        return None
    data = _read(item, summary)
    if data is None:
        return None
    source_md5 = hashlib.md5(data).hexdigest()
    earlier = origins.find(source_md5)
    if earlier is not None:  # imported before (and perhaps shrunk or converted since)
        summary.already_present += 1
        return earlier
    try:
        info = inspect_image(data, options.max_pixels)
    except BadImage as e:
        summary.rejected.append(Rejected(item.origin, e.message))
        return None
    data, ext, fixed = _prepare(data, info)
    try:  # a folder listing's or an archive's names, and symlinks already in the dataset
        folder = inside(dataset_dir, item.rel.parent.as_posix(), "The folder") if item.rel.parent.parts else dataset_dir
        inside(dataset_dir, item.rel.as_posix(), "The file name")
    except StudioError as e:
        summary.rejected.append(Rejected(item.origin, e.message))
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # FileExistsError, NotADirectoryError: a file holds the folder's name
        summary.rejected.append(Rejected(item.origin, f"its folder {item.rel.parent.as_posix()!r} can not be made in the "
                                         "dataset: a file there has that name"))
        return None
    given_ext = item.rel.suffix.lower()
    if not fixed and ext != given_ext and not (ext == ".jpg" and given_ext == ".jpeg"):
        fixed = f"a {info.format} file, saved as {item.rel.stem}{ext}"
    else:
        ext = given_ext if ext == ".jpg" and given_ext == ".jpeg" else ext
    stem = item.rel.stem
    dest = folder / (stem + ext)
    if _same_bytes(dest, data):
        summary.already_present += 1
        origins.record(source_md5, dest)
        return dest
    if _stem_taken(folder, stem):
        stem = _free_stem(folder, stem)
        summary.renamed.append(f"{item.origin} -> {stem}{ext} (name taken)")
        dest = folder / (stem + ext)
    try:
        write_bytes(dest, data)  # a full disk: a StudioError that ends the import, nothing half-written
    except IsADirectoryError:
        summary.rejected.append(Rejected(item.origin, f"a folder in the dataset is named {dest.name!r}"))
        return None
    origins.record(source_md5, dest)
    if fixed:
        summary.fixed.append(f"{item.origin}: {fixed}")
    rel_folder = str(item.rel.parent)
    summary.images[rel_folder] = summary.images.get(rel_folder, 0) + 1
    summary.imported.append(dest)
    return dest


# ----------------------------------------------------------------------------------------------
# Shrink


def shrink_images(
    images: Sequence[Path],
    project_dir: str | os.PathLike,
    options: ShrinkOptions,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> ShrinkSummary:
    """Scale images whose longer side exceeds `options.max_side` (and, with to_jpeg, store non-JPEGs as JPEG).

    Every original is copied into one trash batch before anything is rewritten, so
    `trash.restore(project_dir, summary.trash_batch)` brings them all back. A JPEG made from a PNG
    is a new file (`a.png` -> `a.jpg`): a restore brings `a.png` back beside it.
    """
    if options.max_side < 1:
        raise StudioError(f"The maximum side must be a positive number of pixels, not {options.max_side}.")
    if not 1 <= options.quality <= 100:
        raise StudioError(f"JPEG quality must be between 1 and 100, not {options.quality}.")
    summary = ShrinkSummary()
    plan = []
    for path in images:
        try:
            with Image.open(path) as im:
                size, fmt = im.size, im.format
        except (OSError, SyntaxError, ValueError) as e:
            summary.skipped.append(Rejected(str(path), f"cannot be read ({e})"))
            continue
        resize = max(size) > options.max_side
        convert = options.to_jpeg and fmt != "JPEG"
        if convert and path.with_suffix(".jpg").exists():
            summary.skipped.append(Rejected(str(path), f"{path.with_suffix('.jpg').name} already exists; not converted"))
            convert = False
        if resize or convert:
            plan.append((path, resize, convert))
    if not plan:
        return summary
    batch = keep_copies(project_dir, [p for p, _, _ in plan], f"shrink to {options.max_side} px")
    summary.trash_batch = batch.batch_id if batch else None

    for n, (path, resize, convert) in enumerate(plan):
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(ProgressEvent(n / len(plan), f"shrinking {n + 1}/{len(plan)}: {path.name}"))
        with Image.open(path) as im:
            im.load()
            fmt = im.format
            im = upright(im)  # a re-saved file keeps no EXIF tag: the pixels must stand the right way up
            if resize:
                im = _scaled(im, options.max_side)
            target = path.with_suffix(".jpg") if convert else path
            with atomic_path(target) as tmp:
                if convert or fmt == "JPEG":
                    to_rgb(im).save(tmp, "JPEG", quality=options.quality)
                else:
                    im.save(tmp, fmt)
        if convert:
            path.unlink()  # its copy is in the trash batch
            summary.converted.append(target)
        if resize:
            summary.resized.append(target)
    progress(ProgressEvent(1.0, f"shrunk {len(summary.resized)}, converted {len(summary.converted)}"))
    return summary


def _scaled(im: Image.Image, max_side: int) -> Image.Image:
    w, h = im.size
    scale = max_side / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if im.mode == "P":  # palette images only resize with NEAREST; go through RGB(A) for a smooth result
        im = im.convert("RGBA" if has_alpha(im) else "RGB")
    elif im.mode == "CMYK":
        im = im.convert("RGB")
    return im.resize(size, Image.Resampling.LANCZOS)


# ----------------------------------------------------------------------------------------------
# What a dataset holds


@dataclass(frozen=True)
class FolderCounts:
    images: int
    captions: int


@dataclass(frozen=True)
class DatasetSummary:
    images: tuple[Path, ...]
    captions: tuple[Path, ...]  # caption files that belong to an image
    missing_captions: tuple[Path, ...]  # images without a .txt caption
    orphan_captions: tuple[Path, ...]  # .txt files without an image of the same stem
    others: tuple[Path, ...]  # neither images nor captions
    folders: dict[str, FolderCounts]  # per sub-folder ("." = the dataset folder itself)

    def lines(self) -> list[str]:
        out = [f"{len(self.images)} images, {len(self.captions)} captions, {len(self.missing_captions)} without a caption"]
        out += [f"  {k}: {v.images} images, {v.captions} captions" for k, v in sorted(self.folders.items())]
        if self.orphan_captions:
            out.append(f"{len(self.orphan_captions)} captions without an image")
        if self.others:
            out.append(f"{len(self.others)} other files")
        return out


def scan_dataset(dataset_dir: str | os.PathLike) -> DatasetSummary:
    """Count images and captions (recursively, hidden folders skipped); an absent folder is empty."""
    dataset_dir = Path(dataset_dir)
    files = list(iter_files(dataset_dir)) if dataset_dir.is_dir() else []
    images = [f for f in files if is_image_name(f.name)]
    stems = {f.with_suffix("") for f in images}
    caption_files = {f for f in files if f.suffix.lower() == CAPTION_EXT and not f.name.startswith(".")}
    captions = sorted(c for c in caption_files if c.with_suffix("") in stems)
    missing = [i for i in images if i.with_suffix(CAPTION_EXT) not in caption_files]
    orphans = sorted(c for c in caption_files if c.with_suffix("") not in stems)
    others = [f for f in files if not is_image_name(f.name) and f not in caption_files]
    folders: dict[str, list[int]] = {}
    for f in images:
        folders.setdefault(f.parent.relative_to(dataset_dir).as_posix(), [0, 0])[0] += 1
    for c in captions:
        folders.setdefault(c.parent.relative_to(dataset_dir).as_posix(), [0, 0])[1] += 1
    return DatasetSummary(
        tuple(images),
        tuple(captions),
        tuple(missing),
        tuple(orphans),
        tuple(others),
        {k: FolderCounts(*v) for k, v in sorted(folders.items())},
    )
