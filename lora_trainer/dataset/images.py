"""Small image helpers shared by the scraper, the importer and the rest of the dataset tools.

`inspect_image` is the one gate every image passes before it enters a dataset: it opens the file
with Pillow, refuses decompression bombs from the header alone, then decodes every pixel so a
truncated or corrupt file is refused here rather than in the middle of a training run. The real
format (not the file name) decides the extension an image is stored under.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import StudioError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # what kohya's dataset loader reads
CAPTION_EXTS = (".txt", ".caption")  # .txt is ours; .caption is kohya's other common choice
CAPTION_EXT = ".txt"

# Formats stored byte for byte under their proper extension; anything else Pillow can read
# (GIF, TIFF, ...) is converted to PNG on import.
FORMAT_EXT = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "BMP": ".bmp"}  # MPO: phone JPEGs with extra frames
WHITE = (255, 255, 255)


class BadImage(StudioError):
    """A file that is not a usable image; `message` is the reason, shown in import summaries."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # Pillow's format name: "PNG", "JPEG", ...
    width: int
    height: int
    mode: str  # Pillow's mode: "RGB", "RGBA", "P", "CMYK", ...

    @property
    def ext(self) -> str | None:
        """The extension this format is stored under, or None for formats that get converted."""
        return FORMAT_EXT.get(self.format)


def max_image_pixels() -> int:
    """Pillow's decompression-bomb limit (about 89 megapixels unless the host changed it)."""
    return Image.MAX_IMAGE_PIXELS or 0


def inspect_image(source: str | os.PathLike | bytes, max_pixels: int | None = None) -> ImageInfo:
    """Open and fully decode an image (a path or its bytes); raise BadImage with the reason if unusable.

    max_pixels: refuse images with more pixels than this (default: Pillow's limit). Checked from the
    header, before any pixel is decoded, so a bomb costs nothing.
    Note: a host that sets `ImageFile.LOAD_TRUNCATED_IMAGES = True` makes Pillow accept truncated
    files; we do not change that global.
    """
    limit = max_image_pixels() if max_pixels is None else max_pixels
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(fp) as im:
            w, h = im.size
            if limit and w * h > limit:
                raise BadImage(f"{w}x{h} pixels is more than the limit of {limit} (a decompression bomb?)")
            info = ImageInfo(im.format or "", w, h, im.mode)
            im.load()  # decodes everything: truncated or corrupt data fails here
    except Image.DecompressionBombError as e:
        raise BadImage(f"refused as a decompression bomb ({e})") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # Pillow's decoders raise all of these
        raise BadImage(f"broken image data ({e})") from None
    if w < 1 or h < 1:
        raise BadImage(f"empty image ({w}x{h})")
    return info


def to_rgb(im: Image.Image, background: tuple[int, int, int] = WHITE) -> Image.Image:
    """An RGB copy: transparency (RGBA, LA, P with a transparent colour) is flattened onto `background`.

    Plain `convert("RGB")` drops alpha and shows whatever colour hides under transparent pixels
    (often black), which a LoRA then learns; and it clips 16-bit and float greyscale (a 16-bit PNG)
    at 255, so such a picture trains as white. Those are scaled to 8 bits first.
    """
    if im.mode.startswith("I") or im.mode == "F":
        im = _grey_to_8bit(im)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im.convert("RGB")


def _grey_to_8bit(im: Image.Image) -> Image.Image:
    """16-bit ("I;16*", or "I" as older Pillow opens 16-bit PNGs) and float ("F") greyscale as "L"."""
    import numpy as np

    a = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
    elif im.mode.startswith("I;16") or (a.size and a.max() > 255):
        a = a / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def upright(im: Image.Image) -> Image.Image:
    """The picture as viewers show it: the EXIF orientation applied. Phones store a portrait as a
    landscape with a "rotate me" tag; without this a tagger, a thumbnail or a re-saved JPEG shows
    it lying on its side. A damaged EXIF block leaves the picture as stored."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(im)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        return im


def has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info)


def file_md5(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def iter_files(folder: str | os.PathLike, refused: list[tuple[Path, str]] | None = None) -> Iterator[Path]:
    """Every regular file under `folder`, sorted, skipping hidden folders (.trash, .cache, .git).

    Not yielded, and appended to `refused` with the reason: a symbolic link that leads out of
    `folder` (`l.txt -> /etc/passwd` would become a caption), a broken link, and anything that is
    not a regular file (a FIFO named `f.png` hangs a read forever, `/dev/zero` fills the memory).
    Linked folders are not entered.
    """
    top = os.path.realpath(folder)
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            path = Path(root) / f
            reason = _not_a_plain_file(path, top)
            if not reason:
                yield path
            elif refused is not None:
                refused.append((path, reason))


def _not_a_plain_file(path: Path, top: str) -> str:
    """Why `path` must not be read as a dataset file, or ""."""
    try:
        st = path.stat()  # follows a link
    except OSError:
        return "a broken symbolic link" if path.is_symlink() else "unreadable"
    if path.is_symlink():
        target = os.path.realpath(path)
        if os.path.commonpath([top, target]) != top:
            return f"a symbolic link to {target}, outside the folder: not followed"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file (a FIFO, a device or a socket): not read"
    return ""


def is_image_name(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(IMAGE_EXTS) and not Path(name).name.startswith(".")


def is_caption_name(name: str | os.PathLike) -> bool:
    return str(name).lower().endswith(CAPTION_EXTS) and not Path(name).name.startswith(".")


def iter_loaded(
    paths: Sequence[Path], batch_size: int, workers: int, load: Callable
) -> Iterator[tuple[list[Path], list]]:
    """Yield `(paths, loaded)` per batch; the next batch decodes in worker threads meanwhile.

    `load(path)` returns the decoded item or raises OSError/ValueError (unreadable file); such
    items come back as exceptions in `loaded` so the caller can log them and go on.
    """
    from concurrent.futures import ThreadPoolExecutor

    chunks = [list(paths[i : i + batch_size]) for i in range(0, len(paths), batch_size)]

    def safe(path):
        try:
            return load(path)
        except (
            OSError,
            ValueError,
            SyntaxError,
        ) as e:  # PIL raises all three for broken files
            return e

    with ThreadPoolExecutor(max(1, workers)) as pool:
        pending = [
            pool.map(safe, chunk) for chunk in chunks[:2]
        ]  # the current and the next batch
        for i, chunk in enumerate(chunks):
            loaded = list(pending.pop(0))
            if i + 2 < len(chunks):
                pending.append(pool.map(safe, chunks[i + 2]))
            yield chunk, loaded
