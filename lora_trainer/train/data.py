"""The training data: folders -> image items -> per-epoch batches, with latent and text caches.

1. `scan_dataset` lists each folder's images (not recursive, hidden files skipped), reads their
   sizes (EXIF orientation applied) and captions, balances regularization folders and places every
   image in a bucket. Unreadable files are skipped and named in the summary.
2. `TrainData.batches(epoch)` yields one `Batch` per step: kohya's order (images x repeats per
   bucket, shuffled inside the bucket, cut into batches, the batches shuffled), drawn from
   (seed, epoch) alone, so a resumed run replays the same epoch from any batch index.
3. `LatentCache` / `TextEncoderCache` hold what the VAE / text encoders made of each image or
   caption, in memory or under `<project>/.cache/`, through injected `encode_fn`s: this module
   knows no model.

No gradio, no tqdm, no global state. torch is imported here (for tensors) but no model is built.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..dataset.images import IMAGE_EXTS, to_rgb, upright
from ..errors import StudioError
from ..fileio import atomic_path
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from .buckets import Bucketer, Placement, Size
from .captions import CaptionOptions, caption_path, process_caption, read_caption
from .config import DatasetFolder, TrainConfig
from .steps import FolderCount, StepPlan, balance_regularization

CACHE_VERSION = "1"  # bump when what a cached latent means changes (resize filter, crop rule...)
_EXIF_SWAPS_SIDES = (5, 6, 7, 8)  # orientations that rotate by 90 degrees

WarnFn = Callable[[str], None]


def mix_seed(*parts: int | str) -> int:
    """A 64-bit seed from several numbers (seed, epoch, position...), stable across runs and platforms."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little")


# ---- 1. scanning --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageItem:
    """One training image and where it goes."""

    path: Path
    folder: int  # index into the dataset's folders
    caption: str  # the caption file's first line, or the folder's class tokens
    repeats: int  # per epoch; regularization images after balancing
    is_regularization: bool
    placement: Placement  # bucket, resize and crop
    file_size: int  # with mtime: part of the cache key, so an edited image is re-encoded
    mtime_ns: int

    @property
    def bucket(self) -> Size:
        return self.placement.bucket


@dataclass(frozen=True)
class FolderSummary:
    path: str
    exists: bool
    images: int  # readable images
    captions: int  # readable images that have a caption file
    repeats: int
    is_regularization: bool = False
    used: int | None = None  # regularization: images x repeats after balancing


@dataclass
class DatasetSummary:
    """What `validate` and the step preview need to know about the images."""

    folders: list[FolderSummary] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    duplicate_stems: list[str] = field(default_factory=list)  # a.png + a.jpg share a caption file
    bucket_counts: dict[Size, int] = field(default_factory=dict)  # {bucket: images x repeats}
    images_with_captions: int = 0
    max_tags: int = 0  # the most comma-separated tags in one caption

    @property
    def train_images(self) -> int:
        return sum(f.images for f in self.folders if not f.is_regularization)

    @property
    def folder_counts(self) -> list[FolderCount]:
        return [FolderCount(f.path, f.images, f.repeats, f.is_regularization, f.used) for f in self.folders]


@dataclass
class Dataset:
    items: list[ImageItem]
    summary: DatasetSummary

    @property
    def warnings(self) -> list[str]:
        return [f"Skipped {path}: {reason}." for path, reason in self.summary.unreadable]

    def plan(self, config: TrainConfig) -> StepPlan:
        return config.plan(self.summary.folder_counts, self.summary.bucket_counts)


def list_images(folder: str | Path) -> list[Path]:
    """The images directly in `folder` (kohya does not recurse), sorted, hidden files skipped."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS)


def image_size(path: str | Path) -> Size:
    """(width, height) as displayed: the header's size, sides swapped for a rotating EXIF orientation."""
    with Image.open(path) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112)
        except (OSError, ValueError, SyntaxError):  # a damaged EXIF block: use the stored size
            orientation = None
    return (h, w) if orientation in _EXIF_SWAPS_SIDES else (w, h)


def _count_tags(caption: str) -> int:
    return len([t for t in caption.split(",") if t.strip()])


