"""Duplicate images: exact copies by md5, near copies by CLIP image embeddings.

1. md5 of every file (memoised per path, size and mtime in `.cache/dedupe/`).
2. One embedding per distinct file content, cached by md5, from an open_clip image tower
   (default ViT-B-32 / laion2b_s34b_b79k), unit length so cosine similarity is a dot product.
3. Pairs with similarity >= threshold (default 0.985, the Colab Dataset Maker's) and identical
   files are joined into groups (connected components, union-find), so a chain of near copies is
   one group: unlike the Dataset Maker's one-hop walk, the result does not depend on file order.
4. In each group the largest resolution is kept (ties: the larger file, then the first name).
   The plan is data the UI can toggle; `apply_plan` moves the others and their caption files to
   the trash in one batch, so one restore brings everything back.

See reference/dataset-tools.md §4.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import pickle
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import StudioError
from ..fileio import atomic_path, write_text
from ..progress import CancelToken, ProgressEvent, ProgressFn, no_progress
from ..trash import TrashBatch, move_to_trash
from .images import iter_loaded
from .tag_editor import find_images

DEFAULT_CLIP_MODEL = "ViT-B-32"  # the cheapest CLIP; 512-d
DEFAULT_CLIP_PRETRAINED = "laion2b_s34b_b79k"
DEFAULT_THRESHOLD = (
    0.985  # the Dataset Maker's similarity_threshold; its text recommends 0.97-0.99
)
CACHE_SUBDIR = "dedupe"
EMBED_MAX_SIDE = (
    448  # images are shrunk to this while decoding: CLIP sees 224 px anyway
)

# ----------------------------------------------------------------------------------------------
# open_clip models (shared with the CoCa captioner)


@dataclass(frozen=True)
class LoadedOpenClip:
    model: object  # an open_clip CLIP / CoCa module in eval mode
    preprocess: Callable  # PIL image -> (3, S, S) tensor
    device: str
    key: str  # names the weights, for caches: "ViT-B-32/laion2b_s34b_b79k"


def _weights_help(model: str, pretrained: str, where: str, repo: str) -> str:
    source = (
        f"https://huggingface.co/{repo}" if repo else "the URL open_clip lists for it"
    )
    return (
        f"Run this once while online (the weights are then kept in {where}), or download the weights file "
        f"from {source} and pass its path as the pretrained value, or pass a folder holding "
        f"open_clip_config.json and the weights as the model."
    )


def _find_weights(
    model: str, pretrained: str | None, cache_dir: Path | None, progress: ProgressFn
) -> str:
    """A local file with the weights of `model` / `pretrained`; downloaded first when online."""
    import open_clip

    if not pretrained:
        raise StudioError(
            f"No weights were given for the open_clip model {model}.",
            f"Use e.g. pretrained {DEFAULT_CLIP_PRETRAINED!r}.",
        )
    if os.path.isfile(pretrained):
        return pretrained
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise StudioError(
            f"{pretrained!r} is neither a file nor a pretrained tag of the open_clip model {model}.",
            f"Tags for {model}: {', '.join(tags) or 'none'}.",
        )
    hub = cfg.get("hf_hub", "")
    repo, filename = os.path.split(hub) if hub else ("", "")
    if repo:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            try_to_load_from_cache = None
        names = (
            [filename]
            if filename
            else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        )
        for name in names if try_to_load_from_cache else []:
            for cache in ([str(cache_dir)] if cache_dir else []) + [
                None
            ]:  # ours, then the user's HF cache
                found = try_to_load_from_cache(repo, name, cache_dir=cache)
                if isinstance(found, str):
                    return found
    where = str(cache_dir) if cache_dir else "the Hugging Face cache"
    progress(
        ProgressEvent(
            log=f"downloading the open_clip weights {model} / {pretrained} into {where}"
        )
    )
    try:
        path = open_clip.download_pretrained(
            cfg, cache_dir=str(cache_dir) if cache_dir else None
        )
    except (
        OSError,
        RuntimeError,
    ) as e:  # open_clip turns hub errors into FileNotFoundError
        raise StudioError(
            f"The open_clip weights {model} / {pretrained} are not on this computer and could not be downloaded "
            f"({type(e).__name__}).",
            _weights_help(model, pretrained, where, repo),
        ) from None
    if not path:
        raise StudioError(
            f"open_clip has no download for {model} / {pretrained}.",
            _weights_help(model, pretrained, where, repo),
        )
    return path


# A preprocess_cfg field (a pretrained tag's or a folder's) -> its create_model_and_transforms keyword.
# open_clip applies them itself for a tag name or a `local-dir:` folder, not for a weights file.
_PREPROCESS_KWARGS = (
    ("mean", "image_mean"),
    ("std", "image_std"),
    ("interpolation", "image_interpolation"),  # not in open_clip 2.20
    ("resize_mode", "image_resize_mode"),  # open_clip >= 2.24
)


def _transform_kwargs(preprocess: dict, resize_mode: str | None) -> dict:
    """Keywords for create_model_and_transforms from `preprocess` and the caller's resize_mode
    (which wins), leaving out those this open_clip does not take (2.20 has only mean and std)."""
    import open_clip

    accepted = inspect.signature(open_clip.create_model_and_transforms).parameters
    kwargs = {theirs: preprocess[ours] for ours, theirs in _PREPROCESS_KWARGS if ours in preprocess}
    if resize_mode:
        kwargs["image_resize_mode"] = resize_mode
    return {k: v for k, v in kwargs.items() if k in accepted}


def _read_folder_config(folder: Path) -> dict:
    """The folder's open_clip_config.json: {"model_cfg": {...}, "preprocess_cfg": {...}}."""
    path = folder / "open_clip_config.json"
    if not path.is_file():
        raise StudioError(
            f"The folder {folder} has no open_clip_config.json.",
            "Download the whole model repository folder.",
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise StudioError(f"{path} is not valid JSON ({e}).", "Download the file again.") from None
    model_cfg = config.get("model_cfg", config) if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict) or not all(k in model_cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise StudioError(
            f"{path} holds no open_clip model config (embed_dim, vision_cfg and text_cfg under model_cfg).",
            "Download the whole model repository folder.",
        )
    return config


def folder_model_name(folder: Path) -> str:
    """A name open_clip's `create_model` builds the model of an open_clip folder from.

    Newer open_clip (3.x) reads `local-dir:<folder>` itself (config, preprocessing, weights). Older ones
    (2.20, AUTOMATIC1111 1.10's pin) know only registered names: the folder's model_cfg is
    registered with the public `open_clip.add_model_config`, from a file named after its content
    (so two folders never clash) that it reads at once and that is then deleted. open_clip 2.20
    builds a CoCa only when the name contains "coca", hence that prefix for a CoCa config.
    """
    import open_clip

    config = _read_folder_config(folder)
    name = f"local-dir:{folder}"
    if open_clip.get_model_config(name) is not None:  # 3.x reads the folder; 2.20 answers None
        return name
    model_cfg = config.get("model_cfg", config)
    digest = hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:16]
    name = f"{'coca_' if 'multimodal_cfg' in model_cfg else ''}lora-studio-{digest}"
    if open_clip.get_model_config(name) is None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(model_cfg), encoding="utf-8")
            open_clip.add_model_config(path)
    return name


