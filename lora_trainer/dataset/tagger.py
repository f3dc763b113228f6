"""Booru tags for anime images: the SmilingWolf WD taggers (WD 1.4 v2 and WD v3) through onnxruntime.

A tagger is a folder with `model.onnx` and `selected_tags.csv` (the layout of the Hugging Face
repos). The preprocessing is the official wd-tagger space's: composite on white, pad to a white
square, PIL bicubic resize to the model's input size, float32 0-255, BGR, NHWC. The ONNX output
is already sigmoid probabilities, one per row of the CSV. See reference/dataset-tools.md §1.

Two taggers ("both") give the union of their tags: the first model's tags, then the second's new
ones, as the Colab Dataset Maker does with its append pass.
"""

from __future__ import annotations

import csv
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..errors import StudioError
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from .captioner import (
    CaptionWriteResult,
    check_mode,
    count_tags,
    needs_caption,
    write_captions,
)
from .images import iter_loaded
from .tag_editor import find_images
from .tags import join_tags

MODEL_FILE = "model.onnx"
LABELS_FILE = "selected_tags.csv"

# Danbooru category numbers used in selected_tags.csv
RATING, GENERAL, CHARACTER = 9, 0, 4

# Repos the UI offers by name; any other "owner/name" Hugging Face repo with the same two files works too.
KNOWN_TAGGERS = {
    name: f"SmilingWolf/{name}"
    for name in (
        "wd-eva02-large-tagger-v3",  # best quality (Dataset Maker default, with vit-large)
        "wd-vit-large-tagger-v3",
        "wd-swinv2-tagger-v3",  # the official space's default
        "wd-convnext-tagger-v3",
        "wd-vit-tagger-v3",  # fastest v3
        "wd-v1-4-moat-tagger-v2",
        "wd-v1-4-swinv2-tagger-v2",
        "wd-v1-4-convnextv2-tagger-v2",
        "wd-v1-4-convnext-tagger-v2",
        "wd-v1-4-vit-tagger-v2",
    )
}
DEFAULT_TAGGER = "wd-eva02-large-tagger-v3"
BOTH_TAGGERS = (
    "wd-eva02-large-tagger-v3",
    "wd-vit-large-tagger-v3",
)  # the Dataset Maker's "Both"

