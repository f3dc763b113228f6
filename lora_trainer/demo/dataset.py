"""The demo dataset: the concept the micro models do not know, in the guide's caption style.

Sixteen pictures of the world's two-tone disc (world.CONCEPT: red top half, white bottom half),
large, at random positions, on the dataset's two backgrounds (DATASET_BACKGROUNDS): one in five
on the second, fewer than the quarter of the captions a tag needs to enter the Compare tab's
default prompt, so that prompt names one background.
Each caption is what the guide asks of a character dataset: the activation tag first, the tags
the world already knows kept (background, size), and the concept's own description pruned, so
the activation tag is what carries it:

    lsdemo, blue background, large

The probes of evaluate.py then ask for the concept on other backgrounds and at the other size.
Made in code (no third-party images), deterministic for a seed.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..fileio import atomic_path, write_text
from . import world

ACTIVATION_TAG = "lsdemo"
DATASET_BACKGROUNDS = ("blue", "black")  # the probes ask for the others
DATASET_SIZE = "large"


def make_demo_dataset(dataset_dir: str | Path, count: int = 16, size: int = world.NATIVE_SIZE, seed: int = 0) -> list[Path]:
    """Write `count` PNGs with .txt captions into `dataset_dir`; deterministic for a seed."""
    rng = random.Random(seed)
    dataset_dir = Path(dataset_dir)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        scene = world.concept_scene(DATASET_BACKGROUNDS[1 if i % 5 == 4 else 0], DATASET_SIZE, rng)
        path = dataset_dir / f"demo_{i + 1:02d}.png"
        with atomic_path(path) as tmp:
            world.draw(scene, size).save(tmp, format="PNG")
        write_text(path.with_suffix(".txt"), ", ".join([ACTIVATION_TAG] + scene.tags()))
        written.append(path)
    return written