def _open_clip_reads_safetensors() -> bool:
    """Whether open_clip loads a .safetensors weights file itself. 2.20 (A1111 1.10's pin) reads
    every file with torch.load; found by letting it read a one-tensor file."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "probe.safetensors")
        save_file({"probe": torch.zeros(1)}, path)
        try:
            open_clip.factory.load_state_dict(path)
        except pickle.UnpicklingError:  # "invalid load key": torch.load on safetensors bytes
            return False
    return True


def load_open_clip(
    model: str,
    pretrained: str | None = None,
    models_dir: str | os.PathLike | None = None,
    device: str | None = None,
    resize_mode: str | None = None,
    progress: ProgressFn = no_progress,
) -> LoadedOpenClip:
    """Load an open_clip model: a built-in name with a pretrained tag or weights file, or a folder
    in the Hugging Face open_clip layout (open_clip_config.json + weights). Never downloads when
    the weights are already in `<models_dir>/open_clip` or the Hugging Face cache.

    resize_mode: open_clip's `image_resize_mode` ("shortest" crops the centre, "squash" and
    "longest" keep the whole picture); ignored by open_clip versions without it (< 2.24).
    """
    import open_clip
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = Path(model.removeprefix("local-dir:"))
    if model.startswith("local-dir:") or folder.is_dir():
        config = _read_folder_config(folder)
        weights = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
        if not weights:
            raise StudioError(
                f"The open_clip folder {folder} has no weights file.",
                "Put open_clip_model.safetensors there.",
            )
        name = folder_model_name(folder)
        if name.startswith("local-dir:"):  # open_clip reads the folder's weights and preprocessing
            checkpoint, kwargs = None, _transform_kwargs({}, resize_mode)
        else:
            checkpoint, kwargs = str(weights[0]), _transform_kwargs(config.get("preprocess_cfg", {}), resize_mode)
        key = f"{folder.name}-{weights[0].stat().st_size}"
    else:
        if open_clip.get_model_config(model) is None:
            raise StudioError(
                f"open_clip has no model named {model!r}.",
                f"Use e.g. {DEFAULT_CLIP_MODEL} or coca_ViT-L-14.",
            )
        cache_dir = Path(models_dir) / "open_clip" if models_dir else None
        checkpoint = _find_weights(model, pretrained, cache_dir, progress)
        cfg = open_clip.get_pretrained_cfg(model, pretrained) or {}
        kwargs = _transform_kwargs(cfg, resize_mode)  # a file path skips open_clip's tag lookup
        name, key = model, f"{model}/{pretrained if cfg else Path(checkpoint).name}"
    # open_clip 2.20 can not read a .safetensors file (the hub's format): we load its tensors.
    ours = None
    if checkpoint and checkpoint.endswith(".safetensors") and not _open_clip_reads_safetensors():
        ours = checkpoint
    try:
        m, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=None if ours else checkpoint, device=device, **kwargs
        )
        if ours:  # what newer open_clip does with the file: its tensors, every key and shape checked
            from safetensors.torch import load_file

            m.load_state_dict(load_file(ours), strict=True)
    except (
        RuntimeError,
        ValueError,
        OSError,
        KeyError,
        AssertionError,
    ) as e:  # open_clip asserts shapes
        raise StudioError(
            f"open_clip could not load {model}: {e}",
            "Check that the weights belong to this model.",
        ) from None
    progress(ProgressEvent(log=f"open_clip {key} loaded on {device}"))
    return LoadedOpenClip(m.eval(), preprocess, device, key)


# ----------------------------------------------------------------------------------------------
# Embeddings

# An embedder maps PIL images to (N, D) float32 vectors and has a `key` naming its weights (the
# cache is per key). Tests inject their own.
Embedder = Callable[[list], np.ndarray]


class ClipEmbedder:
    """Image embeddings from an open_clip model, unit length."""

    def __init__(self, loaded: LoadedOpenClip):
        self.model = loaded.model
        self.preprocess = loaded.preprocess
        self.device = loaded.device
        self.key = loaded.key

    def __call__(self, images: list) -> np.ndarray:
        import torch

        x = torch.stack([self.preprocess(im) for im in images]).to(
            self.device
        )  # (B, 3, S, S)
        with torch.no_grad():
            e = self.model.encode_image(x, normalize=True)  # (B, D)
        return e.float().cpu().numpy()


def load_clip_embedder(
    model: str = DEFAULT_CLIP_MODEL,
    pretrained: str | None = DEFAULT_CLIP_PRETRAINED,
    models_dir: str | os.PathLike | None = None,
    device: str | None = None,
    progress: ProgressFn = no_progress,
) -> ClipEmbedder:
    # squash: a tall image and its copy are compared whole, not by their centre crops
    return ClipEmbedder(
        load_open_clip(
            model,
            pretrained,
            models_dir,
            device,
            resize_mode="squash",
            progress=progress,
        )
    )


def _load_for_embedding(path: Path):
    from PIL import Image

    from .images import to_rgb, upright

    with Image.open(path) as im:
        im.draft(
            "RGB", (EMBED_MAX_SIDE, EMBED_MAX_SIDE)
        )  # JPEG decodes at a reduced scale: much faster
        im = to_rgb(upright(im))
    im.thumbnail((EMBED_MAX_SIDE, EMBED_MAX_SIDE), Image.BICUBIC)
    return im


# ----------------------------------------------------------------------------------------------
# Caches (atomic files under <project>/.cache/dedupe/)


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:120]


def _load_md5_memo(path: Path) -> dict[str, list]:
    try:
        data = json.loads(path.read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # a missing or damaged cache is rebuilt


def file_md5s(
    dataset_dir: Path,
    images: Sequence[Path],
    cache_dir: Path | None,
    cancel: CancelToken | None = None,
) -> list[str]:
    """md5 per image, reusing the memo for files whose size and mtime did not change."""
    from .images import file_md5

    memo_path = cache_dir / CACHE_SUBDIR / "file_md5.json" if cache_dir else None
    memo = _load_md5_memo(memo_path) if memo_path else {}
    out, fresh = [], {}
    for p in images:
        if cancel:
            cancel.raise_if_cancelled()
        st = p.stat()
        rel = p.relative_to(dataset_dir).as_posix()
        entry = memo.get(rel)
        digest = (
            entry[2]
            if isinstance(entry, list) and entry[:2] == [st.st_size, st.st_mtime_ns]
            else file_md5(p)
        )
        fresh[rel] = [st.st_size, st.st_mtime_ns, digest]
        out.append(digest)
    if memo_path and fresh != memo:
        write_text(memo_path, json.dumps(fresh))
    return out


def _load_embedding_cache(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return dict(zip(z["md5"].tolist(), z["embedding"]))
    except (OSError, ValueError, KeyError):
        return {}


def _save_embedding_cache(path: Path, cache: dict[str, np.ndarray]) -> None:
    keys = sorted(cache)
    emb = (
        np.stack([cache[k] for k in keys]).astype(np.float32)
        if keys
        else np.zeros((0, 0), np.float32)
    )
    with (
        atomic_path(path) as tmp,
        open(tmp, "wb") as f,
    ):  # a file object: np.savez would append ".npz" to a name
        np.savez(f, md5=np.array(keys, dtype="U32"), embedding=emb)


def embed_files(
    paths_by_md5: dict[str, Path],
    embedder: Embedder,
    cache_dir: Path | None,
    batch_size: int = 32,
    workers: int = 2,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> tuple[dict[str, np.ndarray], list[Path]]:
    """One unit embedding per distinct content (md5), computed only for contents not in the cache."""
    key = getattr(embedder, "key", None)
    cache_path = (
        cache_dir / CACHE_SUBDIR / f"embeddings-{_slug(key)}.npz"
        if cache_dir and key
        else None
    )
    cache = _load_embedding_cache(cache_path) if cache_path else {}
    todo = [(m, p) for m, p in paths_by_md5.items() if m not in cache]
    failed: list[Path] = []
    md5_of = {p: m for m, p in todo}
    start, done = time.monotonic(), 0
    new: dict[str, np.ndarray] = {}
    for paths, images in iter_loaded(
        [p for _, p in todo], batch_size, workers, _load_for_embedding
    ):
        if cancel:
            cancel.raise_if_cancelled()
        good = [
            (p, im) for p, im in zip(paths, images) if not isinstance(im, Exception)
        ]
        for p, im in zip(paths, images):
            if isinstance(im, Exception):
                failed.append(p)
                progress(
                    ProgressEvent(
                        log=f"skipped {p.name}: it cannot be read as an image ({im})"
                    )
                )
        if good:
            emb = np.asarray(embedder([im for _, im in good]), dtype=np.float32)
            if emb.ndim != 2 or emb.shape[0] != len(good):
                raise RuntimeError(
                    f"the embedder returned shape {emb.shape} for {len(good)} images"
                )
            emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
            new.update({md5_of[p]: e for (p, _), e in zip(good, emb)})
        done += len(paths)
        eta = (time.monotonic() - start) / done * (len(todo) - done)
        progress(
            ProgressEvent(
                0.1 + 0.85 * done / max(1, len(todo)),
                f"embedded {done}/{len(todo)} images",
                eta,
            )
        )
    cache.update(new)
    if cache_path and new:
        _save_embedding_cache(cache_path, cache)
    return {m: cache[m] for m in paths_by_md5 if m in cache}, failed


# ----------------------------------------------------------------------------------------------
# Grouping


def similar_pairs(
    emb: np.ndarray, threshold: float, block: int = 1024
) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for i < j with cosine >= threshold; rows of `emb` are unit vectors.

    Block-wise so memory stays at block x N floats (20 000 images: 80 MB, not a 3 GB matrix).
    """
    pairs = []
    for start in range(0, len(emb), block):
        sims = emb[start : start + block] @ emb.T  # (b, N)
        rows, cols = np.nonzero(sims >= threshold)
        for r, c in zip(rows.tolist(), cols.tolist()):
            i = start + r
            if c > i:
                pairs.append((i, c, float(sims[r, c])))
    return pairs