def scan_dataset(
    folders: Sequence[DatasetFolder],
    bucketer: Bucketer,
    caption_extension: str = ".txt",
    default_caption: str = "",
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> Dataset:
    """List, size, caption, balance and bucket every image of `folders` (paths already resolved).

    Images without a caption file get the folder's class tokens, else `default_caption` (the Colab
    uses the project name). Unreadable images are skipped and listed in `summary.unreadable`.
    """
    found: list[list[tuple[Path, Size, str, bool, os.stat_result]]] = []
    summary = DatasetSummary()
    paths_per_folder = []
    for f in folders:
        folder = Path(f.path)
        paths_per_folder.append(list_images(folder) if folder.is_dir() else None)
    total = sum(len(p or []) for p in paths_per_folder)
    done = 0
    for f, paths in zip(folders, paths_per_folder):
        entries = []
        if paths is not None:
            stems: dict[str, str] = {}
            for path in paths:
                if cancel is not None:
                    cancel.raise_if_cancelled()
                if path.stem in stems:
                    summary.duplicate_stems.append(str(path.with_suffix("")))
                stems[path.stem] = path.name
                try:
                    size = image_size(path)
                    stat = path.stat()
                except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                    summary.unreadable.append((str(path), str(e) or type(e).__name__))
                else:
                    has_caption = caption_path(path, caption_extension).is_file()
                    caption = read_caption(path, caption_extension, f.class_tokens or default_caption)
                    entries.append((path, size, caption, has_caption, stat))
                done += 1
                if done % 50 == 0 or done == total:
                    progress(ProgressEvent(done / max(1, total), f"reading image sizes {done}/{total}"))
        found.append(entries)
        summary.folders.append(FolderSummary(
            f.path, paths is not None, len(entries), sum(1 for e in entries if e[3]), f.repeats, f.is_regularization))

    # Regularization images are balanced to the training images x repeats (kohya DreamBoothDataset).
    train_total = sum(len(e) * f.repeats for f, e in zip(folders, found) if not f.is_regularization)
    reg_slots = [(i, j) for i, f in enumerate(folders) if f.is_regularization for j in range(len(found[i]))]
    balanced = balance_regularization(train_total, [folders[i].repeats for i, _ in reg_slots])
    reg_repeats = dict(zip(reg_slots, balanced))

    items: list[ImageItem] = []
    for i, (f, entries) in enumerate(zip(folders, found)):
        used = 0
        for j, (path, size, caption, has_caption, stat) in enumerate(entries):
            repeats = reg_repeats[(i, j)] if f.is_regularization else f.repeats
            used += repeats
            if repeats <= 0:
                continue
            try:
                placement = bucketer.place(*size)
            except ValueError as e:
                summary.unreadable.append((str(path), str(e)))
                continue
            items.append(ImageItem(path, i, caption, repeats, f.is_regularization, placement, stat.st_size, stat.st_mtime_ns))
            if has_caption:
                summary.images_with_captions += 1
                summary.max_tags = max(summary.max_tags, _count_tags(caption))
        if f.is_regularization:
            summary.folders[i] = FolderSummary(**{**summary.folders[i].__dict__, "used": used})
    counts: dict[Size, int] = {}
    for item in items:
        counts[item.bucket] = counts.get(item.bucket, 0) + item.repeats
    summary.bucket_counts = dict(sorted(counts.items()))
    return Dataset(items, summary)


def load_dataset(config: TrainConfig, project_dir: str | Path, progress: ProgressFn = no_progress,
                 cancel: CancelToken | None = None) -> Dataset:
    """`scan_dataset` with the config's folders (relative to `project_dir`), buckets and captions."""
    default_caption = config.project_name or Path(project_dir).name
    return scan_dataset(config.resolve_folders(project_dir), config.bucketer(), config.caption_extension,
                        default_caption, progress, cancel)


# ---- 2. images ----------------------------------------------------------------------------------


def load_image(path: str | Path) -> Image.Image:
    """An RGB image as displayed: EXIF orientation applied, transparency flattened onto white."""
    with Image.open(path) as im:
        im.load()
        return to_rgb(upright(im))


def fit_to_bucket(image: Image.Image, placement: Placement) -> Image.Image:
    """Resize to cover the bucket, then centre-crop to it. Area filtering when shrinking and
    Lanczos when enlarging, as kohya's `resize_image` (cv2 INTER_AREA / PIL LANCZOS)."""
    if image.size != placement.original:
        raise ValueError(f"image is {image.size[0]}x{image.size[1]}, but was placed as {placement.original[0]}x{placement.original[1]}")
    if image.size != placement.resized:
        shrinking = placement.resized[0] * placement.resized[1] < image.size[0] * image.size[1]
        image = image.resize(placement.resized, Image.Resampling.BOX if shrinking else Image.Resampling.LANCZOS)
    if image.size != placement.bucket:
        image = image.crop(placement.crop_box)
    return image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1], as the VAE takes it."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(127.5).sub(1.0)


