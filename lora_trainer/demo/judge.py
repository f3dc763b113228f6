"""The judge: what a picture of the demo world shows, read by comparison with the world's own drawings.

For a picture (generated or drawn) it finds

    background   the palette colour nearest the median of the border pixels
    figure       the pixels far from the background colour (the foreground mask)
    colour       the palette colour nearest the figure's median pixel
    shape        the shape whose drawing (world.draw_figure with the figure's area and centre of
                 mass) overlaps the mask best (IoU): judged against the generator's own picture
    size         "small" / "large" from that drawing's half-extent
    concept      red above white, each at least a fifth of the figure (the two-tone disc)

It uses no model, so it can not have learned the generator's or the models' quirks; its accuracy
on fresh generator pictures is measured in the tests (and in bench/bench_demo.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from .world import COLOURS, CONCEPT_COLOURS, SHAPES, SIZES, draw_figure

_PALETTE_NAMES = list(COLOURS)
_PALETTE = np.array([COLOURS[c] for c in _PALETTE_NAMES], dtype=np.float32)
FIGURE_DISTANCE = 70.0  # RGB distance from the background that counts as figure (palette gaps are > 150)
MIN_FIGURE = 0.01  # below this share of the picture there is no figure
CONCEPT_SHARE = 0.2  # each concept colour must cover this much of the figure
_SMALL_LARGE = (SIZES["small"][1] + SIZES["large"][0]) / 2  # half-extent threshold between the sizes
_AREA = {"circle": np.pi, "square": 4.0, "triangle": 2.0, "diamond": 2.0}  # area / half-extent squared


@dataclass(frozen=True)
class Verdict:
    background: str
    colour: str  # "" when there is no figure
    shape: str  # one of SHAPES, or "" when there is no figure
    size: str  # "small" | "large" | ""
    concept: bool  # the two-tone disc is there
    shape_iou: float = 0.0  # how well the best shape's drawing fits (1 = exactly)

    def matches(self, colour: str | None = None, shape: str | None = None, background: str | None = None,
                size: str | None = None) -> bool:
        """True when every attribute given is what the picture shows."""
        want = {"colour": colour, "shape": shape, "background": background, "size": size}
        return all(v is None or getattr(self, k) == v for k, v in want.items())


def nearest_colour(rgb: np.ndarray) -> str:
    return _PALETTE_NAMES[int(np.argmin(((_PALETTE - rgb) ** 2).sum(axis=1)))]


def _shape_mask(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    k = 4  # drawn at 4x like the world, then compared at the picture's size
    img = Image.new("RGB", (size * k, size * k), (0, 0, 0))
    draw_figure(ImageDraw.Draw(img), shape, (255, 255, 255), cx * k, cy * k, r * k)
    small = img.convert("L").resize((size, size), Image.BILINEAR)
    return np.asarray(small, dtype=np.float32) > 127


def judge(image: Image.Image | np.ndarray) -> Verdict:
    """What the picture shows (see the module docstring)."""
    a = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    h, w, _ = a.shape
    side = max(h, w)
    b = max(1, side // 32)
    border = np.concatenate([a[:b].reshape(-1, 3), a[-b:].reshape(-1, 3), a[:, :b].reshape(-1, 3), a[:, -b:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    background = nearest_colour(bg_rgb)
    mask = np.sqrt(((a - bg_rgb) ** 2).sum(axis=2)) > FIGURE_DISTANCE
    if mask.mean() < MIN_FIGURE:
        return Verdict(background, "", "", "", False)
    ys, xs = np.nonzero(mask)
    figure = a[mask]
    colour = nearest_colour(np.median(figure, axis=0))

    # each shape's drawing with the figure's area and centre of mass (robust to stray pixels,
    # unlike a box, which a diamond's thin tips shrink); the best overlap names the shape
    area, mx, my = float(mask.sum()), xs.mean() + 0.5, ys.mean() + 0.5
    ious, radii = {}, {}
    for shape in SHAPES:
        r = float(np.sqrt(area / _AREA[shape]))
        cy = my - r / 3 if shape == "triangle" else my  # a triangle's centroid sits a third below its box centre
        ref = _shape_mask(shape, mx, cy, r, side)[:h, :w]
        ious[shape] = float((ref & mask).sum() / max(1, (ref | mask).sum()))
        radii[shape] = r
    shape = max(ious, key=ious.get)
    size = "small" if radii[shape] / side < _SMALL_LARGE else "large"

    # the concept: red above white
    top, bottom = (COLOURS[c] for c in CONCEPT_COLOURS)
    near_top = np.sqrt(((figure - top) ** 2).sum(axis=1)) < FIGURE_DISTANCE
    near_bottom = np.sqrt(((figure - bottom) ** 2).sum(axis=1)) < FIGURE_DISTANCE
    concept = bool(
        near_top.mean() >= CONCEPT_SHARE and near_bottom.mean() >= CONCEPT_SHARE
        and ys[near_top].mean() < ys[near_bottom].mean()
    )
    return Verdict(background, colour, shape, size, concept, ious[shape])