def connected_groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Components with more than one member, by union-find; each sorted, groups by first member."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]  # path halving
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    comps: dict[int, list[int]] = {}
    for i in range(n):
        comps.setdefault(find(i), []).append(i)
    return sorted((c for c in comps.values() if len(c) > 1), key=lambda c: c[0])


@dataclass
class DedupeMember:
    path: str  # relative to the dataset folder, posix
    width: int
    height: int
    size_bytes: int
    md5: str
    similarity: (
        float  # the highest similarity to another member (1.0 for an identical file)
    )
    keep: bool = False


@dataclass
class DedupeGroup:
    members: list[DedupeMember]

    @property
    def exact(self) -> bool:
        """All members are the same file content."""
        return len({m.md5 for m in self.members}) == 1


def keep_order_key(m: DedupeMember) -> tuple:
    """Best first: the most pixels, then the largest file, then the first name."""
    return (-m.width * m.height, -m.size_bytes, m.path)


@dataclass
class DedupePlan:
    dataset_dir: Path
    threshold: float | None  # None when only exact copies were looked for
    groups: list[DedupeGroup]
    failed: tuple[str, ...] = field(
        default=()
    )  # unreadable images, left out of near matching
    images: int = 0  # images examined

    def set_keep(self, group: int, path: str, keep: bool) -> None:
        """The UI's toggle."""
        for m in self.groups[group].members:
            if m.path == path:
                m.keep = keep
                return
        raise StudioError(f"{path} is not in duplicate group {group + 1}.")

    def removals(self) -> list[str]:
        return [m.path for g in self.groups for m in g.members if not m.keep]

    def summary(self) -> str:
        n = len(self.removals())
        return f"{len(self.groups)} groups of duplicates among {self.images} images; {n} would go to the trash."