def load_training_image(item: ImageItem, flipped: bool = False) -> torch.Tensor:
    """An item's pixels at its bucket size, (3, H, W) in [-1, 1], mirrored if `flipped`."""
    image = fit_to_bucket(load_image(item.path), item.placement)
    tensor = to_tensor(image)
    return tensor.flip(-1) if flipped else tensor


# ---- 3. caches ----------------------------------------------------------------------------------

EncodeImages = Callable[[torch.Tensor], torch.Tensor]  # (B, 3, H, W) in [-1, 1] -> (B, 4, H/8, W/8)
EncodeTexts = Callable[[list[str]], dict[str, torch.Tensor]]  # captions -> {name: (B, ...)}


class LatentCache:
    """VAE latents per image (and per mirrored image when flip augmentation is on).

    In memory, or one safetensors file per image under `cache_dir` (e.g. `<project>/.cache/latents`),
    named by a hash of the image's path, size, mtime, bucket geometry and the VAE's identity, so an
    edited image, another bucket or another VAE never reuses a stale latent. Files are written
    atomically; a damaged file is re-encoded.
    """

    def __init__(self, encode_fn: EncodeImages, vae_id: str, cache_dir: str | Path | None = None, with_flipped: bool = False):
        self.encode_fn = encode_fn
        self.vae_id = vae_id
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.with_flipped = with_flipped
        self._memory: dict[str, dict[str, torch.Tensor]] = {}

    def key(self, item: ImageItem) -> str:
        p = item.placement
        text = "|".join(map(str, (CACHE_VERSION, Path(item.path).resolve(), item.file_size, item.mtime_ns,
                                  p.original, p.bucket, p.resized, p.crop_box, self.vae_id)))
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def path_of(self, item: ImageItem) -> Path | None:
        return self.cache_dir / f"{self.key(item)}.safetensors" if self.cache_dir is not None else None

    def _load(self, item: ImageItem) -> dict[str, torch.Tensor] | None:
        key = self.key(item)
        if key in self._memory:
            return self._memory[key]
        path = self.path_of(item)
        if path is None or not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            return None
        if "latents" not in tensors or (self.with_flipped and "latents_flipped" not in tensors):
            return None
        return tensors

    def has(self, item: ImageItem) -> bool:
        return self._load(item) is not None

    def _store(self, item: ImageItem, tensors: dict[str, torch.Tensor]) -> None:
        path = self.path_of(item)
        if path is None:
            self._memory[self.key(item)] = tensors
            return
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"image": str(item.path)})

    def prepare(
        self,
        items: Sequence[ImageItem],
        batch_size: int = 1,
        progress: ProgressFn = no_progress,
        cancel: CancelToken | None = None,
    ) -> list[str]:
        """Encode every item not cached yet, `batch_size` images of one bucket at a time.

        Returns warnings for images that could not be loaded; those are left uncached (the
        training data skips them)."""
        todo = [it for it in items if not self.has(it)]
        by_bucket: dict[Size, list[ImageItem]] = {}
        for it in todo:
            by_bucket.setdefault(it.bucket, []).append(it)
        warnings: list[str] = []
        done = 0
        for bucket in sorted(by_bucket):
            group = by_bucket[bucket]
            for start in range(0, len(group), max(1, batch_size)):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                chunk, pixels = [], []
                for it in group[start:start + batch_size]:
                    try:
                        pixels.append(load_training_image(it))
                        chunk.append(it)
                    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                        warnings.append(f"Skipped {it.path}: {e or type(e).__name__}.")
                        progress(ProgressEvent(log=warnings[-1]))
                if chunk:
                    x = torch.stack(pixels)
                    if self.with_flipped:
                        x = torch.cat([x, x.flip(-1)])
                    with torch.no_grad():
                        z = self.encode_fn(x).detach().float().cpu()
                    for k, it in enumerate(chunk):
                        tensors = {"latents": z[k].clone()}
                        if self.with_flipped:
                            tensors["latents_flipped"] = z[len(chunk) + k].clone()
                        self._store(it, tensors)
                done += len(group[start:start + batch_size])
                progress(ProgressEvent(done / max(1, len(todo)), f"caching latents {done}/{len(todo)}"))
        return warnings

    def get(self, item: ImageItem, flipped: bool = False) -> torch.Tensor:
        """The (4, h, w) latent of `item` (mirrored if `flipped`); KeyError if it was never cached."""
        tensors = self._load(item)
        if tensors is None:
            raise KeyError(f"no cached latent for {item.path}")
        if flipped:
            if "latents_flipped" in tensors:
                return tensors["latents_flipped"]
            raise KeyError(f"no cached flipped latent for {item.path} (the cache was made without flip)")
        return tensors["latents"]


