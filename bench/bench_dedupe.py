"""Duplicate finding time for a generated dataset: hashing, embedding, grouping, and a cached rerun.

    .venv/bin/python bench/bench_dedupe.py [--images 1000] [--width 128] [--layers 4] [--side 224]

The model is a small random open_clip ViT (no download; saved and loaded through the same
`local-dir:` folder path as a real one): image size --side, patch 32, width --width, --layers
layers. ViT-B-32 is width 768 with 12 layers, about 4.4 GFLOPs per image; the default here is a
few percent of that, so the embedding rate is far above a real ViT-B-32's on the same CPU.
Images are small generated PNGs (160x120), one in ten an exact copy and one in ten a resized copy.
With a random model every pair scores high, so a few unrelated images also group at 0.999: the
group count checks nothing here, only the time does.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_trainer.dataset import dedupe as dd
from tests.tiny_models import write_tiny_open_clip


def make_dataset(folder: Path, n: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        if i % 10 == 1:
            shutil.copy(folder / f"{i - 1:05d}.png", folder / f"{i:05d}.png")
            continue
        if i % 10 == 2:
            Image.open(folder / f"{i - 2:05d}.png").resize(
                (80, 60), Image.BICUBIC
            ).save(folder / f"{i:05d}.png")
            continue
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((160, 120), Image.BICUBIC).save(
            folder / f"{i:05d}.png"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--side", type=int, default=224)
    ap.add_argument("--threshold", type=float, default=0.999)
    ap.add_argument(
        "--threads", type=int, default=0, help="torch threads (0: torch's default)"
    )
    args = ap.parse_args()

    import torch

    if args.threads:
        # on a shared, oversubscribed CPU torch's thread pool makes tiny ops (ToTensor, Normalize) 50x slower
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = {
            "embed_dim": 64,
            "vision_cfg": {
                "image_size": args.side,
                "layers": args.layers,
                "width": args.width,
                "head_width": 64,
                "patch_size": 32,
            },
            "text_cfg": {
                "context_length": 16,
                "vocab_size": 1000,
                "width": 32,
                "heads": 2,
                "layers": 1,
            },
        }
        model_dir = write_tiny_open_clip(tmp / "clip", cfg)
        embedder = dd.load_clip_embedder(str(model_dir))
        n_params = sum(p.numel() for p in embedder.model.visual.parameters())
        print(f"model: random open_clip ViT, {args.side}px, patch 32, width {args.width}, {args.layers} layers, "
              f"{n_params / 1e6:.1f}M vision params; torch threads {torch.get_num_threads()}")  # fmt: skip
        ds = tmp / "proj" / "dataset"
        t = time.perf_counter()
        make_dataset(ds, args.images)
        print(f"generated {args.images} images in {time.perf_counter() - t:.1f} s")

        cache = tmp / "proj" / ".cache"
        marks = {}

        def progress(e):
            if e.text.startswith("embedded") and "start" not in marks:
                marks["start"] = time.perf_counter()

        t0 = time.perf_counter()
        images = dd.find_images(ds)
        dd.file_md5s(ds, images, None)
        t_hash = time.perf_counter() - t0

        t0 = time.perf_counter()
        plan = dd.find_duplicates(
            ds, cache, args.threshold, embedder, progress=progress
        )
        total = time.perf_counter() - t0
        n_emb = len({m for m in dd.file_md5s(ds, images, cache)})

        emb = (
            np.random.default_rng(0)
            .standard_normal((args.images, 512))
            .astype(np.float32)
        )
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        t0 = time.perf_counter()
        pairs = dd.similar_pairs(emb, 0.985)
        dd.connected_groups(args.images, [(a, b) for a, b, _ in pairs])
        t_group = time.perf_counter() - t0

        t0 = time.perf_counter()
        plan2 = dd.find_duplicates(ds, cache, args.threshold, embedder)
        cached = time.perf_counter() - t0
        assert len(plan2.groups) == len(plan.groups)

        exact = sum(g.exact for g in plan.groups)
        print(
            f"groups: {len(plan.groups)} ({exact} with identical files), {len(plan.removals())} images to remove"
        )
        print(f"md5 of {args.images} files (no memo): {t_hash:.2f} s")
        print(
            f"first run: {total:.2f} s total, {n_emb} distinct images embedded -> {n_emb / total:.0f} img/s overall"
        )
        print(
            f"grouping alone (similarity blocks + union-find, {args.images} x 512-d): {t_group * 1000:.0f} ms"
        )
        print(f"second run (md5 memo + embedding cache): {cached:.2f} s")


if __name__ == "__main__":
    main()