def _member(dataset_dir: Path, rel: str, md5: str, similarity: float) -> DedupeMember:
    from PIL import Image

    p = dataset_dir / rel
    try:
        with Image.open(p) as im:  # the header only
            w, h = im.size
    except (OSError, ValueError, SyntaxError):
        w = h = 0
    return DedupeMember(rel, w, h, p.stat().st_size, md5, similarity)


def find_duplicates(
    dataset_dir: str | os.PathLike,
    cache_dir: str | os.PathLike | None,
    threshold: float = DEFAULT_THRESHOLD,
    embedder: Embedder | None = None,
    near: bool = True,
    batch_size: int = 32,
    workers: int = 2,
    progress: ProgressFn = no_progress,
    cancel: CancelToken | None = None,
) -> DedupePlan:
    """Group exact and (with `near`) near duplicates; the default keep flags follow `keep_order_key`.

    `embedder` defaults to `load_clip_embedder()` (ViT-B-32 / laion2b_s34b_b79k) when `near`.
    """
    if near and not 0.0 < threshold <= 1.0:
        raise StudioError(
            f"The similarity threshold {threshold} is out of range.",
            "Use a value in (0, 1]; 0.97-0.99 suits CLIP.",
        )
    dataset_dir = Path(dataset_dir)
    cache_dir = Path(cache_dir) if cache_dir else None
    images = find_images(dataset_dir)
    rels = [p.relative_to(dataset_dir).as_posix() for p in images]
    progress(ProgressEvent(0.0, f"hashing {len(images)} images"))
    md5s = file_md5s(dataset_dir, images, cache_dir, cancel)
    pairs: list[tuple[int, int, float]] = []
    first_of: dict[str, int] = {}
    for i, m in enumerate(md5s):
        if m in first_of:
            pairs.append((first_of[m], i, 1.0))
        else:
            first_of[m] = i
    failed: list[Path] = []
    if near and len(first_of) > 1:
        if embedder is None:
            embedder = load_clip_embedder(progress=progress)
        emb_by_md5, failed = embed_files(
            {m: images[i] for m, i in first_of.items()},
            embedder,
            cache_dir,
            batch_size,
            workers,
            progress,
            cancel,
        )
        uniq = [m for m in first_of if m in emb_by_md5]
        if uniq:
            emb = np.stack([emb_by_md5[m] for m in uniq])
            pairs += [
                (first_of[uniq[a]], first_of[uniq[b]], s)
                for a, b, s in similar_pairs(emb, threshold)
            ]
    best = np.zeros(len(images))
    for a, b, s in pairs:
        best[a], best[b] = max(best[a], s), max(best[b], s)
    groups = []
    for comp in connected_groups(len(images), [(a, b) for a, b, _ in pairs]):
        members = [_member(dataset_dir, rels[i], md5s[i], float(best[i])) for i in comp]
        min(members, key=keep_order_key).keep = True
        groups.append(DedupeGroup(sorted(members, key=keep_order_key)))
    failed_rel = tuple(p.relative_to(dataset_dir).as_posix() for p in failed)
    plan = DedupePlan(
        dataset_dir, threshold if near else None, groups, failed_rel, len(images)
    )
    progress(ProgressEvent(1.0, plan.summary()))
    return plan


def apply_plan(project_dir: str | os.PathLike, plan: DedupePlan) -> TrashBatch | None:
    """Move the images not kept, and their caption files, to the trash in one batch.

    A caption file shared with an image that stays (`a.png` and `a.jpg` both use `a.txt`) stays.
    A group with no image kept is refused: that is almost always a slip of the mouse.
    """
    for n, g in enumerate(plan.groups, 1):
        if not any(m.keep for m in g.members):
            raise StudioError(
                f"Duplicate group {n} has no image marked to keep.",
                "Tick at least one image per group.",
            )
    doomed = {plan.dataset_dir / rel for rel in plan.removals()}
    if not doomed:
        return None
    staying_captions = {
        p.with_suffix(".txt") for p in find_images(plan.dataset_dir) if p not in doomed
    }
    paths = []
    for p in sorted(doomed):
        paths.append(p)
        cap = p.with_suffix(".txt")
        if cap.exists() and cap not in staying_captions and cap not in paths:
            paths.append(cap)
    return move_to_trash(project_dir, paths, f"duplicates: {len(doomed)} images")