class TextEncoderCache:
    """Text-encoder outputs per caption, for SDXL runs that do not train the text encoders.

    Captions must be fixed (no shuffle, no dropout: TrainConfig.caption_options() makes them so).
    The key is a hash of the caption and `te_id` (which encoders, which clip-skip/layout).
    """

    def __init__(self, encode_fn: EncodeTexts, te_id: str, cache_dir: str | Path | None = None):
        self.encode_fn = encode_fn
        self.te_id = te_id
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._memory: dict[str, dict[str, torch.Tensor]] = {}

    def key(self, caption: str) -> str:
        return hashlib.sha256(f"{CACHE_VERSION}|{self.te_id}|{caption}".encode()).hexdigest()[:32]

    def _load(self, caption: str) -> dict[str, torch.Tensor] | None:
        key = self.key(caption)
        if key in self._memory:
            return self._memory[key]
        if self.cache_dir is None:
            return None
        path = self.cache_dir / f"{key}.safetensors"
        if not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            return None

    def prepare(self, captions: Iterable[str], batch_size: int = 8, progress: ProgressFn = no_progress,
                cancel: CancelToken | None = None) -> None:
        todo = sorted({c for c in captions if self._load(c) is None})
        for start in range(0, len(todo), max(1, batch_size)):
            if cancel is not None:
                cancel.raise_if_cancelled()
            chunk = todo[start:start + batch_size]
            with torch.no_grad():
                out = self.encode_fn(chunk)
            for k, caption in enumerate(chunk):
                tensors = {name: t[k].detach().float().cpu().clone() for name, t in out.items()}
                if self.cache_dir is None:
                    self._memory[self.key(caption)] = tensors
                else:
                    from safetensors.torch import save_file

                    self.cache_dir.mkdir(parents=True, exist_ok=True)
                    with atomic_path(self.cache_dir / f"{self.key(caption)}.safetensors") as tmp:
                        save_file(tensors, str(tmp), metadata={"caption": caption})
            progress(ProgressEvent(min(1.0, (start + len(chunk)) / len(todo)), f"caching text encoder outputs {start + len(chunk)}/{len(todo)}"))

    def get(self, caption: str) -> dict[str, torch.Tensor]:
        tensors = self._load(caption)
        if tensors is None:
            raise KeyError(f"no cached text-encoder output for caption {caption[:40]!r}")
        return tensors


# ---- 4. epochs and batches ----------------------------------------------------------------------


@dataclass
class Batch:
    """One step's samples, all from one bucket. Exactly one of `latents` / `images` is set."""

    epoch: int  # 1-based
    index: int  # 0-based batch index within the epoch
    bucket: Size  # (width, height)
    paths: list[Path]
    captions: list[str]  # after shuffle / dropout
    flipped: list[bool]
    is_regularization: list[bool]
    loss_weights: torch.Tensor  # (B,): prior_loss_weight for regularization images, else 1
    original_sizes_hw: list[tuple[int, int]]  # SDXL size conditioning: the image as it was
    crop_top_lefts: list[tuple[int, int]]  # SDXL: kohya's (top, left)
    target_sizes_hw: list[tuple[int, int]]  # SDXL: the bucket, (height, width)
    latents: torch.Tensor | None = None  # (B, 4, h, w) when latents are cached
    images: torch.Tensor | None = None  # (B, 3, H, W) in [-1, 1] otherwise: the loop encodes them
    text: dict[str, torch.Tensor] | None = None  # stacked cached text-encoder outputs, when cached

    def __len__(self) -> int:
        return len(self.paths)


