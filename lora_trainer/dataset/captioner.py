"""Caption files, and captions for photos.

Two halves:

1. Writing caption files, shared by the tagger and the captioner: one `.txt` beside each image,
   written in one of three modes (overwrite, append = merge without duplicates, skip images that
   already have one). Every caption file about to change is first copied into one trash batch, so
   a whole tagging or captioning run is undone by restoring that batch.
2. Photo captions: any backend `caption_fn(images) -> list[str]`. CoCa through open_clip is ours;
   the WebUI host can plug in its BLIP interrogator with the same signature.

Nothing heavy is imported at module level: torch and open_clip load inside the functions that
need them.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..errors import StudioError
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from .images import iter_loaded
from .tag_editor import find_images, load_captions, read_caption_file, rewrite_captions
from .tags import dedupe_tags, join_tags, parse_tags, tag_counts

CaptionMode = Literal["overwrite", "append", "skip"]
CAPTION_MODES: tuple[str, ...] = ("overwrite", "append", "skip")

# ----------------------------------------------------------------------------------------------
# Caption files (read and kept in the trash the way the tag editor does, so the files stay alike)


def check_mode(mode: str) -> str:
    if mode not in CAPTION_MODES:
        raise StudioError(
            f"Unknown caption mode {mode!r}.",
            f"Use one of: {', '.join(CAPTION_MODES)}.",
        )
    return mode


def needs_caption(image: str | os.PathLike, mode: str) -> bool:
    """False only in skip mode for an image that already has a non-empty caption."""
    return check_mode(mode) != "skip" or not read_caption_file(image).body.strip()


def merge_caption(old: str, new: str) -> str:
    """Old tags first, then the new ones not already there (how kohya's --append_tags merges)."""
    return join_tags(dedupe_tags(parse_tags(old) + parse_tags(new)))


@dataclass(frozen=True)
class CaptionWriteResult:
    written: int  # caption files created or changed
    unchanged: int  # the new caption equalled the old one, so the file was left alone
    skipped: int  # skip mode, the image already had a caption
    trash_batch: (
        str | None
    )  # restoring this batch undoes the run (new caption files go away too)


def write_captions(
    project_dir: str | os.PathLike,
    captions: Mapping[Path, str],
    mode: str,
    reason: str,
) -> CaptionWriteResult:
    """Write `{image: caption}` beside each image in `mode`, keeping the previous files in the trash.

    overwrite: the new caption replaces the file; append: the new tags are added after the old
    ones, without duplicates; skip: images that already have a caption are left alone.
    All files that will change are recorded in ONE trash batch before the first write (files that
    did not exist too, so restoring the batch removes them again). Each file is written
    atomically; a file whose text would not change is not touched.
    """
    check_mode(mode)
    planned: dict[Path, str] = {}
    unchanged = skipped = 0
    for image, text in captions.items():
        old = read_caption_file(image)
        if mode == "skip" and old.body.strip():
            skipped += 1
            continue
        body = merge_caption(old.body, text) if mode == "append" else text.strip()
        new = (
            old.text_for(body) if old.exists else body
        )  # keeps a BOM and the line ending
        if old.exists and old.text_for(old.body) == new:
            unchanged += 1
            continue
        planned[old.path] = new
    return CaptionWriteResult(len(planned), unchanged, skipped, rewrite_captions(project_dir, planned, reason))


def count_tags(dataset_dir: str | os.PathLike) -> Counter:
    """How many images carry each tag (the "top tags" shown after tagging)."""
    return tag_counts(c.tags for c in load_captions(dataset_dir))


# ----------------------------------------------------------------------------------------------
# Photo captions

CaptionFn = Callable[
    [list], list
]  # list[PIL.Image] -> list[str], one caption per image

DEFAULT_COCA_MODEL = "coca_ViT-L-14"
DEFAULT_COCA_PRETRAINED = "mscoco_finetuned_laion2b_s13b_b90k"  # the captioning fine-tune, not the alt-text one

_SPECIAL_TOKENS = re.compile(r"<start_of_text>|<end_of_text>")


def clean_caption(text: str) -> str:
    """Strip CoCa's special tokens and trailing punctuation: `"<start_of_text>a dog . <end_of_text>"` -> `"a dog"`."""
    text = text.split("<end_of_text>")[0]
    text = _SPECIAL_TOKENS.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text.rstrip(" .,;:!?").strip()


@dataclass(frozen=True)
class CocaSettings:
    min_len: int = 10  # the Dataset Maker's caption_min (tokens)
    max_len: int = 75  # the Dataset Maker's caption_max; open_clip counts the start token in it too
    num_beams: int = 6  # open_clip's generate() default
    num_beam_groups: int = (
        3  # open_clip's default: diverse beam search, 2 beams per group
    )
    repetition_penalty: float = 1.0

    def validate(self) -> None:
        if not 1 <= self.min_len < self.max_len <= 76:
            raise StudioError(
                f"Caption lengths min {self.min_len} / max {self.max_len} are out of range.",
                "Use 1 <= min < max <= 76 (CoCa's context is 76 tokens).",
            )
        if (
            self.num_beams < 1
            or self.num_beam_groups < 1
            or self.num_beams % self.num_beam_groups
        ):
            raise StudioError(
                f"num_beams {self.num_beams} is not a positive multiple of num_beam_groups {self.num_beam_groups}.",
                "Use e.g. 6 beams in 3 groups, or 3 beams in 1 group.",
            )


class CocaCaptioner:
    """A `caption_fn` over an open_clip CoCa model: preprocess, beam search, decode, clean."""

    def __init__(
        self,
        model,
        preprocess,
        settings: CocaSettings = CocaSettings(),
        device: str = "cpu",
    ):
        settings.validate()
        self.model = model.eval()
        self.preprocess = preprocess
        self.settings = settings
        self.device = device

    def __call__(self, images: list) -> list[str]:
        import open_clip
        import torch

        _coca_generation_ready()
        s = self.settings
        batch = torch.stack([self.preprocess(im.convert("RGB")) for im in images]).to(
            self.device
        )  # (B, 3, H, W)
        with torch.no_grad(), _autocast(self.device):
            # seq_len counts the start token, hence +1 so max_len is the caption's own token budget
            ids = self.model.generate(
                batch,
                generation_type="beam_search",
                seq_len=s.max_len + 1,
                min_seq_len=s.min_len,
                num_beams=s.num_beams,
                num_beam_groups=s.num_beam_groups,
                repetition_penalty=s.repetition_penalty,
            )
        return [clean_caption(open_clip.decode(row)) for row in ids.cpu()]


# What open_clip's CoCa generation takes from transformers (coca_model.py's import block).
_COCA_GENERATION_NAMES = ("LogitsProcessorList", "TopPLogitsWarper", "TopKLogitsWarper", "RepetitionPenaltyLogitsProcessor",
                          "MinLengthLogitsProcessor", "MaxLengthCriteria", "StopStringCriteria", "EosTokenCriteria",
                          "StoppingCriteriaList")


def _coca_generation_ready() -> None:
    """Let open_clip's CoCa beam search find transformers' pieces where the host's transformers keeps them.

    open_clip imports `BeamSearchScorer` from `transformers` (or `transformers.generation`);
    transformers 4.57, Forge Neo's, exports it from neither (the class is still in
    `transformers.generation.beam_search`), so open_clip decides transformers is missing and every
    caption fails with "Please install transformers". The names are handed to open_clip's module
    at run time; nothing is installed or changed on disk.
    """
    from open_clip import coca_model

    if getattr(coca_model, "_has_transformers", True):
        return
    try:
        import transformers
        from transformers.generation.beam_search import BeamSearchScorer
    except ImportError:
        return  # truly absent: open_clip's own message stands
    coca_model.BeamSearchScorer = BeamSearchScorer
    for name in _COCA_GENERATION_NAMES:
        if hasattr(transformers, name) and not hasattr(coca_model, name):
            setattr(coca_model, name, getattr(transformers, name))
    coca_model.GENERATION_TYPES = {"top_k": transformers.TopKLogitsWarper, "top_p": transformers.TopPLogitsWarper,
                                   "beam_search": "beam_search"}
    coca_model._has_transformers = True


def _autocast(device: str):
    import contextlib

    import torch

    # fp16 autocast on CUDA as open_clip's README does; full precision on CPU
    return (
        torch.autocast("cuda")
        if str(device).startswith("cuda")
        else contextlib.nullcontext()
    )


def load_coca_captioner(
    model: str = DEFAULT_COCA_MODEL,
    pretrained: str | None = DEFAULT_COCA_PRETRAINED,
    settings: CocaSettings = CocaSettings(),
    models_dir: str | os.PathLike | None = None,
    device: str | None = None,
    progress: ProgressFn = no_progress,
) -> CocaCaptioner:
    """Load a CoCa model (a built-in name with a pretrained tag or file, or a local open_clip folder)."""
    from .dedupe import load_open_clip

    loaded = load_open_clip(
        model, pretrained, models_dir=models_dir, device=device, progress=progress
    )
    if not hasattr(loaded.model, "generate"):
        raise StudioError(
            f"The open_clip model {model!r} cannot write captions (it is not a CoCa model).",
            f"Use {DEFAULT_COCA_MODEL} or coca_ViT-B-32 with a mscoco_finetuned_* tag.",
        )
    return CocaCaptioner(loaded.model, loaded.preprocess, settings, loaded.device)


@dataclass(frozen=True)
class CaptionResult:
    captions: dict[
        str, str
    ]  # image path relative to the dataset folder -> the caption written
    write: CaptionWriteResult
    failed: tuple[str, ...]  # images that could not be read


def _open_rgb(path: Path):
    from PIL import Image

    from .images import to_rgb, upright

    with Image.open(path) as im:
        return to_rgb(upright(im))


def caption_dataset(
    dataset_dir: str | os.PathLike,
    project_dir: str | os.PathLike,
    caption_fn: CaptionFn,
    mode: str = "overwrite",
    batch_size: int = 8,
    workers: int = 2,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> CaptionResult:
    """Caption every image of the dataset with `caption_fn` and write the captions in `mode`.

    Captions are written once at the end (one trash batch, nothing half-done if cancelled).
    """
    check_mode(mode)
    dataset_dir = Path(dataset_dir)
    every = find_images(dataset_dir)
    images = [p for p in every if needs_caption(p, mode)]
    captions: dict[Path, str] = {}
    failed: list[str] = []
    start = time.monotonic()
    progress(ProgressEvent(0.0, f"captioning {len(images)} images"))
    for paths, loaded in iter_loaded(images, batch_size, workers, _open_rgb):
        if cancel:
            cancel.raise_if_cancelled()
        good = [
            (p, im) for p, im in zip(paths, loaded) if not isinstance(im, Exception)
        ]
        for p, im in zip(paths, loaded):
            if isinstance(im, Exception):
                failed.append(p.relative_to(dataset_dir).as_posix())
                progress(
                    ProgressEvent(
                        log=f"skipped {p.name}: it cannot be read as an image ({im})"
                    )
                )
        if good:
            texts = caption_fn([im for _, im in good])
            if len(texts) != len(good):
                raise RuntimeError(
                    f"caption_fn returned {len(texts)} captions for {len(good)} images"
                )
            captions.update({p: t for (p, _), t in zip(good, texts)})
        done = len(captions) + len(failed)
        progress(
            ProgressEvent(
                done / max(1, len(images)),
                f"captioned {done}/{len(images)}",
                _eta(start, done, len(images)),
            )
        )
    write = write_captions(project_dir, captions, mode, "caption: previous captions")
    write = replace(write, skipped=write.skipped + len(every) - len(images))
    progress(ProgressEvent(1.0, f"wrote {write.written} captions"))
    rel = {
        p.relative_to(dataset_dir).as_posix(): read_caption_file(p).body
        for p in captions
    }
    return CaptionResult(rel, write, tuple(failed))


def _eta(start: float, done: int, total: int) -> float | None:
    if done <= 0:
        return None
    return (time.monotonic() - start) / done * (total - done)
