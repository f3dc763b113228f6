"""The demo dataset: small synthetic pictures with captions, made in code (no third-party images).

Each picture is one simple shape on a plain background, and its caption names both, after the
activation tag, in the booru style the guide uses ("lsdemo, red circle, blue background").
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from ..fileio import atomic_path, write_text

ACTIVATION_TAG = "lsdemo"
COLOURS = {"red": (220, 50, 47), "blue": (38, 139, 210), "green": (133, 153, 0), "yellow": (231, 181, 0), "white": (245, 245, 245), "black": (20, 20, 20)}
SHAPES = ("circle", "square", "triangle")


def draw_shape(size: int, shape: str, fg: tuple, bg: tuple, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = int(size * rng.uniform(0.22, 0.34))
    cx, cy = (int(size * rng.uniform(0.38, 0.62)) for _ in range(2))
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fg)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    return img


def make_demo_dataset(dataset_dir: str | Path, count: int = 12, size: int = 128, seed: int = 0) -> list[Path]:
    """Write `count` PNGs with .txt captions into `dataset_dir`; deterministic for a seed."""
    rng = random.Random(seed)
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    written = []
    for i in range(count):
        shape = SHAPES[i % len(SHAPES)]
        fg_name = names[i % len(names)]
        bg_name = names[(i * 7 + 3) % len(names)]
        if bg_name == fg_name:
            bg_name = names[(names.index(fg_name) + 1) % len(names)]
        img = draw_shape(size, shape, COLOURS[fg_name], COLOURS[bg_name], rng)
        path = dataset_dir / f"demo_{i + 1:02d}.png"
        with atomic_path(path) as tmp:
            img.save(tmp, format="PNG")
        write_text(path.with_suffix(".txt"), f"{ACTIVATION_TAG}, {fg_name} {shape}, {bg_name} background, simple background")
        written.append(path)
    return written