def epoch_batches(items: Sequence[ImageItem], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Item indices of each batch of `epoch`, kohya's way: per bucket, every item `repeats` times,
    shuffled, cut into batches (the last may be partial); then all batches shuffled. A function of
    (items, batch size, seed, epoch) only."""
    rng = random.Random(mix_seed("epoch", seed, epoch))
    by_bucket: dict[Size, list[int]] = {}
    for i, it in enumerate(items):
        by_bucket.setdefault(it.bucket, []).extend([i] * it.repeats)
    batches: list[list[int]] = []
    for bucket in sorted(by_bucket):
        members = by_bucket[bucket]
        rng.shuffle(members)
        batches.extend(members[k:k + batch_size] for k in range(0, len(members), batch_size))
    rng.shuffle(batches)
    return batches


class TrainData:
    """Batches of a run. `batches(epoch, start)` resumes mid-epoch at batch index `start`."""

    def __init__(
        self,
        items: Sequence[ImageItem],
        batch_size: int,
        seed: int = 42,
        flip_aug: bool = False,
        caption_options: CaptionOptions | None = None,
        prior_loss_weight: float = 1.0,
        latent_cache: LatentCache | None = None,
        text_cache: TextEncoderCache | None = None,
        on_warning: WarnFn | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: must be 1 or more")
        self.items = list(items)
        self.batch_size = batch_size
        self.seed = seed
        self.flip_aug = flip_aug
        self.caption_options = caption_options or CaptionOptions()
        self.prior_loss_weight = prior_loss_weight
        self.latent_cache = latent_cache
        self.text_cache = text_cache
        self.on_warning = on_warning
        self.warnings: list[str] = []
        self._skipped: set[Path] = set()

    @classmethod
    def from_config(cls, dataset: Dataset, config: TrainConfig, latent_cache: LatentCache | None = None,
                    text_cache: TextEncoderCache | None = None, on_warning: WarnFn | None = None) -> TrainData:
        return cls(dataset.items, config.train_batch_size, config.seed, config.flip_aug, config.caption_options(),
                   config.prior_loss_weight, latent_cache, text_cache, on_warning)

    def batches_per_epoch(self) -> int:
        return len(epoch_batches(self.items, self.batch_size, self.seed, 1))

    def _warn(self, text: str) -> None:
        self.warnings.append(text)
        if self.on_warning is not None:
            self.on_warning(text)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The batches of `epoch` (1-based) from batch index `start` on."""
        plan = epoch_batches(self.items, self.batch_size, self.seed, epoch)
        for index in range(start, len(plan)):
            batch = self.make_batch(epoch, index, plan[index])
            if batch is not None:
                yield batch

    def sample_rng(self, epoch: int, index: int, position: int) -> random.Random:
        """The RNG of one sample's flip and caption: a function of (seed, epoch, batch, position)."""
        return random.Random(mix_seed("sample", self.seed, epoch, index, position))

    def make_batch(self, epoch: int, index: int, indices: Sequence[int]) -> Batch | None:
        """Build one batch; images that fail to load are skipped with a warning (None if none is left)."""
        rows = []
        for position, i in enumerate(indices):
            item = self.items[i]
            if item.path in self._skipped:
                continue
            rng = self.sample_rng(epoch, index, position)
            flipped = self.flip_aug and rng.random() < 0.5
            caption = process_caption(item.caption, self.caption_options, rng)
            try:
                if self.latent_cache is not None:
                    pixels = self.latent_cache.get(item, flipped)
                else:
                    pixels = load_training_image(item, flipped)
            except KeyError:
                self._skip(item, "it was not cached (it could not be read)")
                continue
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                self._skip(item, str(e) or type(e).__name__)
                continue
            rows.append((item, flipped, caption, pixels))
        if not rows:
            return None
        items = [r[0] for r in rows]
        stacked = torch.stack([r[3] for r in rows])
        bucket = items[0].bucket
        text = None
        if self.text_cache is not None:
            outs = [self.text_cache.get(r[2]) for r in rows]
            text = {name: torch.stack([o[name] for o in outs]) for name in outs[0]}
        return Batch(
            epoch=epoch,
            index=index,
            bucket=bucket,
            paths=[it.path for it in items],
            captions=[r[2] for r in rows],
            flipped=[r[1] for r in rows],
            is_regularization=[it.is_regularization for it in items],
            loss_weights=torch.tensor([self.prior_loss_weight if it.is_regularization else 1.0 for it in items]),
            original_sizes_hw=[(it.placement.original[1], it.placement.original[0]) for it in items],
            crop_top_lefts=[it.placement.sdxl_crop_top_left(r[1]) for it, r in zip(items, rows)],
            target_sizes_hw=[(bucket[1], bucket[0]) for _ in items],
            latents=stacked if self.latent_cache is not None else None,
            images=None if self.latent_cache is not None else stacked,
            text=text,
        )

    def _skip(self, item: ImageItem, reason: str) -> None:
        self._skipped.add(item.path)
        self._warn(f"Skipped {item.path}: {reason}.")


def latent_cache_for(config: TrainConfig, project_dir: str | Path, encode_fn: EncodeImages, vae_id: str) -> LatentCache | None:
    """The latent cache the config asks for: None, in memory, or on disk under <project>/.cache/latents."""
    if not config.caches_latents:
        return None
    cache_dir = Path(project_dir) / ".cache" / "latents" if config.cache_latents_to_disk else None
    return LatentCache(encode_fn, vae_id, cache_dir, with_flipped=config.flip_aug)


def text_cache_for(config: TrainConfig, project_dir: str | Path, encode_fn: EncodeTexts, te_id: str) -> TextEncoderCache | None:
    """The text-encoder cache the config asks for (SDXL, text encoders not trained), else None."""
    if not config.cache_text_encoder_outputs or config.train_text_encoder:
        return None
    cache_dir = Path(project_dir) / ".cache" / "text" if config.cache_latents_to_disk else None
    return TextEncoderCache(encode_fn, te_id, cache_dir)


# ---- 5. the dry run -----------------------------------------------------------------------------


def plan_summary(config: TrainConfig, dataset: Dataset) -> str:
    """What a run would do, in sentences: the step preview, the buckets, the network and the LR
    (for `train --dry-run` and the Train tab)."""
    plan = dataset.plan(config)
    lines = [plan.preview()]
    buckets = dataset.summary.bucket_counts
    if buckets:
        shown = ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(buckets.items(), key=lambda kv: -kv[1])[:8])
        more = f" and {len(buckets) - 8} more" if len(buckets) > 8 else ""
        lines.append(f"Buckets (images x repeats): {shown}{more}.")
    net = f"{config.network_type} dim {config.network_dim}, alpha {config.network_alpha:g}"
    if config.locon:
        net += f", conv dim {config.conv_dim}, conv alpha {config.conv_alpha:g}"
    te = (f"text encoder {config.text_encoder_lr:g}" if config.train_text_encoder else "text encoder not trained")
    lines.append(f"Network: {net}. Learning rate: UNet {config.unet_lr:g}, {te}, {config.lr_scheduler}"
                 + (f" ({config.lr_scheduler_num_cycles} cycles)" if config.lr_scheduler in ("cosine_with_restarts", "rex") else "")
                 + f", optimizer {config.optimizer}.")
    extras = []
    if config.min_snr_gamma:
        extras.append(f"min-SNR gamma {config.min_snr_gamma:g}")
    if config.multires_noise_iterations:
        extras.append(f"multires noise {config.multires_noise_iterations}/{config.multires_noise_discount:g}")
    if config.noise_offset:
        extras.append(f"noise offset {config.noise_offset:g}")
    if config.ip_noise_gamma:
        extras.append(f"input perturbation {config.ip_noise_gamma:g}")
    if extras:
        lines.append("Noise: " + ", ".join(extras) + ".")
    lines.extend(dataset.warnings)
    return "\n".join(lines)


def check_dataset(dataset: Dataset) -> None:
    """Raise a StudioError when there is nothing to train on."""
    if not dataset.items:
        raise StudioError("There are no readable training images in the dataset folders.", "Add images in the Dataset tab.")
