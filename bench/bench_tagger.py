"""WD tagger throughput: images per second, one at a time against batched with prefetch, same run.

    .venv/bin/python bench/bench_tagger.py [--images 48] [--size 448] [--tags 10000] [--model-dir DIR]

Without --model-dir the model is a random conv net with a WD tagger's contract (NHWC 448 px in,
10 000 sigmoid scores out; tests/tiny_models.write_conv_tagger): a few GFLOPs per image, well
under a real ViT/ConvNeXt/EVA02 tagger (tens of GFLOPs), so it measures our pipeline (decode,
pad, resize, batching, tag selection) more than a real model's inference. Pass --model-dir with
a real tagger folder for real numbers. Images are generated 1024x768 JPEGs (a typical booru size).

Prints, for each setting: images/s for the whole predict_images loop, and the preprocessing rate
alone (decode + pad + bicubic resize, one thread), so the share of each is visible.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lora_trainer.dataset.tagger import (
    TagSettings,
    WDTagger,
    load_for_tagger,
    predict_images,
)
from tests.tiny_models import write_conv_tagger


def make_images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((1024, 768), Image.BICUBIC)
        p = folder / f"{i:04d}.jpg"
        im.save(p, quality=90)
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--tags", type=int, default=10000)
    ap.add_argument(
        "--model-dir", help="a real tagger folder (model.onnx + selected_tags.csv)"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = (
            Path(args.model_dir)
            if args.model_dir
            else write_conv_tagger(tmp / "model", args.size, args.tags)
        )
        tagger = WDTagger(model_dir)
        print(tagger.describe())
        print(
            "model:",
            "given"
            if args.model_dir
            else f"random conv net, {args.size}px, {args.tags} tags (not a real tagger's cost)",
        )
        images = make_images(tmp, args.images)

        t = time.perf_counter()
        for p in images[:16]:
            load_for_tagger(p, tagger.size)
        pre = 16 / (time.perf_counter() - t)
        x = np.stack([load_for_tagger(p, tagger.size) for p in images[:8]])
        tagger.predict(x[:1])  # warm-up
        t = time.perf_counter()
        for i in range(8):
            tagger.predict(x[i : i + 1])
        infer1 = 8 / (time.perf_counter() - t)
        t = time.perf_counter()
        tagger.predict(x)
        infer8 = 8 / (time.perf_counter() - t)
        print(
            f"preprocess only (1 thread): {pre:6.1f} img/s;  inference only: batch 1 {infer1:6.1f} img/s, batch 8 {infer8:6.1f} img/s"
        )

        for batch, workers in ((1, 1), (8, 2)):
            settings = TagSettings(batch_size=batch, workers=workers)
            t = time.perf_counter()
            tags, failed = predict_images(tagger, images, settings)
            dt = time.perf_counter() - t
            assert len(tags) == len(images) and not failed
            print(
                f"batch {batch}, {workers} decode thread(s): {len(images) / dt:6.1f} img/s  ({dt:.2f} s for {len(images)} images)"
            )


if __name__ == "__main__":
    main()
