"""Captions as kohya feeds them to the text encoder (kohya-format.md §3.4).

A caption is the first line of `<image stem><caption_extension>`. Each time an image is drawn,
`process_caption` may drop the whole caption, shuffle the tags after the fixed ones, and drop
single tags. All randomness comes from the `random.Random` passed in, so the same (seed, epoch,
position) gives the same caption and a resumed run continues exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CaptionOptions:
    """The caption settings of a run (TrainConfig fields of the same names)."""

    shuffle: bool = True  # the guide's shuffle_tags (kohya shuffle_caption)
    keep_tokens: int = 1  # the guide's "activation tags": leading tags never shuffled or dropped
    keep_tokens_separator: str = ""  # e.g. "|||": text before it is fixed (overrides keep_tokens)
    caption_dropout_rate: float = 0.0  # whole caption -> "" with this probability
    tag_dropout_rate: float = 0.0  # each flexible tag dropped with this probability
    separator: str = ","  # kohya caption_separator

    @property
    def is_random(self) -> bool:
        return self.shuffle or self.caption_dropout_rate > 0 or self.tag_dropout_rate > 0


def caption_path(image_path: str | Path, extension: str = ".txt") -> Path:
    """`a/b.png` -> `a/b.txt`: same stem, the configured extension."""
    p = Path(image_path)
    return p.with_name(p.stem + extension)


def read_caption(image_path: str | Path, extension: str = ".txt", fallback: str = "") -> str:
    """The first line of the image's caption file (UTF-8, BOM tolerated), or `fallback` without one."""
    path = caption_path(image_path, extension)
    try:
        text = path.read_text("utf-8-sig")
    except FileNotFoundError:
        return fallback
    lines = text.splitlines()
    return lines[0].strip() if lines else ""


def _split(text: str, sep: str) -> list[str]:
    return [t.strip() for t in text.split(sep) if t.strip()]


def split_fixed(caption: str, options: CaptionOptions) -> tuple[list[str], list[str], list[str]]:
    """(fixed prefix, flexible, fixed suffix) tags.

    With the keep_tokens separator present, everything before it is fixed and a second one marks a
    fixed suffix; otherwise the first `keep_tokens` tags are fixed.
    """
    sep, kts = options.separator, options.keep_tokens_separator
    if kts and kts in caption:
        fixed, flex = caption.split(kts, 1)
        suffix = ""
        if kts in flex:
            flex, suffix = flex.split(kts, 1)
        return _split(fixed, sep), _split(flex, sep), _split(suffix, sep)
    tags = _split(caption, sep)
    k = max(0, options.keep_tokens)
    return tags[:k], tags[k:], []


def process_caption(caption: str, options: CaptionOptions, rng: random.Random) -> str:
    """One draw of a caption: dropout, then shuffle of the flexible tags, then tag dropout (kohya's order)."""
    if options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate:
        return ""
    fixed, flex, suffix = split_fixed(caption, options)
    if not (options.is_random or options.keep_tokens_separator):
        return caption
    if options.shuffle:
        rng.shuffle(flex)
    if options.tag_dropout_rate > 0:
        flex = [t for t in flex if rng.random() >= options.tag_dropout_rate]
    return ", ".join(fixed + flex + suffix)
