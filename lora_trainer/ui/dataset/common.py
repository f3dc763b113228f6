"""What every section of the Dataset sub-tab shares: messages, the chosen project, jobs, thumbnails."""

from __future__ import annotations

import functools
import hashlib
import html
import os
from collections.abc import Callable
from pathlib import Path

from ...errors import StudioError
from ...project import Project, open_project
from ..context import StudioContext

THUMB_SIDE = 256  # px: the longer side of grid thumbnails (gradio shows them at ~150-250 px)
THUMB_DIR = "ui-thumbs"  # under the project's .cache (safe to delete)


def message(text: str, kind: str = "info") -> str:
    """A sentence beside a control: `kind` is info, ok or error (classes in style.css)."""
    if not text:
        return ""
    body = "<br>".join(html.escape(line) for line in text.strip().splitlines())
    return f'<div class="ls-{kind}">{body}</div>'


def error_message(e: Exception) -> str:
    return message(str(e), "error")


def guarded(n_outputs: int, message_at: int = -1) -> Callable:
    """Decorator: a StudioError from the callback becomes a sentence in output `message_at`;
    the other outputs stay as they were (gr.update()). Anything else is a bug and propagates."""
    from ..compat import update

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except StudioError as e:
                outs = [update() for _ in range(n_outputs)]
                outs[message_at] = error_message(e)
                return outs[0] if n_outputs == 1 else tuple(outs)

        return run

    return wrap


def project_of(ctx: StudioContext, name: str | None) -> Project:
    if not name:
        raise StudioError("No project is chosen.", "Pick or create a project at the top of the tab.")
    return open_project(ctx.root, name)


def rel_name(project: Project, path: Path) -> str:
    """A dataset file as the user knows it: relative to the dataset folder, with / separators."""
    return Path(path).relative_to(project.dataset_dir).as_posix()


def thumbnail(project: Project, image: Path, side: int = THUMB_SIDE) -> str:
    """Path of a small JPEG of `image` in the project's cache, made once per file version.

    Grids show thumbnails, not the originals: gradio copies every image it shows into its own
    cache, and a 4000 px PNG per cell would make a grid of duplicates slow to build and to load.
    """
    from PIL import Image

    from ...dataset.images import to_rgb, upright

    st = image.stat()
    # "upright": thumbnails made before the EXIF orientation was applied are not reused
    key = hashlib.sha1(f"{image.resolve()}|{st.st_size}|{st.st_mtime_ns}|{side}|upright".encode()).hexdigest()[:20]
    out = project.cache_dir / THUMB_DIR / f"{key}.jpg"
    if out.exists():
        return str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from ...fileio import atomic_path

    try:
        with Image.open(image) as im:
            im.draft("RGB", (side, side))  # JPEG: decode at a reduced scale
            im = upright(im)
            im = im.convert("RGBA") if im.mode in ("P", "LA", "RGBA") else to_rgb(im)  # to_rgb: 16-bit grey too
            im.thumbnail((side, side))
            if im.mode == "RGBA":
                flat = Image.new("RGB", im.size, (255, 255, 255))
                flat.paste(im, mask=im.getchannel("A"))
                im = flat
            with atomic_path(out) as tmp:
                im.save(tmp, "JPEG", quality=85)
    except (OSError, ValueError, SyntaxError) as e:
        raise StudioError(f"{image} cannot be read as an image ({e}).", "Move it out of the dataset folder.") from None
    return str(out)


def looks_like_path(text: str) -> bool:
    """A model field holds either a name (wd-eva02-large-tagger-v3, ViT-B-32) or a folder."""
    return os.sep in text or "/" in text or text.startswith(("~", ".")) or (len(text) > 1 and text[1] == ":")


class Refresher:
    """The views that show the dataset's files (overview, trash list, tag table, image list).

    Sections register a `refresh(name) -> {component: value}`; any callback that moved files
    outputs `refresher.outputs` and returns `refresher.values(name)`, so every view stays true.
    """

    def __init__(self) -> None:
        self.outputs: list = []
        self._fns: list[Callable[[str | None], dict]] = []

    def add(self, fn: Callable[[str | None], dict], components: list) -> None:
        self._fns.append(fn)
        self.outputs += [c for c in components if all(c is not o for o in self.outputs)]

    def as_dict(self, name: str | None) -> dict:
        merged: dict = {}
        for fn in self._fns:
            merged.update(fn(name))
        return merged

    def values(self, name: str | None) -> list:
        from ..compat import update

        merged = self.as_dict(name)
        return [merged.get(c, update()) for c in self.outputs]