# Emoticons whose underscores are part of the face; the list the official space and the WebUI
# tagger extensions share.
KAOMOJI = frozenset(
    ["0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
     ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"]
)  # fmt: skip

_PROMPT_SPECIAL = re.compile(r"([\\()])")  # what A1111's deepbooru escape escapes


# ----------------------------------------------------------------------------------------------
# Labels and tag selection


@dataclass(frozen=True)
class Labels:
    names: tuple[str, ...]  # Danbooru names as in the CSV, underscores kept
    categories: np.ndarray  # (n_tags,) int, one Danbooru category per name


def load_labels(csv_path: str | os.PathLike) -> Labels:
    """Read selected_tags.csv (header `tag_id,name,category,count`); row i names output i."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise StudioError(
            f"Cannot read the tag list {csv_path}: {e.strerror}.",
            f"Put the model's {LABELS_FILE} there.",
        ) from None
    if not rows or rows[0][:3] != ["tag_id", "name", "category"]:
        raise StudioError(
            f"{csv_path} does not look like a WD tagger tag list (its header is {rows[0][:4] if rows else 'empty'}).",
            "Use the selected_tags.csv that comes with the model (header tag_id,name,category,count).",
        )
    try:
        names = tuple(r[1] for r in rows[1:])
        categories = np.array([int(r[2]) for r in rows[1:]], dtype=np.int64)
    except (IndexError, ValueError):
        raise StudioError(
            f"{csv_path} has a malformed row.", "Download selected_tags.csv again."
        ) from None
    return Labels(names, categories)


def format_tag(name: str, escape: bool = False) -> str:
    """`long_hair` -> `long hair`; kaomoji keep their underscores; `escape` adds `\\(` `\\)` for prompts."""
    tag = name if name in KAOMOJI else name.replace("_", " ")
    return _PROMPT_SPECIAL.sub(r"\\\1", tag) if escape else tag


def _normalise_blacklist(blacklist: Sequence[str]) -> frozenset[str]:
    # compare in the written form (spaces), whatever form the user typed
    out = set()
    for b in blacklist:
        b = b.strip().replace("\\(", "(").replace("\\)", ")")
        if b:
            out.add(b if b in KAOMOJI else b.replace("_", " "))
    return frozenset(out)


def mcut_threshold(probs: np.ndarray) -> float:
    """Maximum Cut Thresholding (Largeron et al. 2012): the middle of the largest gap between sorted scores."""
    p = np.sort(np.asarray(probs, dtype=np.float64))[::-1]
    if len(p) < 2:
        return 0.0
    gaps = p[:-1] - p[1:]
    t = int(gaps.argmax())
    return float((p[t] + p[t + 1]) / 2)


@dataclass(frozen=True)
class TagSettings:
    threshold: float = 0.35  # the official space's general threshold
    character_threshold: float = 0.85  # the official space's character threshold
    characters: bool = (
        True  # the Dataset Maker leaves names out unless asked (its 1.1 threshold)
    )
    mcut: bool = False  # MCut replaces both thresholds; characters keep at least 0.15 as in the space
    blacklist: tuple[
        str, ...
    ] = ()  # tags never written, in either spelling (underscores or spaces)
    escape: bool = False  # `\(` `\)` for pasting into WebUI prompts; training captions stay literal
    batch_size: int = (
        8  # the Dataset Maker's batch; models with a fixed batch of 1 run one by one
    )
    workers: int = 2  # decoding threads

    def validate(self) -> None:
        for name in ("threshold", "character_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise StudioError(f"{name} is {value}.", "Use a value between 0 and 1.")
        if self.batch_size < 1 or self.workers < 1:
            raise StudioError(
                f"batch_size {self.batch_size} / workers {self.workers} must be at least 1."
            )


def select_tags(probs: np.ndarray, labels: Labels, settings: TagSettings) -> list[str]:
    """One image's tags: characters first, then general tags, each by confidence (strict `>`)."""
    probs = np.asarray(probs, dtype=np.float32)
    blacklist = _normalise_blacklist(settings.blacklist)

    def pick(category: int, threshold: float, floor: float = 0.0) -> list[str]:
        idx = np.flatnonzero(labels.categories == category)
        if settings.mcut:
            threshold = max(floor, mcut_threshold(probs[idx]))
        idx = idx[probs[idx] > threshold]
        idx = idx[np.argsort(-probs[idx], kind="stable")]
        tags = [format_tag(labels.names[i]) for i in idx]
        return [t for t in tags if t not in blacklist]

    chars = (
        pick(CHARACTER, settings.character_threshold, floor=0.15)
        if settings.characters
        else []
    )
    tags = chars + pick(GENERAL, settings.threshold)
    return [_PROMPT_SPECIAL.sub(r"\\\1", t) for t in tags] if settings.escape else tags


def rating_of(probs: np.ndarray, labels: Labels) -> str:
    """The rating with the highest score (general / sensitive / questionable / explicit)."""
    idx = np.flatnonzero(labels.categories == RATING)
    return labels.names[idx[np.argmax(np.asarray(probs)[idx])]] if len(idx) else ""


# ----------------------------------------------------------------------------------------------
# Preprocessing


def preprocess(image, size: int) -> np.ndarray:
    """A PIL image -> (size, size, 3) float32, BGR, 0-255: the official wd-tagger space's steps."""
    from PIL import Image

    from .images import to_rgb

    # 1. transparency becomes white
    rgb = to_rgb(image)
    # 2. centre on a white square
    w, h = rgb.size
    side = max(w, h)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(rgb, ((side - w) // 2, (side - h) // 2))
    # 3. the model's size, bicubic
    if side != size:
        square = square.resize((size, size), Image.BICUBIC)
    # 4. BGR float
    return np.ascontiguousarray(np.asarray(square, dtype=np.float32)[:, :, ::-1])


def load_for_tagger(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    from .images import upright

    with Image.open(path) as im:
        return preprocess(upright(im), size)


# ----------------------------------------------------------------------------------------------
# The model


def pick_providers(available: Sequence[str]) -> list[str]:
    """CUDA when onnxruntime offers it (the GPU package), else CPU."""
    return (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if "CUDAExecutionProvider" in available
        else ["CPUExecutionProvider"]
    )


class WDTagger:
    """One loaded tagger: an InferenceSession and its labels."""

    def __init__(
        self, model_dir: str | os.PathLike, providers: Sequence[str] | None = None
    ):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        _check_model_dir(self.model_dir)
        self.labels = load_labels(self.model_dir / LABELS_FILE)
        wanted = (
            list(providers)
            if providers is not None
            else pick_providers(ort.get_available_providers())
        )
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        # onnxruntime's own error classes derive from Exception only
        load_errors = (
            ort_state.Fail,
            ort_state.InvalidProtobuf,
            ort_state.NoSuchFile,
            ort_state.InvalidGraph,
            RuntimeError,
        )
        try:
            self.session = ort.InferenceSession(
                str(self.model_dir / MODEL_FILE), providers=wanted
            )
        except load_errors as e:
            raise StudioError(
                f"onnxruntime cannot load {self.model_dir / MODEL_FILE}: {e}",
                "Download the model again.",
            ) from None
        self.provider = self.session.get_providers()[0]
        self.fell_back = (
            wanted[0] != self.provider
        )  # ORT drops CUDA silently when CUDA/cuDNN do not match
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        # (N, H, W, 3); N is a name for dynamic batches (v3), 1 for most v2 exports
        n, h, w, c = inp.shape
        if not (isinstance(h, int) and h == w and c == 3):
            raise StudioError(
                f"{self.model_dir / MODEL_FILE} takes input {inp.shape}, not (N, S, S, 3).",
                "Use a WD tagger model.",
            )
        self.size = h
        self.fixed_batch = n if isinstance(n, int) else None
        out = self.session.get_outputs()[0].shape[-1]
        if isinstance(out, int) and out != len(self.labels.names):
            raise StudioError(
                f"{self.model_dir / MODEL_FILE} gives {out} scores but {LABELS_FILE} lists {len(self.labels.names)} tags.",
                "The two files come from different models; download both from the same repo.",
            )

    def describe(self) -> str:
        where = "GPU (CUDA)" if self.provider == "CUDAExecutionProvider" else "CPU"
        note = (
            " (CUDA was offered but onnxruntime fell back to the CPU: check the CUDA/cuDNN versions)"
            if self.fell_back
            else ""
        )
        return f"tagger {self.model_dir.name}: {self.size}px, {len(self.labels.names)} tags, on {where}{note}"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) float32 BGR -> (N, n_tags) probabilities."""
        if self.fixed_batch is not None and batch.shape[0] != self.fixed_batch:
            return np.concatenate(
                [
                    self.predict(batch[i : i + self.fixed_batch])
                    for i in range(0, len(batch), self.fixed_batch)
                ]
            )
        probs = self.session.run(None, {self.input_name: batch})[0]
        if probs.shape != (batch.shape[0], len(self.labels.names)):
            raise StudioError(
                f"{self.model_dir / MODEL_FILE} gave scores of shape {probs.shape} for {batch.shape[0]} images "
                f"and {len(self.labels.names)} tags.",
                "The model and selected_tags.csv do not match; download both from the same repo.",
            )
        return probs


def _check_model_dir(d: Path) -> None:
    missing = [f for f in (MODEL_FILE, LABELS_FILE) if not (d / f).is_file()]
    if missing:
        raise StudioError(
            f"The tagger folder {d} has no {' and no '.join(missing)}.",
            f"Put {MODEL_FILE} and {LABELS_FILE} of a WD tagger there.",
        )


def resolve_tagger(
    model: str | os.PathLike,
    models_dir: str | os.PathLike | None = None,
    progress: ProgressFn = no_progress,
) -> Path:
    """A tagger folder: `model` itself if it is one, else `<models_dir>/taggers/<repo name>`,
    downloaded there from Hugging Face the first time (needs `huggingface_hub` and a connection)."""
    path = Path(model)
    if path.is_dir():
        _check_model_dir(path)
        return path
    name = str(model)
    repo = KNOWN_TAGGERS.get(name) or (
        name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) else None
    )
    if repo is None or models_dir is None:
        raise StudioError(
            f"{name!r} is not a tagger folder"
            + (" nor a known tagger name." if repo is None else "."),
            f"Give a folder with {MODEL_FILE} and {LABELS_FILE}, or one of: {', '.join(KNOWN_TAGGERS)}.",
        )
    target = Path(models_dir) / "taggers" / repo.split("/")[1]
    if all((target / f).is_file() for f in (MODEL_FILE, LABELS_FILE)):
        return target
    by_hand = (
        f"Run it once while online, or download {MODEL_FILE} and {LABELS_FILE} from "
        f"https://huggingface.co/{repo}/tree/main into {target}."
    )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise StudioError(
            f"The tagger {repo} is not on this computer and huggingface_hub is not installed.",
            by_hand,
        ) from None
    progress(ProgressEvent(log=f"downloading {repo} into {target}"))
    try:
        for f in (LABELS_FILE, MODEL_FILE):
            hf_hub_download(repo, f, local_dir=str(target))
    except (
        OSError,
        ValueError,
    ) as e:  # hub and requests errors are OSErrors; a bad repo id is a ValueError
        raise StudioError(
            f"The tagger {repo} could not be downloaded ({type(e).__name__}).", by_hand
        ) from None
    return target


# ----------------------------------------------------------------------------------------------
# Tagging a dataset


@dataclass(frozen=True)
class TagResult:
    tags: dict[
        str, list[str]
    ]  # image path relative to the dataset -> the new tags (before merging)
    write: CaptionWriteResult  # what was written; write.trash_batch undoes it
    top_tags: Counter  # tag -> images carrying it, over the whole dataset after writing
    failed: tuple[str, ...] = field(default=())  # images that could not be read


def predict_images(
    tagger: WDTagger,
    images: Sequence[Path],
    settings: TagSettings,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
    done_before: int = 0,
    total: int | None = None,
) -> tuple[dict[Path, list[str]], list[Path]]:
    """Tags per image for one model; decoding of the next batch overlaps inference of this one."""
    total = total or len(images)
    out: dict[Path, list[str]] = {}
    failed: list[Path] = []
    start = time.monotonic()
    for paths, arrays in iter_loaded(
        images,
        settings.batch_size,
        settings.workers,
        lambda p: load_for_tagger(p, tagger.size),
    ):
        if cancel:
            cancel.raise_if_cancelled()
        good = [(p, a) for p, a in zip(paths, arrays) if not isinstance(a, Exception)]
        for p, a in zip(paths, arrays):
            if isinstance(a, Exception):
                failed.append(p)
                progress(
                    ProgressEvent(
                        log=f"skipped {p.name}: it cannot be read as an image ({a})"
                    )
                )
        if good:
            probs = tagger.predict(np.stack([a for _, a in good]))
            for (p, _), row in zip(good, probs):
                out[p] = select_tags(row, tagger.labels, settings)
        done = len(out) + len(failed)
        eta = (time.monotonic() - start) / done * (len(images) - done) if done else None
        progress(
            ProgressEvent(
                (done_before + done) / max(1, total),
                f"tagged {done}/{len(images)} ({tagger.model_dir.name})",
                eta,
            )
        )
    return out, failed


def tag_dataset(
    dataset_dir: str | os.PathLike,
    project_dir: str | os.PathLike,
    models: Sequence[str | os.PathLike],
    settings: TagSettings = TagSettings(),
    mode: str = "overwrite",
    models_dir: str | os.PathLike | None = None,
    providers: Sequence[str] | None = None,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> TagResult:
    """Tag every image with one or more WD taggers (their union) and write the captions in `mode`.

    Models are loaded one at a time, so two large taggers never share the GPU. Captions are
    written once at the end, the changed files kept in one trash batch (restore it to undo).
    """
    settings.validate()
    check_mode(mode)
    if not models:
        raise StudioError(
            "No tagger model was given.", f"Pick one, e.g. {DEFAULT_TAGGER}."
        )
    dataset_dir = Path(dataset_dir)
    every = find_images(dataset_dir)
    images = [p for p in every if needs_caption(p, mode)]
    merged: dict[Path, list[str]] = {p: [] for p in images}
    failed: set[Path] = set()
    for k, model in enumerate(models):
        tagger = WDTagger(resolve_tagger(model, models_dir, progress), providers)
        progress(
            ProgressEvent(
                k / len(models),
                f"loaded {tagger.model_dir.name}",
                log=tagger.describe(),
            )
        )
        tags, bad = predict_images(
            tagger,
            images,
            settings,
            progress,
            cancel,
            k * len(images),
            len(models) * len(images),
        )
        failed.update(bad)
        for p, t in tags.items():
            merged[p].extend(x for x in t if x not in merged[p])
        del tagger  # free the session before the next model loads
    tagged = {p: t for p, t in merged.items() if p not in failed}
    write = write_captions(
        project_dir,
        {p: join_tags(t) for p, t in tagged.items()},
        mode,
        "tag: previous captions",
    )
    write = replace(write, skipped=write.skipped + len(every) - len(images))
    top = count_tags(dataset_dir)
    progress(
        ProgressEvent(
            1.0,
            f"wrote {write.written} caption files; {len(top)} distinct tags in the dataset",
        )
    )
    return TagResult(
        {p.relative_to(dataset_dir).as_posix(): t for p, t in tagged.items()},
        write,
        top,
        tuple(sorted(p.relative_to(dataset_dir).as_posix() for p in failed)),
    )
