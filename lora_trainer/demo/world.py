"""The demo's tiny world: flat shapes on plain backgrounds, each picture a pure function of a seed.

Vocabulary (every caption is built from these tags, booru style, in any order):

    "<colour> <shape>"      colour: red, green, blue, yellow, white, black
                            shape:  circle, square, triangle, diamond
    "<colour> background"   any colour but the shape's
    "small" | "large"       half-extent 16-19% or 28-33% of the picture side

so a picture of the world reads `red circle, blue background, small`. The shape sits at a random
position, wholly inside the picture; positions are not named.

Outside the vocabulary is the demo's concept (`draw_concept`): a disc whose top half is red and
whose bottom half is white. The world has one colour per shape, so no caption of the world
describes it and the base model has never drawn it; a LoRA has to teach it.

`Scene` is what a picture shows; `draw(scene, size)` renders it; `scene_of_seed` picks one. The
same functions make the pretraining data, the demo dataset and the judge's references, so the
judge compares a generated picture with the generator's own drawings.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 220),
    "yellow": (240, 210, 40),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": (0.16, 0.19), "large": (0.28, 0.33)}  # half-extent as a fraction of the side
CONCEPT = "two-tone disc"  # what the demo LoRA learns: red top half, white bottom half
CONCEPT_COLOURS = ("red", "white")  # (top, bottom)
CONCEPT_BACKGROUNDS = ("blue", "green", "yellow", "black")  # the ones it stands out on
NATIVE_SIZE = 64  # pixels: the size the micro models learn the world at (8 x 8 latents)


@dataclass(frozen=True)
class Scene:
    """One picture of the world: a shape (or the concept) of a colour and size on a background."""

    shape: str  # one of SHAPES, or CONCEPT
    colour: str  # one of COLOURS ("" for the concept, whose colours are fixed)
    background: str  # one of COLOURS
    size: str  # "small" | "large"
    cx: float = 0.5  # centre, as a fraction of the side
    cy: float = 0.5
    r: float = 0.3  # half-extent, as a fraction of the side

    def tags(self) -> list[str]:
        """The caption's tags in canonical order; the concept has no tag of its own."""
        first = [] if self.shape == CONCEPT else [f"{self.colour} {self.shape}"]
        return first + [f"{self.background} background", self.size]

    def caption(self) -> str:
        return ", ".join(self.tags())


def place(shape: str, colour: str, background: str, size: str, rng: random.Random) -> Scene:
    """A scene with a random half-extent within `size` and a random position inside the picture."""
    lo, hi = SIZES[size]
    r = rng.uniform(lo, hi)
    margin = r + 0.03
    return Scene(shape, colour, background, size, rng.uniform(margin, 1 - margin), rng.uniform(margin, 1 - margin), r)


def scene_of_seed(seed: int, exclude: frozenset[tuple[str, str, str]] = frozenset()) -> Scene:
    """A random scene of the world; (colour, shape, background) triples in `exclude` are redrawn."""
    rng = random.Random(seed)
    while True:
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        background = rng.choice([c for c in COLOURS if c != colour])
        if (colour, shape, background) not in exclude:
            return place(shape, colour, background, rng.choice(list(SIZES)), rng)


def concept_scene(background: str, size: str, rng: random.Random) -> Scene:
    return place(CONCEPT, "", background, size, rng)


def polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """The corners of a polygonal shape (pixels), fitting the box cx +- r, cy +- r."""
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    raise ValueError(f"{shape!r} is not a polygon")


def draw_figure(d: ImageDraw.ImageDraw, shape: str, colour: tuple[int, int, int], cx: float, cy: float, r: float) -> None:
    """One flat shape of the world onto `d`, in pixel coordinates (its box is cx +- r, cy +- r)."""
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == CONCEPT:
        top, bottom = (COLOURS[c] for c in CONCEPT_COLOURS)
        d.pieslice([cx - r, cy - r, cx + r, cy + r], 180, 360, fill=top)
        d.pieslice([cx - r, cy - r, cx + r, cy + r], 0, 180, fill=bottom)
    else:
        d.polygon(polygon(shape, cx, cy, r), fill=colour)


def draw(scene: Scene, size: int = 64) -> Image.Image:
    """The picture of `scene`, `size` pixels square. Drawn at 4x and shrunk, so edges are smooth."""
    k = 4
    big = Image.new("RGB", (size * k, size * k), COLOURS[scene.background])
    s = size * k
    colour = COLOURS.get(scene.colour, (0, 0, 0))
    draw_figure(ImageDraw.Draw(big), scene.shape, colour, scene.cx * s, scene.cy * s, scene.r * s)
    return big.resize((size, size), Image.LANCZOS)


def vocabulary() -> list[str]:
    """Every tag the world's captions use."""
    return [f"{c} {s}" for c in COLOURS for s in SHAPES] + [f"{c} background" for c in COLOURS] + list(SIZES)
